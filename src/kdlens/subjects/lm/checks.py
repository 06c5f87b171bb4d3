"""The argument checks every language-model operation shares: the texts and the batch size."""

from __future__ import annotations

from collections.abc import Sequence

from kdlens import validation as C


def check_texts(texts, name: str) -> list[str]:
    """A non-empty list of str (a lone str is a mistake: iterating it would give characters)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        C.fail(name, "a list of str", type(texts).__name__, f"Wrap a single text in a list: [{name[:-1]}].",
               error=TypeError)
    if len(texts) == 0:
        C.fail(name, "a non-empty list of str", "an empty list")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            C.fail(f"{name}[{i}]", "a str", type(text).__name__, error=TypeError)
    return list(texts)


def check_batch_size(batch_size) -> int:
    return C.check_int(batch_size, "batch_size", 1, "16 suits small models on a CPU.")
