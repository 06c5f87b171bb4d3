"""Compressed copies of a language model, the way a user would deploy them, so an audit can ask what compression
cost: int8 dynamic quantisation of every linear layer (PyTorch's, CPU) and dropping decoder layers.

Each function returns a new :class:`~kdlens.subjects.lm.LanguageModel` (the given one is left as it is), in eval
mode, with the same tokenizer. :func:`weights` gives any of them as plain tensors (a quantised layer's int8
weights included), for digests and parameter counts.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from kdlens import validation as C

EVERY_SECOND = "every_second"


def decoder_layers(module: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder blocks: the ``nn.ModuleList`` as long as ``config.num_hidden_layers``."""
    count = getattr(module.config, "num_hidden_layers", None)
    stacks = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.ModuleList) and len(m) == count]
    if not stacks:
        C.fail("model", f"a decoder with a list of {count} blocks (config.num_hidden_layers)",
               type(module).__name__, "Layers can be dropped from Hugging Face decoder models (Llama, Qwen, "
               "Gemma, ...) only.")
    return min(stacks, key=lambda pair: pair[0].count("."))[1]


def drop_layers(lm, keep: Sequence[int] | str = EVERY_SECOND):
    """A copy of ``lm`` with only the decoder blocks ``keep`` (indices into the stack, in order; ``"every_second"``
    keeps blocks 0, 2, 4, ...): what a user gets by layer pruning without retraining.

    The kept blocks are renumbered (each attention's ``layer_idx``, so the KV cache lines up) and the config
    says the new depth (``num_hidden_layers``, and ``layer_types`` where the model has them).
    """
    stack = decoder_layers(lm.model)
    total = len(stack)
    keep = list(range(0, total, 2)) if keep == EVERY_SECOND else list(keep)
    if not keep or any(isinstance(i, bool) or not isinstance(i, int) for i in keep) or \
            sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= total:
        C.fail("keep_layers", f"'every_second' or increasing block indices in 0..{total - 1}", repr(keep))
    model = copy.deepcopy(lm.model)
    stack = decoder_layers(model)
    kept = [stack[i] for i in keep]
    for new, block in enumerate(kept):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    _replace(model, stack, nn.ModuleList(kept))
    types = getattr(model.config, "layer_types", None)
    model.config.num_hidden_layers = len(keep)
    if isinstance(types, list) and len(types) == total:
        model.config.layer_types = [types[i] for i in keep]
    return _wrapped(lm, model.eval())


def _replace(model: nn.Module, old: nn.ModuleList, new: nn.ModuleList) -> None:
    """Put ``new`` where ``old`` hangs in ``model``."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return


def quantize_int8(lm):
    """A copy of ``lm`` with every ``nn.Linear`` (the output head included) quantised to int8 weights, activations
    quantised on the fly per batch: PyTorch's dynamic quantisation, which runs on the CPU."""
    if lm.device.type != "cpu":
        C.fail("device", "cpu for int8 dynamic quantisation (PyTorch's quantised kernels are CPU kernels)",
               str(lm.device), "Give device: cpu, or leave quantize out.")
    from torch.ao.quantization import quantize_dynamic

    model = copy.deepcopy(lm.model)
    for tensor in [*model.parameters(), *model.buffers()]:  # int8 kernels take float32 (not model.float(): a GGUF
        if tensor.is_floating_point():                      # model refuses it, as a "quantised" one)
            tensor.data = tensor.data.float()
    with warnings.catch_warnings():  # PyTorch announces the move to torchao on every call
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return _wrapped(lm, quantized.eval())


def _wrapped(lm, model: nn.Module):
    return type(lm)(model, lm.tokenizer, lm.name)


def compressed(lm, quantize: str | None = None, keep_layers: Sequence[int] | str | None = None):
    """``lm`` with its layers dropped (``keep_layers``, :func:`drop_layers`) and then quantised (``quantize``:
    ``"int8_dynamic"``, :func:`quantize_int8`); ``lm`` itself when neither is given."""
    if keep_layers is not None:
        lm = drop_layers(lm, keep_layers)
    if quantize is not None:
        C.check_choice(quantize, "quantize", ("int8_dynamic",))
        lm = quantize_int8(lm)
    return lm


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state as plain tensors: a quantised layer's packed weight as its int8 values and scale, other
    non-tensor entries (dtypes) left out."""
    out = {}
    for name, value in module.state_dict().items():
        for i, tensor in enumerate(value if isinstance(value, tuple) else (value,)):
            if not isinstance(tensor, torch.Tensor):
                continue
            key = name if not isinstance(value, tuple) else f"{name}.{i}"
            if tensor.is_quantized:
                out[key] = tensor.int_repr()
                out[key + ".scale"] = torch.as_tensor(tensor.q_scale() if tensor.qscheme() in (
                    torch.per_tensor_affine, torch.per_tensor_symmetric) else tensor.q_per_channel_scales())
            else:
                out[key] = tensor
    return out


def parameter_count(module: nn.Module) -> int:
    """Weights of the model, a quantised layer's int8 weights included; a weight tied to another counts once (an
    output head quantised apart from the embedding it was tied to too: quantising changes no count)."""
    return sum(numel for numel, _ in _unique_weights(module))


def weight_bytes(module: nn.Module) -> int:
    """Bytes of the model's weights as stored (int8 one byte each; a tied weight once, a head quantised apart from
    its tied embedding included: it is a second copy)."""
    return sum(size for _, size in _unique_weights(module, copies=True))


def _unique_weights(module: nn.Module, copies: bool = False) -> list[tuple[int, int]]:
    """(numel, bytes) of each distinct weight tensor."""
    seen, out = set(), []
    for tensor in module.parameters():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            out.append((tensor.numel(), tensor.numel() * tensor.element_size()))
    head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    tied = bool(getattr(getattr(module, "config", None), "tie_word_embeddings", False))
    for child in module.modules():
        packed = getattr(child, "_packed_params", None)
        if packed is None or not hasattr(child, "weight") or not callable(child.weight):
            continue
        weight = child.weight()
        count = 0 if (child is head and tied and not copies) else weight.numel()
        out.append((count, weight.numel() * weight.element_size()))
    return out
