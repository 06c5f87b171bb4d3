"""The classifier audit's "outputs" stage: what each model predicts, and how well it knows when it is right.

It writes, under ``stages/outputs/``:

- ``figures.json``: per split, per model: accuracy, calibration (ECE, MCE, Brier, NLL, temperature-scaled ECE and
  the fitted temperature) and the reliability curve; for students, agreement with the teacher, KL and JS;
- ``rows.jsonl``: one row per (model, split, example): label, prediction, confidence, correct, and for students
  agree and the per-example KL(teacher || student).

Sharded: ``map`` over runs of whole batches (logits, streaming calibration sums and agreement counts), ``reduce``
merging them. It validates what it is given (non-empty data, matching class counts) when the stage is built, before
any long work.
"""

from __future__ import annotations

import torch
from torch import nn

from kdlens.audit.common import TEACHER, data_digest, digests
from kdlens.probes import outputs as P
from kdlens.rundir import StageOutput
from kdlens.stages import Shard, Stage, batch_spans
from kdlens.subjects import Classifier
from kdlens.tasks.files import EvalSplit
from kdlens.validation import fail

SHARD_BATCHES = 8  # most batches per shard: shards start on batch boundaries, so sharding never changes a batch


def check_split(data: EvalSplit, name: str) -> None:
    """Raise unless ``data`` is a non-empty EvalSplit with one label per input."""
    if not isinstance(data, EvalSplit):
        fail(name, "an EvalSplit", type(data).__name__, "Wrap it: EvalSplit(inputs, labels).", error=TypeError)
    n = len(data.inputs)
    if n == 0:
        raise ValueError(f"Expected `{name}` to hold at least one example, but got 0. Pass a non-empty split.")
    if len(data.labels) != n:
        raise ValueError(f"Expected `{name}.labels` to have one label per input ({n}), but got {len(data.labels)}.")


def check_models(teacher: nn.Module, students: dict[str, nn.Module], probe: torch.Tensor) -> dict[str, nn.Module]:
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


def shards(n: int, batch_size: int, split: str = "") -> list[Shard]:
    """Runs of at most ``SHARD_BATCHES`` whole batches covering ``n`` examples (of ``split``)
    (:func:`kdlens.stages.batch_spans`)."""
    return batch_spans(n, batch_size, SHARD_BATCHES, split)


def outputs_stage(teacher: nn.Module, students: dict[str, nn.Module], splits: dict[str, EvalSplit],
                  n_bins: int = 15, batch_size: int = 512) -> Stage:
    """Accuracy, fidelity to the teacher and calibration of the teacher and every student on every split.

    Parameters
    ----------
    teacher, students : the models; ``students`` maps names to modules (none may be called ``"teacher"``)
    splits : split name (``"test"``, ``"test_shifted"``, ...) -> EvalSplit; only inputs and labels are used
    n_bins : equal-width bins for ECE, MCE and the reliability curve
    batch_size : examples per forward pass (does not change the result)

    Returns
    -------
    Stage ``outputs``; its summary: model -> split -> accuracy and ece (students also agreement and kl). See
    :func:`kdlens.probes.outputs.output_figures` for the definitions.

    Examples
    --------
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from kdlens.stages import run_stage
    >>> torch.manual_seed(0) and None
    >>> net, data = nn.Linear(4, 3), EvalSplit(torch.randn(32, 4), torch.randint(0, 3, (32,)))
    >>> summary = run_stage(tempfile.mkdtemp(), outputs_stage(net, {"copy": net}, {"test": data}))
    >>> summary["copy"]["test"]["agreement"], summary["copy"]["test"]["kl"]
    (1.0, 0.0)
    """
    if not splits:
        raise ValueError("Expected `splits` to name at least one split, but got none. Pass {'test': EvalSplit(...)}.")
    for split, data in splits.items():
        check_split(data, f"splits[{split!r}]")
    models = check_models(teacher, students, next(iter(splits.values())).inputs)
    inputs = {"stage": "outputs", "models": digests(models), "n_bins": n_bins,
              "data": {split: data_digest(data) for split, data in splits.items()}}
    work = [shard for split, data in splits.items() for shard in shards(len(data.inputs), batch_size, split)]

    def map_shard(shard: Shard, _) -> dict:
        data, part = splits[shard.split], slice(shard.start, shard.stop)
        return P.shard_outputs(models, data.inputs[part], data.labels[part], shard.split, n_bins, batch_size)

    def reduce(states: list[dict], _) -> StageOutput:
        figures: dict = {"n_bins": n_bins, "binning": "width", "ece_norm": "l1", "divergence_units": "nats",
                         "kl_direction": "KL(teacher || student)", "temperature_note": P.TEMPERATURE_NOTE,
                         "models": list(models), "splits": {}}
        rows = []
        for split, data in splits.items():
            mine = [state for shard, state in zip(work, states, strict=True) if shard.split == split]
            entries, logits = P.output_figures(mine, list(models), data.labels, n_bins)
            figures["splits"][split] = {"n": len(data.labels), "models": entries}
            figures["n_classes"] = int(logits[TEACHER].shape[-1])
            rows += P.example_rows(logits, data.labels, split)
        keys = ("accuracy", "agreement", "kl", "ece")
        summary = {name: {split: {k: figures["splits"][split]["models"][name][k] for k in keys
                                  if k in figures["splits"][split]["models"][name]} for split in splits}
                   for name in models}
        return StageOutput(figures=figures, rows=rows, summary=summary)

    return Stage("outputs", inputs, shards=work, map=map_shard, reduce=reduce,
                 examples={split: len(data.inputs) for split, data in splits.items()})
