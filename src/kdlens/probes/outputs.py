"""What each classifier predicts, how well it knows when it is right, and how close it stays to the teacher.

:func:`shard_outputs` runs every model over a shard of examples and returns the shard's partial state: the logits
and the streaming calibration and agreement states (``torchmetrics`` sums), which :func:`output_figures` merges
over shards into each model's figures, and :func:`example_rows` into one row per (model, example).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from kdlens import measures as M
from kdlens.subjects import Classifier

TEACHER = "teacher"
TEMPERATURE_NOTE = ("The temperature is fitted on the same split's logits and labels it is evaluated on, so "
                    "ece_temperature_scaled is optimistic: a lower bound on what a held-out fit would give.")
TEMPERATURE_BOUNDS = (0.01, 100.0)  # a fit that lands on a bound (near-chance model) sets temperature_at_bound


def check_logits(logits: torch.Tensor, name: str, split: str) -> None:
    """Raise if model ``name`` gave a NaN or inf logit on ``split`` (how many examples, and what to check)."""
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).any(-1).sum())
        raise ValueError(f"Expected model {name!r} to give finite logits on split {split!r}, but got NaN or inf "
                         f"on {bad} of {len(logits)} examples. Check the checkpoint and the input scaling.")


def shard_outputs(models: dict[str, nn.Module], inputs: torch.Tensor, labels: torch.Tensor, split: str,
                  n_bins: int, batch_size: int) -> dict[str, torch.Tensor]:
    """One shard's state: per model ``<name>.logits`` (n, C) float32, the calibration sums ``<name>.calibration.*``
    and (students) the agreement counts ``<name>.agreement.*``, fed batch by batch of ``batch_size``."""
    state: dict[str, torch.Tensor] = {}
    logits = {}
    for name, model in models.items():
        logits[name] = Classifier(model, name).logits(inputs, batch_size)  # (n, C) float32, CPU
        check_logits(logits[name], name, split)
        state[f"{name}.logits"] = logits[name]
    labels = labels.long()
    for name, z in logits.items():
        calibration = M.CalibrationError(n_bins=n_bins)
        agreement = M.Agreement() if name != TEACHER else None
        for start in range(0, len(labels), batch_size):
            batch = slice(start, start + batch_size)
            calibration.update(z[batch].double().softmax(-1), labels[batch])
            if agreement is not None:
                agreement.update(logits[TEACHER][batch], z[batch])
        state.update({f"{name}.calibration.{k}": v for k, v in calibration.metric_state.items()})
        if agreement is not None:
            state.update({f"{name}.agreement.{k}": v for k, v in agreement.metric_state.items()})
    return state


def output_figures(states: list[dict[str, torch.Tensor]], models: list[str], labels: torch.Tensor,
                   n_bins: int) -> tuple[dict[str, dict], dict[str, torch.Tensor]]:
    """Each model's figures on one split from its shards' states, and the concatenated logits (n, C) per model.

    Notes
    -----
    ECE is top-label, l1, equal-width bins, and MCE the largest per-bin gap over non-empty bins, both from the merged
    streaming sums; agreement from the merged counts. KL is KL(p_teacher || p_student) and JS the Jensen-Shannon
    divergence, both in nats at temperature 1. The temperature is fitted on the same split it is evaluated on, so
    ``ece_temperature_scaled`` is optimistic; a fit that lands on a bound of ``TEMPERATURE_BOUNDS`` (a near-chance
    model) is returned with ``temperature_at_bound`` true.
    """
    labels = labels.long()
    logits = {name: torch.cat([s[f"{name}.logits"] for s in states]) for name in models}
    entries = {}
    for name, z in logits.items():
        entry = calibration(z, labels, n_bins)
        sums = f"{name}.calibration."
        entry["ece"] = float(M.merge_states(M.CalibrationError(n_bins, norm="l1"), states, sums).compute())
        entry["mce"] = float(M.merge_states(M.CalibrationError(n_bins, norm="max"), states, sums).compute())
        if name != TEACHER:
            entry.update(agreement=float(M.merge_states(M.Agreement(), states, f"{name}.agreement.").compute()),
                         kl=float(M.kl_divergence(logits[TEACHER], z, reduction="none").mean()),
                         js=M.js_divergence(logits[TEACHER], z))
        entries[name] = entry
    return entries, logits


def calibration(logits: torch.Tensor, labels: torch.Tensor, n_bins: int) -> dict:
    """Accuracy, Brier, NLL, the fitted temperature and the ECE after it, and the reliability curve (JSON-ready)
    of one model on one split: ``logits`` (n, C), ``labels`` (n,)."""
    probs = logits.double().softmax(-1)  # (n, C); float64 so NLL does not meet float32 underflow
    with warnings.catch_warnings():  # an optimum outside the bounds is recorded, not warned per model
        warnings.simplefilter("ignore", UserWarning)
        temperature = M.fit_temperature(logits, labels, bounds=TEMPERATURE_BOUNDS)
    curve = M.reliability_curve(probs, labels, n_bins=n_bins)
    return {"accuracy": float((logits.argmax(-1) == labels).double().mean()),
            "brier": M.brier_score(probs, labels), "nll": M.negative_log_likelihood(probs, labels),
            "temperature": temperature, "temperature_at_bound": temperature in TEMPERATURE_BOUNDS,
            "ece_temperature_scaled": M.expected_calibration_error((logits.double() / temperature).softmax(-1),
                                                                   labels, n_bins=n_bins, norm="l1"),
            "reliability": curve.to_lists()}


def example_rows(logits: dict[str, torch.Tensor], labels: torch.Tensor, split: str) -> list[dict]:
    """One row per (model, example): label, prediction, confidence, correct; students also agree and the
    per-example KL(teacher || student) in nats."""
    labels = labels.long()
    rows = []
    for name, z in logits.items():
        confidence, prediction = z.double().softmax(-1).max(-1)
        agree = per_kl = None
        if name != TEACHER:
            agree = M.agreement(logits[TEACHER], z, reduction="none")  # (n,) bool
            per_kl = M.kl_divergence(logits[TEACHER], z, reduction="none")  # (n,) float64, nats
        for i in range(len(labels)):
            row = {"model": name, "split": split, "index": i, "label": int(labels[i]),
                   "prediction": int(prediction[i]), "confidence": float(confidence[i]),
                   "correct": bool(prediction[i] == labels[i])}
            if name != TEACHER:
                row.update(agree=bool(agree[i]), kl=float(per_kl[i]))
            rows.append(row)
    return rows
