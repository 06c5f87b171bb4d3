"""Whether two language models share one vocabulary, as token-level KD needs: the same token ids and logit width."""

from __future__ import annotations


def vocabulary_difference(teacher, student) -> str | None:
    """The first difference between two models' vocabularies, in words, or None when they have none.

    ``teacher`` and ``student`` are :class:`~kdlens.subjects.lm.LanguageModel` s (anything with ``.tokenizer`` and
    ``.vocab_size``); the tokenizers must map the same tokens to the same ids and the logits have the same width.
    """
    t_vocab, s_vocab = teacher.tokenizer.get_vocab(), student.tokenizer.get_vocab()
    if t_vocab != s_vocab:
        t_tokens = {i: tok for tok, i in t_vocab.items()}
        s_tokens = {i: tok for tok, i in s_vocab.items()}
        first = next(i for i in range(max(len(t_vocab), len(s_vocab)) + 1) if t_tokens.get(i) != s_tokens.get(i))
        return (f"teacher has {len(t_vocab)} tokens, student {len(s_vocab)}; the first differing token is id "
                f"{first} (teacher {t_tokens.get(first)!r}, student {s_tokens.get(first)!r})")
    if teacher.vocab_size != student.vocab_size:
        return f"one tokenizer but logits of width {teacher.vocab_size} (teacher) and {student.vocab_size} (student)"
    return None
