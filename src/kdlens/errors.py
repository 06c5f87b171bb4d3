"""The one message template for users' mistakes: what was expected, what came, and the fix.

A bottom-layer module (it imports nothing from kdlens), so the lightest modules (text tasks, loaders) can use it
without importing the tensor measures.
"""

from __future__ import annotations


def fail(name: str, expected: str, got: str, fix: str = "", error: type[Exception] = ValueError) -> None:
    """Raise ``error`` with the kdlens message template.

    Examples
    --------
    >>> fail("n", "a positive integer", "-3", "Ask for at least one example.")
    Traceback (most recent call last):
    ValueError: Expected `n` to be a positive integer, but got -3. Ask for at least one example.
    """
    message = f"Expected `{name}` to be {expected}, but got {got}."
    if fix:
        message += f" {fix}"
    raise error(message)
