"""The audit's "outputs" and "representations" stages: what each model predicts and how well it knows when it is
right, and how close each student's layers are to the teacher's.

``outputs`` writes, under ``<run_dir>/stages/outputs/``:

- ``figures.json``: per split, per model: accuracy, calibration (ECE, MCE, Brier, NLL, temperature-scaled ECE and
  the fitted temperature) and the reliability curve; for students, agreement with the teacher, KL and JS;
- ``examples.jsonl``: one row per (model, split, example): label, prediction, confidence, correct, and for students
  agree and the per-example KL(teacher || student).

``representations`` writes ``<run_dir>/stages/representations/figures.json``: the linear CKA matrix (teacher layers
x student layers) of every student, each student layer's best-matching teacher layer, and their mean.

Both record themselves in ``<run_dir>/manifest.json`` (:class:`kdlens.stages.Stages`), so a second call with the
same inputs loads instead of recomputing. Both validate what they are given (non-empty data, matching class counts,
existing layers) before any long work.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from kdlens import io
from kdlens import measures as M
from kdlens.audit.common import TEACHER, AuditData, data_digest, digests, write_stage
from kdlens.stages import Stages
from kdlens.subjects import Classifier

TEMPERATURE_NOTE = ("The temperature is fitted on the same split's logits and labels it is evaluated on, so "
                    "ece_temperature_scaled is optimistic: a lower bound on what a held-out fit would give.")
TEMPERATURE_BOUNDS = (0.01, 100.0)  # a fit that lands on a bound (near-chance model) sets temperature_at_bound
POOL_NOTE = ("Conv maps (n, C, H, W) are global-average-pooled over H, W to (n, C); token sequences (n, T, d) are "
             "averaged over T; (n, d) features are used as they are.")


def _check_data(data: AuditData, name: str) -> None:
    if not isinstance(data, AuditData):
        raise TypeError(f"Expected `{name}` to be an AuditData, but got {type(data).__name__}. "
                        f"Wrap it: AuditData(inputs, labels).")
    n = len(data.inputs)
    if n == 0:
        raise ValueError(f"Expected `{name}` to hold at least one example, but got 0. Pass a non-empty split.")
    if len(data.labels) != n:
        raise ValueError(f"Expected `{name}.labels` to have one label per input ({n}), but got {len(data.labels)}.")


def _check_models(teacher: nn.Module, students: dict[str, nn.Module], probe: torch.Tensor) -> dict[str, nn.Module]:
    """All models by name, teacher first, after checking names and class counts on a 2-example ``probe`` batch."""
    if TEACHER in students:
        raise ValueError(f"Expected student names other than {TEACHER!r}, but got {sorted(students)}. "
                         f"Rename the student.")
    models = {TEACHER: teacher, **students}
    widths = {name: Classifier(model, name).logits(probe[:2]).shape[-1] for name, model in models.items()}
    for name, width in widths.items():
        if width != widths[TEACHER]:
            raise ValueError(f"Expected student {name!r} to have the teacher's {widths[TEACHER]} classes, but got "
                             f"{width} classes. Teacher and students must share one label space.")
    return models


def _check_logits(logits: torch.Tensor, name: str, split: str) -> None:
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).any(-1).sum())
        raise ValueError(f"Expected model {name!r} to give finite logits on split {split!r}, but got NaN or inf "
                         f"on {bad} of {len(logits)} examples. Check the checkpoint and the input scaling.")


def _none_for_nan(values: torch.Tensor) -> list:
    return [None if math.isnan(v) else v for v in values.tolist()]


def _calibration(logits: torch.Tensor, labels: torch.Tensor, n_bins: int) -> dict:
    """Accuracy and calibration of one model on one split; the reliability curve as JSON-ready lists."""
    probs = logits.double().softmax(-1)  # (n, C); float64 so NLL does not meet float32 underflow
    with warnings.catch_warnings():  # an optimum outside the bounds is recorded below, not warned per model
        warnings.simplefilter("ignore", UserWarning)
        temperature = M.fit_temperature(logits, labels, bounds=TEMPERATURE_BOUNDS)
    curve = M.reliability_curve(probs, labels, n_bins=n_bins)
    return {"accuracy": float((logits.argmax(-1) == labels).double().mean()),
            "ece": M.expected_calibration_error(probs, labels, n_bins=n_bins, norm="l1"),
            "mce": M.expected_calibration_error(probs, labels, n_bins=n_bins, norm="max"),
            "brier": M.brier_score(probs, labels), "nll": M.negative_log_likelihood(probs, labels),
            "temperature": temperature, "temperature_at_bound": temperature in TEMPERATURE_BOUNDS,
            "ece_temperature_scaled": M.expected_calibration_error((logits.double() / temperature).softmax(-1),
                                                                   labels, n_bins=n_bins, norm="l1"),
            "reliability": {"confidence": _none_for_nan(curve.confidence), "accuracy": _none_for_nan(curve.accuracy),
                            "count": curve.count.tolist(), "edges": curve.edges.tolist()}}


def outputs_stage(run_dir: str | Path, teacher: nn.Module, students: dict[str, nn.Module],
                  splits: dict[str, AuditData], n_bins: int = 15, batch_size: int = 512) -> dict:
    """Accuracy, fidelity to the teacher and calibration of the teacher and every student on every split.

    Parameters
    ----------
    run_dir : the run directory (stage ``outputs``)
    teacher, students : the models; ``students`` maps names to modules (none may be called ``"teacher"``)
    splits : split name (``"test"``, ``"test_shifted"``, ...) -> AuditData; only inputs and labels are used
    n_bins : equal-width bins for ECE, MCE and the reliability curve
    batch_size : examples per forward pass (does not change the result)

    Notes
    -----
    ECE is top-label, l1, equal-width bins; MCE the largest per-bin gap over non-empty bins. KL is
    KL(p_teacher || p_student) and JS the Jensen-Shannon divergence, both in nats at temperature 1. The temperature
    is fitted on the same split it is evaluated on, so ``ece_temperature_scaled`` is optimistic; a fit that lands on
    a bound of ``TEMPERATURE_BOUNDS`` (a near-chance model) is returned with ``temperature_at_bound`` true.

    Returns
    -------
    dict: the stage summary recorded in the manifest: model -> split -> accuracy and ece (students also agreement
    and kl).

    Examples
    --------
    >>> import tempfile, torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> net, data = nn.Linear(4, 3), AuditData(torch.randn(32, 4), torch.randint(0, 3, (32,)))
    >>> summary = outputs_stage(tempfile.mkdtemp(), net, {"copy": net}, {"test": data})
    >>> summary["copy"]["test"]["agreement"], summary["copy"]["test"]["kl"]
    (1.0, 0.0)
    """
    if not splits:
        raise ValueError("Expected `splits` to name at least one split, but got none. Pass {'test': AuditData(...)}.")
    for split, data in splits.items():
        _check_data(data, f"splits[{split!r}]")
    models = _check_models(teacher, students, next(iter(splits.values())).inputs)
    inputs = {"stage": "outputs", "models": digests(models), "n_bins": n_bins,
              "data": {split: data_digest(data) for split, data in splits.items()}}
    folder = Path(run_dir) / "stages" / "outputs"

    def compute() -> dict:
        figures: dict = {"n_bins": n_bins, "binning": "width", "ece_norm": "l1", "divergence_units": "nats",
                         "kl_direction": "KL(teacher || student)", "temperature_note": TEMPERATURE_NOTE,
                         "models": list(models), "splits": {}}
        rows = []
        for split, data in splits.items():
            labels = data.labels.long()
            logits = {}
            for name, model in models.items():
                logits[name] = Classifier(model, name).logits(data.inputs, batch_size)  # (n, C) float32, CPU
                _check_logits(logits[name], name, split)
            entries = {}
            for name, z in logits.items():
                entry = _calibration(z, labels, n_bins)
                confidence, prediction = z.double().softmax(-1).max(-1)
                per_kl = agree = None
                if name != TEACHER:
                    agree = M.agreement(logits[TEACHER], z, reduction="none")  # (n,) bool
                    per_kl = M.kl_divergence(logits[TEACHER], z, reduction="none")  # (n,) float64, nats
                    entry.update(agreement=float(agree.double().mean()), kl=float(per_kl.mean()),
                                 js=M.js_divergence(logits[TEACHER], z))
                entries[name] = entry
                for i in range(len(labels)):
                    row = {"model": name, "split": split, "index": i, "label": int(labels[i]),
                           "prediction": int(prediction[i]), "confidence": float(confidence[i]),
                           "correct": bool(prediction[i] == labels[i])}
                    if name != TEACHER:
                        row.update(agree=bool(agree[i]), kl=float(per_kl[i]))
                    rows.append(row)
            figures["splits"][split] = {"n": len(labels), "models": entries}
        write_stage(folder, figures, rows)
        keys = ("accuracy", "agreement", "kl", "ece")
        return {name: {split: {k: figures["splits"][split]["models"][name][k] for k in keys
                               if k in figures["splits"][split]["models"][name]} for split in splits}
                for name in models}

    return Stages(run_dir).run("outputs", inputs, compute, folder=folder)


def _pooled(t: torch.Tensor) -> torch.Tensor:
    """(n, d) features: conv maps (n, C, H, W) global-average-pooled, sequences (n, T, d) averaged over T."""
    if t.ndim == 4:
        return t.mean(dim=(2, 3))  # (n, C)
    if t.ndim == 3:
        return t.mean(dim=1)  # (n, d)
    return t.reshape(t.shape[0], -1)  # (n, d)


def _features(model: nn.Module, name: str, inputs: torch.Tensor, layers: Sequence[str],
              batch_size: int) -> dict[str, torch.Tensor]:
    """Pooled activations of ``layers``, pooled batch by batch so full conv maps never pile up for all n."""
    subject = Classifier(model, name)
    parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for chunk in inputs.split(batch_size):
        _, acts = subject.run(chunk, layers, batch_size)
        for layer in layers:
            parts[layer].append(_pooled(acts[layer]).double())
    features = {layer: torch.cat(chunks) for layer, chunks in parts.items()}
    for layer, f in features.items():
        if not bool(torch.isfinite(f).all()):
            raise ValueError(f"Expected layer {layer!r} of model {name!r} to give finite activations, but got NaN "
                             f"or inf. Check the checkpoint and the input scaling.")
    return features


def representations_stage(run_dir: str | Path, teacher: nn.Module, students: dict[str, nn.Module], data: AuditData,
                          teacher_layers: list[str], student_layers: dict[str, list[str]],
                          batch_size: int = 256) -> dict:
    """Linear CKA between every teacher layer and every layer of each student, on ``data.inputs``.

    Parameters
    ----------
    run_dir : the run directory (stage ``representations``)
    teacher, students : the models; ``students`` maps names to modules
    data : AuditData; only the inputs are used
    teacher_layers : ``named_modules()`` names of the teacher's layers to compare
    student_layers : student name -> its layers to compare
    batch_size : examples per forward pass (does not change the result)

    Notes
    -----
    Conv maps (n, C, H, W) are global-average-pooled to (n, C) before CKA (position-free: teacher and student maps
    may differ in resolution); (n, T, d) are averaged over T. Biased (Kornblith et al. 2019) linear CKA.

    Returns
    -------
    dict: the stage summary recorded in the manifest: student -> ``cka_mean_best``, the mean over the student's
    layers of the CKA with its best-matching teacher layer.
    """
    _check_data(data, "data")
    missing = sorted(set(students) - set(student_layers))
    if missing:
        raise ValueError(f"Expected `student_layers` to list layers for every student, but got none for {missing}.")
    if not teacher_layers or any(not student_layers[name] for name in students):
        raise ValueError("Expected at least one teacher layer and one layer per student, but got an empty list.")
    if len(data.inputs) < 2:
        raise ValueError(f"Expected at least 2 examples for CKA, but got {len(data.inputs)}.")
    models = _check_models(teacher, students, data.inputs)
    for layer in teacher_layers:
        Classifier(teacher, TEACHER).resolve(layer)  # KeyError listing close names
    for name in students:
        for layer in student_layers[name]:
            Classifier(students[name], name).resolve(layer)
    layers = {TEACHER: list(teacher_layers), **{name: list(student_layers[name]) for name in students}}
    inputs = {"stage": "representations", "models": digests(models), "data": data_digest(data), "layers": layers,
              "kernel": "linear", "debiased": False, "pool": "global_average"}
    folder = Path(run_dir) / "stages" / "representations"

    def compute() -> dict:
        reference = _features(teacher, TEACHER, data.inputs, teacher_layers, batch_size)
        figures: dict = {"kernel": "linear", "debiased": False, "pool_note": POOL_NOTE, "n": len(data.inputs),
                         "teacher_layers": list(teacher_layers), "students": {}}
        for name, student in students.items():
            feats = _features(student, name, data.inputs, student_layers[name], batch_size)
            cka = M.cka_matrix(reference, feats)  # (teacher layers, student layers) float64
            best, where = cka.max(dim=0)  # over teacher layers, (student layers,)
            figures["students"][name] = {
                "student_layers": list(student_layers[name]), "cka": cka.tolist(),
                "best_teacher_layer": {layer: teacher_layers[int(i)] for layer, i in zip(feats, where, strict=True)},
                "best_cka": {layer: float(v) for layer, v in zip(feats, best, strict=True)},
                "cka_mean_best": float(best.mean())}
        io.atomic_write_json(folder / "figures.json", figures)
        return {name: {"cka_mean_best": entry["cka_mean_best"]} for name, entry in figures["students"].items()}

    return Stages(run_dir).run("representations", inputs, compute, folder=folder)
