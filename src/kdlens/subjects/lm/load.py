"""Loading a causal LM from a local folder, safely: checkpoint checks, the tokenizer as saved, the model itself.

Safe by default: a local directory only (nothing is downloaded), weights from safetensors only (never pickle), and no
code from the checkpoint unless ``trust_remote_code=True``. transformers is imported when it is first needed, so
kdlens' classifiers work without the ``lm`` extra.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from kdlens import io
from kdlens import validation as C

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def import_transformers():
    """The ``transformers`` module, or an ImportError saying how to install it."""
    try:
        import transformers
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Language models need transformers: pip install 'kdlens[lm]'.") from error
    return transformers


def dtype_argument(transformers, dtype) -> dict:
    """``from_pretrained``'s dtype keyword: transformers renamed ``torch_dtype`` to ``dtype`` in 4.56 (the old name
    warns in 5.x)."""
    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": dtype}


def load_pretrained(path: Path, dtype: str | torch.dtype | None, device: str | torch.device,
                    trust_remote_code: bool) -> tuple[nn.Module, object]:
    """(model in eval mode on ``device``, tokenizer) from a local ``save_pretrained`` folder; the arguments are
    checked here (see :meth:`~kdlens.subjects.lm.LanguageModel.from_pretrained`)."""
    torch_dtype = _check_dtype(dtype)
    trust_remote_code = C.check_bool(trust_remote_code, "trust_remote_code")
    _check_checkpoint(path)
    transformers = import_transformers()
    with quiet_transformers():
        model = transformers.AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, use_safetensors=True, trust_remote_code=trust_remote_code,
            **dtype_argument(transformers, torch_dtype if torch_dtype is not None else "auto"))
    tokenizer = load_tokenizer(path, trust_remote_code)
    model.to(device).eval()
    return model, tokenizer


def gguf_file(path: str | Path) -> Path:
    """The .gguf file ``path`` names: the file itself, or the one .gguf file in the folder ``path``."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) != 1:
            C.fail("gguf", "a .gguf file, or a folder holding exactly one", f"{path} holding "
                   f"{[p.name for p in found] or 'none'}", "Name the file itself: gguf: folder/model.gguf.",
                   error=FileNotFoundError if not found else ValueError)
        return found[0]
    if not path.is_file():
        C.fail("gguf", "a .gguf file, or a folder holding exactly one", f"{path} (no such file)",
               error=FileNotFoundError)
    if _magic(path) != b"GGUF":
        C.fail("gguf", "a GGUF file (it starts with the bytes GGUF)", f"{path}, which does not",
               "Convert the model with llama.cpp's convert_hf_to_gguf.py, or load its folder as a checkpoint.")
    return path


def _magic(path: Path) -> bytes:
    """A file's first four bytes (``GGUF`` for a GGUF file)."""
    with path.open("rb") as f:
        return f.read(4)


def load_gguf(path: str | Path, dtype: str | torch.dtype | None, device: str | torch.device) -> tuple[nn.Module,
                                                                                                    object]:
    """(model in eval mode on ``device``, tokenizer) from a llama.cpp GGUF file, through transformers' GGUF support:
    the weights are dequantised (to float32 unless ``dtype``), the tokenizer rebuilt from the file's metadata. A
    GGUF file holds no code, so there is nothing to trust."""
    torch_dtype = _check_dtype(dtype)
    file = gguf_file(path)
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("GGUF files need the gguf package: pip install 'kdlens[lm]'.") from error
    transformers = import_transformers()
    with quiet_transformers(), _quiet_dequantising():
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                file.parent, gguf_file=file.name, local_files_only=True,
                **dtype_argument(transformers, torch_dtype if torch_dtype is not None else torch.float32))
            tokenizer = transformers.AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name,
                                                                   local_files_only=True)
        except (ValueError, KeyError, NotImplementedError) as error:
            C.fail("gguf", "a GGUF file of an architecture and quantisation transformers can dequantise",
                   f"{file} ({error})", "Check the model type and quantisation against transformers' GGUF "
                   "support, or convert the model to a save_pretrained folder.")
    model.to(device).eval()
    return model, tokenizer


@contextmanager
def _quiet_dequantising():
    """transformers' GGUF reader draws its own tqdm bar per file, outside its progress-bar switch: hidden here
    while the file loads (where that module is as this transformers has it; otherwise nothing changes)."""
    import functools
    import importlib

    try:
        reader = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    except ImportError:  # pragma: no cover - another transformers layout
        yield
        return
    bar = getattr(reader, "tqdm", None)
    if bar is not None:
        reader.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            reader.tqdm = bar


@contextmanager
def quiet_transformers():
    """Hide transformers' own per-file bars ("Loading weights", "Writing model shards") for a moment: kdlens shows
    its own progress, and a run's log should not fill with them. The setting is restored afterwards."""
    logging = import_transformers().utils.logging
    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """The folder's tokenizer as saved.

    A generic fast tokenizer (tokenizer_config.json naming ``TokenizersBackend`` / ``PreTrainedTokenizerFast``) is
    its tokenizer.json, loaded as is. ``AutoTokenizer`` is not used for it: transformers 5 replaces the class with
    the model type's own for some types (qwen2, phi3, ...), which rebuilds the pre-tokenizer and normaliser from the
    vocabulary, so a word-level tokenizer saved beside a Qwen2 model would silently tokenize differently.
    """
    path = Path(path)
    transformers = import_transformers()
    config = path / "tokenizer_config.json"
    declared = io.read_json(config).get("tokenizer_class") if config.is_file() else None
    if declared in GENERIC_TOKENIZERS and (path / "tokenizer.json").is_file():
        return transformers.PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)


def _check_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if dtype not in DTYPES:
        C.fail("dtype", 'None, "float32", "bfloat16", "float16" or a floating torch.dtype', repr(dtype))
    return DTYPES[dtype]


def _check_checkpoint(path: Path) -> None:
    """A local folder with config.json and safetensors weights; pickle weights are refused with the way out."""
    if not path.exists():
        C.fail("path", "a local model directory", f"{str(path)!r}, which does not exist",
               "Models load from a local folder only (nothing is downloaded); save one with save_pretrained(dir).",
               error=FileNotFoundError)
    if not path.is_dir():
        C.fail("path", "a model directory (config.json, model.safetensors, tokenizer files)", f"the file {path}",
               "Pass the folder that holds it.", error=NotADirectoryError)
    if not (path / "config.json").is_file():
        C.fail("path", "a model directory with config.json", f"{path} without it",
               "Save the model with model.save_pretrained(dir).", error=FileNotFoundError)
    if any((path / name).is_file() for name in SAFE_WEIGHTS):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.name.endswith(PICKLE_SUFFIXES)
                     or p.name.endswith(".bin.index.json"))
    if pickles:
        C.fail("path", "a model directory with safetensors weights (model.safetensors)",
               f"{path} with pickle weights only ({', '.join(pickles)})",
               "kdlens never unpickles weights (loading a pickle can run code). If you trust the file, convert "
               "it once: AutoModelForCausalLM.from_pretrained(dir, use_safetensors=False).save_pretrained(dir) "
               "writes model.safetensors (transformers 4.x: pass safe_serialization=True); then load it here.")
    C.fail("path", "a model directory with safetensors weights (model.safetensors)", f"{path} without weights",
           "Save the model with model.save_pretrained(dir).", error=FileNotFoundError)
