"""Where a model comes from: one rule for classifiers and language models, and resolvers registered by name.

A :class:`ModelSource` is exactly one of

- ``checkpoint``: a local folder (classifiers: ``model.safetensors`` + ``config.json``; language models: the
  ``save_pretrained`` layout with safetensors weights and the tokenizer; nothing is downloaded);
- ``architecture`` (``package.module:factory``) with ``kwargs``, fresh or with ``weights`` from a safetensors file
  (classifiers);
- ``gguf``: a llama.cpp file (``model.gguf``, or a folder holding exactly one), dequantised by transformers
  (language models; needs the ``gguf`` package of the ``lm`` extra);
- ``lab``: a model that a registered resolver builds, e.g. the lab's ``vision`` and ``lm`` (``lab_model`` names which
  one, ``lab_recipe`` the recipe, ``lab_root`` where it keeps its models).

A language model's source may add ``compress`` (int8 dynamic quantisation, dropped layers): the audit then sees the
compressed copy a user would deploy (:mod:`kdlens.subjects.lm.compress`). Sources that differ only in ``compress``
load their file once.

Resolvers plug in from above: a package declares an entry point in the group ``kdlens.sources`` whose target, called
with no argument, registers its resolvers through :func:`register` (the lab does; so do your own packages if they
build models). Neither the audit nor distill imports the lab.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from kdlens.config import StrictModel, did_you_mean
from kdlens.subjects.devices import check_device
from kdlens.validation import fail

Kind = Literal["classifier", "lm"]
ENTRY_POINTS = "kdlens.sources"
CHECKPOINT_LAYOUTS = {
    "classifier": "a folder with model.safetensors and config.json",
    "lm": "a local folder in the save_pretrained layout (config.json, *.safetensors, tokenizer files)",
}


class Compression(StrictModel):
    """A compressed copy of a loaded language model: ``keep_layers`` (``every_second``: blocks 0, 2, 4, ...; or the
    block indices to keep) is applied first, then ``quantize``."""

    quantize: Literal["int8_dynamic"] | None = Field(None, description="int8 weights, activations quantised per "
                                                     "batch (PyTorch dynamic quantisation; CPU only)")
    keep_layers: Literal["every_second"] | list[int] | None = Field(None, description="decoder blocks to keep")

    @model_validator(mode="after")
    def _something(self):
        if self.quantize is None and self.keep_layers is None:
            raise ValueError("compress needs quantize: int8_dynamic, keep_layers, or both")
        return self


class ModelSource(StrictModel):
    """A model from a checkpoint folder, an architecture (a class or factory, ``package.module:name``, with
    ``kwargs``, fresh or with ``weights`` from a safetensors file), or a registered resolver (``lab``)."""

    checkpoint: str | None = None
    gguf: str | None = Field(None, description="language models: a .gguf file, or a folder holding exactly one "
                             "(dequantised to float32 unless dtype says otherwise)")
    weights: str | None = Field(None, description="a safetensors state dict loaded into `architecture`")
    architecture: str | None = None
    kwargs: dict = Field(default_factory=dict)
    lab: str | None = Field(None, description="a registered resolver: vision or lm (the lab's)")
    lab_root: str = Field("runs/lab", description="where the lab keeps its models (with lab)")
    lab_model: str = Field("teacher", description="with lab: teacher or a student's name (vision: also "
                           "teacher_reseeded, untrained_student; lm: base_student)")
    lab_recipe: str = Field("default", description="with lab: default, quick, or a lab recipe YAML file")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="language models: load the weights in this dtype (default: the checkpoint's own)")
    trust_remote_code: bool = Field(False, description="run model code named by the source (off unless trusted)")
    compress: Compression | None = Field(None, description="language models: audit a compressed copy")

    @model_validator(mode="after")
    def _exactly_one_source(self):
        given = [k for k in ("checkpoint", "architecture", "gguf", "lab") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of checkpoint, architecture, gguf or lab (got {given or 'none'})")
        if self.lab is None and (self.lab_model, self.lab_recipe) != ("teacher", "default"):
            raise ValueError("lab_model and lab_recipe go with lab")
        if self.kwargs and self.architecture is None:
            raise ValueError("kwargs go with architecture (the arguments its class or factory is called with); "
                             "a checkpoint folder or a lab model brings its own")
        if self.weights is not None and self.architecture is None:
            raise ValueError("weights go with architecture (package.module:Class or factory, plus kwargs); "
                             "a checkpoint folder carries its own weights")
        return self

    def build(self, device: str = "cpu"):
        """The classifier (``nn.Module``) this checkpoint or architecture source describes (a lab source is built
        by its resolver: :func:`load_models`)."""
        from kdlens.subjects.checkpoint import build_architecture, load_classifier, load_weights

        if self.checkpoint is not None:
            return load_classifier(self.checkpoint, trust_remote_code=self.trust_remote_code, device=device)
        if self.architecture is not None:
            model = build_architecture(self.architecture, self.kwargs, self.trust_remote_code)
            return load_weights(model, self.weights, device=device) if self.weights is not None else model.to(device)
        raise ValueError(f"a lab: {self.lab} model is built by its resolver (kdlens.subjects.sources.load_models)")


@dataclass(frozen=True)
class Resolver:
    """Builds the models of ``lab: <name>`` sources for one kind of audit.

    check : raises if a source names no model the resolver builds (called before anything is built)
    load : ``{your name: source}``, device, progress, recipe overrides -> ``{your name: model}``
    task_defaults : the data settings a source's models were trained on (``{"shapes": ...}``), so an audit draws
        its data as they were drawn unless its config says otherwise
    """

    kind: Kind
    check: Callable[[ModelSource], None]
    load: Callable[..., dict[str, Any]]
    task_defaults: Callable[[ModelSource], dict] = lambda source: {}


_RESOLVERS: dict[str, Resolver] = {}


def register(name: str, resolver: Resolver) -> None:
    """Make ``lab: <name>`` sources resolve through ``resolver``."""
    _RESOLVERS[name] = resolver


_PLUGINS_LOADED = False


def load_plugins() -> None:
    """Call every ``kdlens.sources`` entry point once (each registers its resolvers and trusted architectures)."""
    global _PLUGINS_LOADED
    if not _PLUGINS_LOADED:
        _PLUGINS_LOADED = True
        for point in entry_points(group=ENTRY_POINTS):
            point.load()()


def resolver(name: str, kind: Kind | None = None) -> Resolver:
    """The resolver of ``lab: <name>``, loading the ``kdlens.sources`` entry points the first time; an unknown name
    (or one for another kind of model) says which there are."""
    if name not in _RESOLVERS:
        load_plugins()
    known = sorted(n for n, r in _RESOLVERS.items() if kind is None or r.kind == kind)
    if name not in known:
        fail("lab", f"one of {', '.join(known) or '(none registered)'}", repr(name),
             f"{did_you_mean(name, known).strip()} Resolvers register through the {ENTRY_POINTS!r} entry points."
             .strip())
    return _RESOLVERS[name]


def check_sources(sources: dict[str, ModelSource], kind: Kind) -> None:
    """Before anything is built: each source suits ``kind``, its files exist, its lab model is real."""
    for name, source in sources.items():
        where = f"model {name!r}"
        if kind == "lm" and source.architecture is not None:
            raise ValueError(f"Expected {where} to be a checkpoint folder, a gguf file or lab: lm (a language model), "
                             f"but got "
                             f"architecture {source.architecture!r}. Save it with save_pretrained and give the "
                             f"folder as checkpoint.")
        if source.lab is not None and source.dtype is not None:
            raise ValueError(f"Expected no dtype for {where} (a lab model loads in the dtype it was trained in), but "
                             f"got {source.dtype!r}. Remove it, or load a saved copy as a checkpoint with that dtype.")
        if kind == "classifier" and source.gguf is not None:
            raise ValueError(f"Expected {where} to be a classifier source (checkpoint, architecture or lab), but got "
                             f"gguf {source.gguf!r}: GGUF files hold language models.")
        if source.gguf is not None and not Path(source.gguf).exists():
            raise FileNotFoundError(f"Expected the gguf of {where} to be a .gguf file or a folder holding one, but "
                                    f"got {source.gguf} (no such file or folder).")
        if kind == "classifier" and source.compress is not None:
            raise ValueError(f"Expected no compress for {where}: compression applies to language models only. "
                             f"Remove it.")
        if kind == "classifier" and source.dtype is not None:
            raise ValueError(f"Expected no dtype for {where} (classifiers run in their weights' dtype), but got "
                             f"{source.dtype!r}. Remove it.")
        if source.checkpoint is not None and not Path(source.checkpoint).is_dir():
            raise FileNotFoundError(f"Expected the checkpoint of {where} to be {CHECKPOINT_LAYOUTS[kind]}, but got "
                                    f"{source.checkpoint} (no such folder).")
        if source.weights is not None and not Path(source.weights).is_file():
            raise FileNotFoundError(f"Expected the weights of {where} to be a safetensors file, but got "
                                    f"{source.weights} (no such file).")
        if source.lab is not None:
            resolver(source.lab, kind).check(source)


def load_models(sources: dict[str, ModelSource], kind: Kind, device: str = "cpu", progress: bool = True,
                overrides: dict | None = None) -> dict[str, Any]:
    """Every source's model, in the order given (each resolver builds its lab once for all its sources).

    Returns
    -------
    dict: name -> ``nn.Module`` (classifiers, on ``device``) or :class:`~kdlens.subjects.LanguageModel` (``lm``).
    ``overrides`` go to the resolvers: recipe settings the caller's data fixes (e.g. ``{"shapes": ...}``).
    """
    check_sources(sources, kind)
    if any(s.compress is not None and s.compress.quantize is not None for s in sources.values()) and \
            device != "cpu":
        raise ValueError(f"Expected device cpu with compress.quantize (PyTorch's int8 kernels run on the CPU), but "
                         f"got {device!r}. Set device: cpu, or leave quantize out.")
    check_device(device)  # after the cheap checks of every source, before any model loads or any lab trains
    loaded: dict[str, Any] = {}
    files: dict[str, Any] = {}  # one load per file: sources that differ only in compress share it
    for name, source in sources.items():
        if source.lab is not None:
            continue
        if kind == "lm":
            key = source.model_dump_json(exclude={"compress"})
            if key not in files:
                files[key] = _load_lm(source, device, name)
            loaded[name] = files[key]
        else:
            loaded[name] = source.build(device)
    for lab in dict.fromkeys(s.lab for s in sources.values() if s.lab is not None):
        wanted = {name: s for name, s in sources.items() if s.lab == lab}
        loaded.update(resolver(lab, kind).load(wanted, device=device, progress=progress, overrides=overrides))
    if kind == "lm":
        from kdlens.subjects.lm.compress import compressed

        for name, source in sources.items():
            base = loaded[name]
            settings = source.compress.model_dump() if source.compress is not None else {}
            model = compressed(base, **settings)
            loaded[name] = type(base)(model.model, model.tokenizer, name)
    return {name: loaded[name] for name in sources}


def _load_lm(source: ModelSource, device: str, name: str):
    from kdlens.subjects.lm import LanguageModel

    if source.gguf is not None:
        return LanguageModel.from_gguf(source.gguf, dtype=source.dtype, device=device, name=name)
    return LanguageModel.from_pretrained(source.checkpoint, dtype=source.dtype, device=device,
                                         trust_remote_code=source.trust_remote_code, name=name)


def task_defaults(source: ModelSource | None, kind: Kind) -> dict:
    """The data settings a lab source's models were trained on (empty for other sources)."""
    if source is None or source.lab is None:
        return {}
    return resolver(source.lab, kind).task_defaults(source)
