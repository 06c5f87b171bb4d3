"""What a crosscoder's latents do inside the models: a block's output edited at chosen tokens (a reconstruction
spliced in, latents' writes removed) and the next-token loss and KL this costs, and steering (a direction added at
every position while the model writes).

Edits go through :meth:`kdlens.subjects.lm.LanguageModel.editing`: block ``block``'s output (the residual stream
after it) is changed in the forward pass, so everything after the block sees the change. An edit names, per text,
the token positions it touches and a (n, d) tensor in the model's units: ``set`` replaces the stream there, ``add``
adds to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kdlens import validation as V


@dataclass(frozen=True)
class TokenEdit:
    """One text's edit: ``positions`` (n,) int64 token indices (special tokens included, as the tokenizer counts
    them) and ``values`` (n, d) float32 in the model's units; ``how``: ``set`` or ``add``."""

    positions: torch.Tensor
    values: torch.Tensor
    how: str = "set"


def edited_losses(model, texts: Sequence[str], block: int, edits: dict[str, Sequence[TokenEdit | None]],
                  batch_size: int = 16) -> dict[str, dict[str, float]]:
    """The next-token loss of ``model`` on ``texts`` as it is and under each named edit of block ``block``'s
    output, and the KL between the original and the edited predictions (the original run once per batch).

    Parameters
    ----------
    model : a :class:`~kdlens.subjects.lm.LanguageModel`
    texts : the texts read (each token after the first is predicted)
    block : the block whose output is edited
    edits : name -> one :class:`TokenEdit` per text (None: that text unedited)

    Returns
    -------
    dict: ``"original"`` -> ``{"ce"}`` and each edit's name -> ``{"ce", "kl"}``: mean cross-entropy per predicted
    token and mean KL(original || edited) per predicted token (nats); every entry also has ``tokens``, the
    predicted tokens counted
    """
    texts = list(texts)
    for name, mine in edits.items():
        if len(mine) != len(texts):
            V.fail(f"edits[{name!r}]", f"one edit (or None) per text ({len(texts)})", str(len(mine)))
    sums = {"original": {"ce": 0.0}, **{name: {"ce": 0.0, "kl": 0.0} for name in edits}}
    tokens = 0
    for lo in range(0, len(texts), batch_size):
        chunk = texts[lo:lo + batch_size]
        original = model.token_logits(chunk, batch_size=len(chunk))
        targets = [a.input_ids[1:] for a in original]  # (T - 1,) each: token t + 1 predicted at t
        p = [a.logits[:-1].double().log_softmax(-1) for a in original]  # (T - 1, V) each
        sums["original"]["ce"] -= sum(float(lp.gather(1, t[:, None]).sum()) for lp, t in zip(p, targets, strict=True))
        tokens += sum(t.numel() for t in targets)
        for name, mine in edits.items():
            with model.editing(block, _batch_edit(list(mine[lo:lo + batch_size]))):
                edited = model.token_logits(chunk, batch_size=len(chunk))
            for lp, t, b in zip(p, targets, edited, strict=True):
                lq = b.logits[:-1].double().log_softmax(-1)
                sums[name]["ce"] -= float(lq.gather(1, t[:, None]).sum())
                sums[name]["kl"] += float((lp.exp() * (lp - lq)).sum())
    if tokens == 0:
        V.fail("texts", "texts of at least two tokens (a token to predict)", "none")
    return {name: {**{k: v / tokens for k, v in entry.items()}, "tokens": tokens} for name, entry in sums.items()}


def _batch_edit(edits: list[TokenEdit | None]):
    """The edit of one right-padded batch's (B, T, d) block output: row b is text b, its token t at column t."""
    def edit(hidden: torch.Tensor) -> torch.Tensor:
        out = hidden.clone()
        for b, e in enumerate(edits):
            if e is None or e.positions.numel() == 0:
                continue
            where = e.positions.to(hidden.device)
            values = e.values.to(hidden.device, hidden.dtype)
            out[b, where] = values if e.how == "set" else out[b, where] + values
        return out

    for e in edits:
        if e is not None and e.how not in ("set", "add"):
            V.fail("how", "'set' or 'add'", repr(e.how))
    return edit


def steering(model, block: int, direction: torch.Tensor):
    """A context in which ``model`` runs with ``direction`` ((d,), the model's units) added to block ``block``'s
    output at every position, the prompt's and each generated token's."""
    direction = direction.detach().float()
    if direction.ndim != 1:
        V.fail("direction", "a (d,) tensor", str(tuple(direction.shape)))
    return model.editing(block, lambda hidden: hidden + direction.to(hidden.device, hidden.dtype))
