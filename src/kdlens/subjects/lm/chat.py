"""Prompts the way an instruction-tuned model expects them: its own chat template, and the token that ends its turn.

The functions take a :class:`~kdlens.subjects.lm.LanguageModel` as ``lm`` and use its tokenizer only.
"""

from __future__ import annotations

from kdlens import validation as C

_PROBE = "kdlens-turn-probe"


def check_chat(lm, name: str) -> None:
    """Raise ValueError unless ``lm``'s tokenizer has a chat template (``name`` is how the error names the model)."""
    if not getattr(lm.tokenizer, "chat_template", None):
        C.fail(f"models.{name}", "a tokenizer with a chat template (data.chat is true)", "a tokenizer without one",
               "Set data.chat: false and give a prompt_template, or use the model's instruction-tuned tokenizer.")


def chat_prompt(lm, turns: list[dict]) -> str:
    """``turns`` (``{"role": "system" | "user" | "assistant", "content": str}``) through the model's own chat
    template, ready for the assistant's answer, as text. A BOS the template writes is dropped when the tokenizer
    adds its own, so the model sees one."""
    tokenizer = lm.tokenizer
    check_chat(lm, lm.name)
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        text = text[len(bos):]
    return text


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def end_of_turn_ids(lm) -> list[int]:
    """The special tokens the chat template writes right after an assistant's message (``<|im_end|>``,
    ``<end_of_turn>``, ``<|eot_id|>`` ...): a model that has answered emits one of them, so generation stops there.
    Empty when the template has none (or writes plain text after a message)."""
    tokenizer = lm.tokenizer
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(turns, tokenize=False)
    except Exception:  # templates that refuse a conversation shape say so when prompts are made
        return []
    after = text[text.rfind(_PROBE) + len(_PROBE):] if _PROBE in text else ""
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after.strip() else []
    first = next((i for i in ids if i in special), None)
    return [] if first is None else [int(first)]
