"""One decoder block's output (the residual stream after block ``i``): read it without running the rest of the model,
or edit it in every forward pass, through forward hooks that are always removed.

A Hugging Face causal LM's blocks are the ``nn.ModuleList`` as long as ``config.num_hidden_layers`` (Llama, Qwen,
Gemma, Mistral: ``model.layers``; GPT-2: ``transformer.h``; GPT-NeoX: ``gpt_neox.layers``). A block returns its
hidden state (B, T, d), alone or first in a tuple; edits and reads see that tensor.

Hooks on one block run in this order: the edits (:func:`edit_block`, the innermost ``with`` first, all ahead of
transformers' own ``output_hidden_states`` hooks, so ``hidden_states`` reports the edited state), then a read
(:func:`run_to_block`), which sees the edited state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from kdlens import validation as V

Edit = Callable[[torch.Tensor], torch.Tensor]


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Hugging Face causal LM: the first ``nn.ModuleList`` in ``model.named_modules()`` whose
    length is ``model.config.num_hidden_layers``.

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> net = LlamaForCausalLM(LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=16, num_hidden_layers=3,
    ...     num_attention_heads=2, num_key_value_heads=1))
    >>> decoder_blocks(net) is net.model.layers
    True
    """
    config = getattr(model, "config", None)
    count = getattr(config, "num_hidden_layers", None)
    if isinstance(count, int) and count > 0:
        for module in model.modules():
            if isinstance(module, nn.ModuleList) and len(module) == count:
                return module
    V.fail("model", f"a decoder with an nn.ModuleList of config.num_hidden_layers ({count}) blocks "
           "(model.layers, transformer.h, gpt_neox.layers, ...)", f"a {type(model).__name__} without one",
           "Blocks are found in Hugging Face causal LMs (AutoModelForCausalLM) only.")


def check_block(model: nn.Module, index, name: str = "index", owner: str = "the model") -> int:
    """``index`` as an int once it names one of ``model``'s blocks; else an error listing them (``layers.0`` ...)."""
    return _check_index(len(decoder_blocks(model)), index, name, owner)


def _check_index(count: int, index, name: str, owner: str) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        V.fail(name, f"a block index of {owner} from 0 to {count - 1} (its layers: "
               f"{', '.join(f'layers.{i}' for i in range(count))})", repr(index))
    return index


def _block(model: nn.Module, index) -> nn.Module:
    blocks = decoder_blocks(model)
    return blocks[_check_index(len(blocks), index, "index", "the model")]


@contextmanager
def edit_block(model: nn.Module, index: int, edit: Edit) -> Iterator[None]:
    """Every forward pass of ``model`` inside the block sees block ``index``'s output replaced by ``edit(hidden)``.

    Parameters
    ----------
    model : a Hugging Face causal LM
    index : int, the block, 0 to ``num_hidden_layers - 1``
    edit : function of the block's hidden state (B, T, d), in the model's dtype and on its device (T is 1 for each
        step of a generation with a KV cache) to a tensor of the same shape, cast back to that dtype

    The hook is removed on exit, also when the body (or ``edit``) raises.

    Examples
    --------
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> net = LlamaForCausalLM(LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
    ...     num_attention_heads=2, num_key_value_heads=1))
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> with edit_block(net, 0, lambda h: h + 10.0):
    ...     edited = net(ids).logits
    >>> bool((edited != net(ids).logits).any())
    True
    """
    block = _block(model, index)
    if not callable(edit):
        V.fail("edit", "a function from the hidden state (B, T, d) to a tensor of that shape", type(edit).__name__,
               error=TypeError)

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output  # (B, T, d)
        edited = edit(hidden)
        if not isinstance(edited, torch.Tensor):
            V.fail("edit", "a function returning a tensor", f"a {type(edited).__name__}", error=TypeError)
        if edited.shape != hidden.shape:
            V.fail("edit", f"a function returning the hidden state's shape {tuple(hidden.shape)}",
                   f"shape {tuple(edited.shape)}", "Return a tensor of the same (B, T, d) shape, e.g. hidden + v.")
        edited = edited.to(device=hidden.device, dtype=hidden.dtype)
        return (edited, *output[1:]) if isinstance(output, tuple) else edited

    handle = block.register_forward_hook(hook, prepend=True)  # ahead of transformers' hidden-state capture
    try:
        yield
    finally:
        handle.remove()


class _Reached(Exception):
    """Raised by the read hook once the wanted block has run: it ends the forward pass there."""


def run_to_block(model: nn.Module, index: int, forward: Callable[[], object]) -> torch.Tensor:
    """Block ``index``'s output (B, T, d) in the model's dtype, from ``forward()`` (a call of ``model`` or of its
    body), stopped right after that block: later blocks, the final norm and the vocabulary head never run.

    Edits of that block (:func:`edit_block`) are applied before it is read. ``forward`` must run the block.
    """
    block = _block(model, index)
    found = []

    def hook(module, args, output):
        found.append(output[0] if isinstance(output, tuple) else output)
        raise _Reached

    handle = block.register_forward_hook(hook)
    try:
        forward()
    except _Reached:
        pass
    finally:
        handle.remove()
    if not found:
        V.fail("forward", f"a call that runs block {index} of the model", "one that never reached it")
    return found[0]
