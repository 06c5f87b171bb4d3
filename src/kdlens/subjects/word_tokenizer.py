"""A word-level tokenizer for the lab's tiny language models, built with the ``tokenizers`` library.

Text is split on whitespace and every punctuation or symbol character stands alone (``"1+2=3?"`` is five words), so
a vocabulary fitted on a small synthetic corpus covers it exactly. The result is a standard Hugging Face fast
tokenizer: it saves with ``save_pretrained`` and reloads with ``AutoTokenizer.from_pretrained``, and its character
offsets point into the original text. Decoding joins words with single spaces (``"1 + 2 = 3 ?"``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from kdlens import validation as C

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)  # ids 0, 1, 2, 3
# For the model's config (LlamaConfig(**SPECIAL_TOKEN_IDS, ...)): transformers' defaults (Llama: bos 1, eos 2) would
# make generation stop at this tokenizer's <bos>.
SPECIAL_TOKEN_IDS = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}


def _pipeline(lowercase: bool):
    """The normaliser and pre-tokenizer shared by vocabulary fitting and encoding (one definition of "a word")."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.Lowercase() if lowercase else None
    # Whitespace separates words; each punctuation character (ASCII . , ; ? = + - * and Unicode P*) is its own word.
    pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                             pre_tokenizers.Punctuation(behavior="isolated")])
    return normalizer, pre_tokenizer


def _words(text: str, normalizer, pre_tokenizer) -> list[str]:
    if normalizer is not None:
        text = normalizer.normalize_str(text)
    return [word for word, _ in pre_tokenizer.pre_tokenize_str(text)]


def build_word_tokenizer(texts: Iterable[str], extra_tokens: Sequence[str] = (), min_count: int = 1,
                         lowercase: bool = False, padding_side: str = "right") -> PreTrainedTokenizerFast:
    """Fit a word-level tokenizer on ``texts``.

    Parameters
    ----------
    texts : iterable of str, the corpus; every word seen at least ``min_count`` times enters the vocabulary
    extra_tokens : words to include whatever their count (answers the corpus may lack, markers such as ``"<sep>"``);
        they take the ids right after the special tokens, in the order given. One that the pre-tokenizer would
        split (it holds punctuation, like ``"<sep>"``) is also registered as an added token, so it is matched whole.
    min_count : int >= 1; rarer words map to ``<unk>``
    lowercase : bool, fold case before splitting (offsets still point into the original text)
    padding_side : "right" or "left", the default for ``tokenizer(..., padding=True)``

    Returns
    -------
    PreTrainedTokenizerFast
        Special tokens ``<pad>`` (id 0), ``<unk>`` (1), ``<bos>`` (2), ``<eos>`` (3) set as pad/unk/bos/eos; then
        ``extra_tokens``; then the corpus words by count, most frequent first, ties in alphabetical order (so the
        same corpus always gives the same ids). Encoding adds ``<bos>`` in front: ``tokenizer(text)`` is bos + words.

    Examples
    --------
    >>> tok = build_word_tokenizer(["Mary went home.", "John went to the garden."], lowercase=True)
    >>> tok.convert_ids_to_tokens(tok("Mary went to school.")["input_ids"])
    ['<bos>', 'mary', 'went', 'to', '<unk>', '.']
    >>> tok("Mary went", return_offsets_mapping=True)["offset_mapping"]
    [(0, 0), (0, 4), (5, 9)]
    """
    from tokenizers import AddedToken, Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    if isinstance(texts, str):
        C.fail("texts", "an iterable of strings (the corpus)", "a single str", "Wrap it in a list: [text].",
               error=TypeError)
    if not isinstance(texts, Iterable):
        C.fail("texts", "an iterable of strings (the corpus)", type(texts).__name__, error=TypeError)
    if isinstance(extra_tokens, str):
        C.fail("extra_tokens", "a sequence of strings", "a single str", "Wrap it in a list: [token].",
               error=TypeError)
    min_count = C.check_int(min_count, "min_count", 1, "1 keeps every word seen.")
    lowercase = C.check_bool(lowercase, "lowercase")
    C.check_choice(padding_side, "padding_side", ("right", "left"))

    normalizer, pre_tokenizer = _pipeline(lowercase)
    counts: Counter[str] = Counter()
    n_texts = 0
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            C.fail(f"texts[{i}]", "a str", type(text).__name__, error=TypeError)
        counts.update(_words(text, normalizer, pre_tokenizer))
        n_texts += 1
    if n_texts == 0:
        C.fail("texts", "a non-empty corpus", "no texts")

    vocab: dict[str, int] = {token: i for i, token in enumerate(SPECIALS)}
    whole_only = []  # extra tokens the pre-tokenizer would split: matched whole as added tokens
    for i, token in enumerate(extra_tokens):
        if not isinstance(token, str) or not token or token != token.strip():
            C.fail(f"extra_tokens[{i}]", "a non-empty str without surrounding whitespace", repr(token))
        key = normalizer.normalize_str(token) if normalizer is not None else token
        if key in vocab:
            continue
        vocab[key] = len(vocab)
        if _words(token, normalizer, pre_tokenizer) != [key]:
            whole_only.append(key)
    for word, count in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])):
        if count >= min_count and word not in vocab:
            vocab[word] = len(vocab)

    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, vocab[BOS])])
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIALS])
    if whole_only:
        tokenizer.add_tokens([AddedToken(token, normalized=lowercase) for token in whole_only])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNK, bos_token=BOS,
                                   eos_token=EOS, padding_side=padding_side, clean_up_tokenization_spaces=False)
