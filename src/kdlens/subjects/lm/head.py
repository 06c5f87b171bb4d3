"""The output head apart from the model's body: vocabulary logits for chosen positions only, a chunk of positions at a
time, so no (batch x tokens x vocabulary) tensor exists (at a 262k vocabulary that is GBs per batch, a chunk MBs).

transformers' causal LMs compute ``logits = lm_head(last_hidden_state)``; the architectures in the tables below do
more, and :func:`output_head` does the same (read from transformers 5's ``models/*/modeling_*.py``). Anything else a
model does (a custom forward, a wrapper) is caught by :func:`reproduces_logits`, which the caller runs once on a
probe, falling back to the model's own logits when it fails.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# config.model_type -> the config attribute that divides the last hidden state before the head
HIDDEN_DIVISOR = {"minicpm3": "logits_scaling", "inkling_text": "logits_mup_width_multiplier"}
# ... that multiplies the logits
LOGIT_MULTIPLIER = {"cohere": "logit_scale", "cohere2": "logit_scale", "cohere2_moe": "logit_scale",
                    "cohere_compass_text": "logit_scale", "hyperclovax": "logits_scaling",
                    "falcon_h1": "lm_head_multiplier"}
# ... that divides the logits
LOGIT_DIVISOR = {kind: "logits_scaling" for kind in ("granite", "granite_swa", "granitemoe", "granitemoe_swa",
                                                     "granitemoehybrid", "granitemoeshared")}
# Soft-capping (``final_logit_softcapping``) runs in float32 for these, in the head's dtype for the others (Gemma)
CAP_IN_FLOAT32 = {"beam", "inkling2_text", "inkling2_loop_text"}

Head = Callable[[torch.Tensor], torch.Tensor]


def output_head(model: nn.Module) -> Head | None:
    """``model``'s output head as a function: last hidden state (B, T, d), after the final norm -> logits (B, T, V),
    with the scaling and soft-capping of the architectures above; None when the model has no output embedding or no
    body apart from it (``base_model``)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(model, "base_model", model) is model:
        return None
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    kind = getattr(config, "model_type", "")
    hidden_divisor = getattr(config, HIDDEN_DIVISOR.get(kind, ""), None)
    multiplier = getattr(config, LOGIT_MULTIPLIER.get(kind, ""), None)
    divisor = getattr(config, LOGIT_DIVISOR.get(kind, ""), None)
    cap = getattr(config, "final_logit_softcapping", None)

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        if hidden_divisor is not None:
            hidden = hidden / hidden_divisor
        out = head(hidden)
        if multiplier is not None:
            out = out * multiplier
        if divisor is not None:
            out = out / divisor
        if cap is not None:
            out = torch.tanh((out.float() if kind in CAP_IN_FLOAT32 else out) / cap) * cap
        return out

    return logits


def reproduces_logits(head: Head, hidden: torch.Tensor, logits: torch.Tensor) -> bool:
    """Whether ``head(hidden)`` gives ``logits``, the model's own (B, T, V) for the same input, to the rounding of
    their dtype (relative to the largest logit: 1e-4 in float32, 2 ulp in bfloat16 / float16)."""
    try:
        mine = head(hidden)
    except (TypeError, ValueError, RuntimeError):  # a head that takes something else than the body's output
        return False
    if not isinstance(mine, torch.Tensor) or mine.shape != logits.shape:
        return False
    tolerance = max(1e-4, 2 * torch.finfo(logits.dtype).eps)
    scale = float(logits.float().abs().max())
    return torch.allclose(mine.float(), logits.float(), rtol=tolerance, atol=tolerance * scale)


def target_logprobs(head: Head, hidden: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """Log-probability of each target token from the hidden state that predicts it, ``chunk`` positions at a time.

    Parameters
    ----------
    head : from :func:`output_head`
    hidden : (N, d) last hidden states, one per scored token (row n predicts ``targets[n]``)
    targets : (N,) int64 token ids
    chunk : int >= 1, positions per head call; the (chunk, V) float32 logits and their log-softmax are all that
        exists of the vocabulary at once

    Returns
    -------
    (N,) float32 natural-log probabilities (nats), on ``hidden``'s device

    Examples
    --------
    >>> head, hidden, targets = torch.nn.Linear(4, 10), torch.randn(5, 4), torch.tensor([1, 2, 3, 4, 5])
    >>> with torch.no_grad():
    ...     chunked = target_logprobs(head, hidden, targets, chunk=2)  # three head calls: 2, 2 and 1 positions
    ...     full = head(hidden).log_softmax(-1)[torch.arange(5), targets]
    >>> torch.allclose(chunked, full)
    True
    """
    out = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
    for lo in range(0, len(targets), chunk):
        logprobs = head(hidden[None, lo:lo + chunk])[0].float().log_softmax(-1)  # (chunk, V)
        out[lo:lo + chunk] = logprobs.gather(1, targets[lo:lo + chunk, None])[:, 0]
    return out

