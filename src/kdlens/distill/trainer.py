"""Distilling classifiers: one student, an optional frozen teacher, a strategy, and a run directory.

:func:`train` draws batches of (inputs, labels), runs the strategy's teacher and student passes and its loss; the
loop (``loop.py``) does the rest: deterministic epoch orders, checkpoints at every epoch end (or every
``checkpoint_every`` steps), and resuming from the last one when ``train`` is called again on the same directory.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from kdlens import io
from kdlens import validation as C
from kdlens.distill import loop
from kdlens.distill import losses as L
from kdlens.distill.config import StrategyConfig, TrainConfig
from kdlens.distill.loop import RUN_SETTINGS, Position, Step
from kdlens.distill.strategy import Outputs, Strategy
from kdlens.measures import agreement
from kdlens.subjects import Classifier, save_classifier
from kdlens.subjects.checkpoint import architecture_path

INPUT_KEYS, LABEL_KEYS = ("image", "images", "input", "inputs", "x"), ("label", "labels", "y", "target")


def as_tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) of a dataset: a (inputs, labels) pair, an object with ``images``/``labels`` tensors, or
    any map-style Dataset whose items are (x, y) tuples or dicts with an input and a label key."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0], data[1]
    if isinstance(getattr(data, "images", None), torch.Tensor) and isinstance(getattr(data, "labels", None),
                                                                              torch.Tensor):
        return data.images, data.labels
    if not isinstance(data, Dataset):
        C.fail("data", "a (inputs, labels) pair of tensors or a torch Dataset", type(data).__name__, error=TypeError)
    xs, ys = [], []
    for i in range(len(data)):
        item = data[i]
        if isinstance(item, dict):
            x = next((item[k] for k in INPUT_KEYS if k in item), None)
            y = next((item[k] for k in LABEL_KEYS if k in item), None)
            if x is None or y is None:
                C.fail("data[i]", f"a dict with an input key {INPUT_KEYS} and a label key {LABEL_KEYS}",
                       f"keys {sorted(item)}")
        else:
            x, y = item
        xs.append(torch.as_tensor(x))
        ys.append(torch.as_tensor(y))
    return torch.stack(xs), torch.stack(ys).long()


@dataclass
class TrainResult:
    """Where the run put its model, and what it measured at each epoch."""

    run_dir: Path
    model_dir: Path
    history: list[dict]
    seconds: float

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def _attribution_maps(term, model: Classifier, inputs: torch.Tensor, labels: torch.Tensor, outputs: Outputs,
                      create_graph: bool, layer: str | None) -> torch.Tensor:
    score = outputs.logits.gather(1, labels[:, None]).squeeze(1)  # (B,) logit of the true class
    if term.method == "gradcam":
        return L.gradcam_map(score, outputs.acts[layer], create_graph=create_graph)
    return L.input_gradient_map(score, inputs, create_graph=create_graph)


def _teacher_outputs(teacher: Classifier, strategy: Strategy, x: torch.Tensor, y: torch.Tensor) -> Outputs:
    """The frozen teacher's logits, the activations the strategy pairs, and its attribution map, all detached."""
    term = strategy.attribution
    with torch.set_grad_enabled(term is not None):
        # a frozen teacher's activations join the autograd graph only through an input that requires grad
        xt = x.detach().requires_grad_(term is not None)
        with teacher.capture(strategy.teacher_layers, detach=term is None) as acts:
            logits = teacher.forward(xt)
        out = Outputs(logits, dict(acts))
        if term is not None:
            layer = term.pairs[0].teacher if term.method == "gradcam" else None
            out.maps["attribution"] = _attribution_maps(term, teacher, xt, y, out, False, layer)
    return Outputs(out.logits.detach(), {k: v.detach() for k, v in out.acts.items()},
                   {k: v.detach() for k, v in out.maps.items()})


def _teacher_table(teacher: Classifier, strategy: Strategy, x_all: torch.Tensor, y_all: torch.Tensor,
                   config: TrainConfig, device: torch.device) -> Outputs | None:
    """The teacher's outputs for every training example, computed once, when they fit in ``teacher_cache_mb``.

    Exact, not an approximation: the teacher is frozen in eval mode, so what it says about an example does not
    depend on the batch the example lands in. Saves a teacher forward (and backward, for attribution) per step.
    """
    if config.teacher_cache_mb <= 0:
        return None
    probe = _teacher_outputs(teacher, strategy, x_all[:1].to(device), y_all[:1].to(device))
    tensors = [probe.logits, *probe.acts.values(), *probe.maps.values()]
    if sum(t.numel() * t.element_size() for t in tensors) * len(x_all) > config.teacher_cache_mb * 2**20:
        return None
    parts = [_teacher_outputs(teacher, strategy, x.to(device), y.to(device))
             for x, y in zip(x_all.split(config.batch_size), y_all.split(config.batch_size), strict=True)]
    return Outputs(torch.cat([p.logits for p in parts]), {k: torch.cat([p.acts[k] for p in parts]) for k in probe.acts},
                   {k: torch.cat([p.maps[k] for p in parts]) for k in probe.maps})


def _add_noise(logits: torch.Tensor, config: TrainConfig, step: int) -> torch.Tensor:
    """The teacher-signal ablation: logits + sigma * N(0, 1), the noise fixed by (seed, step) so a resumed run
    draws the same."""
    if config.teacher_noise == 0:
        return logits
    generator = torch.Generator().manual_seed(config.seed * 7_919 + step)
    return logits + config.teacher_noise * torch.randn(logits.shape, generator=generator).to(logits.device)


def _student_outputs(student: Classifier, strategy: Strategy, x, y) -> Outputs:
    term = strategy.attribution
    xs = x.detach().requires_grad_(term is not None and term.method == "input_gradient")
    with student.capture(strategy.student_layers, detach=False) as acts:
        logits = student.forward(xs)
    out = Outputs(logits, dict(acts))
    if term is not None:
        layer = term.pairs[0].student if term.method == "gradcam" else None
        out.maps["attribution"] = _attribution_maps(term, student, xs, y, out, True, layer)
    return out


@torch.no_grad()
def evaluate(student: Classifier, teacher: Classifier | None, eval_data: dict, batch_size: int = 512,
             teacher_logits: dict[str, torch.Tensor] | None = None) -> dict:
    """Accuracy of the student on each split, and its top-1 agreement with the teacher where there is one.

    ``teacher_logits`` (split name to (n, C) logits) stands in for running the teacher again on a split.
    """
    metrics = {}
    for split, data in eval_data.items():
        x, y = as_tensors(data)
        s_logits = student.logits(x, batch_size)
        metrics[f"{split}/accuracy"] = float((s_logits.argmax(-1) == y).double().mean())
        if teacher_logits is not None and split in teacher_logits:
            metrics[f"{split}/agreement"] = agreement(teacher_logits[split], s_logits)
        elif teacher is not None:
            metrics[f"{split}/agreement"] = agreement(teacher.logits(x, batch_size), s_logits)
    return metrics


def train(student: nn.Module, data, run_dir: str | Path, strategy: StrategyConfig | Strategy,
          config: TrainConfig = TrainConfig(), teacher: nn.Module | None = None, eval_data: dict | None = None,
          student_kwargs: dict | None = None) -> TrainResult:
    """Distil ``teacher`` into ``student`` on ``data`` (or train on labels alone when the strategy needs no teacher).

    Parameters
    ----------
    student : nn.Module returning (B, C) logits; trained in place
    data : (inputs, labels) tensors, or a Dataset (see :func:`as_tensors`)
    run_dir : folder for checkpoints, history.json and the final model (``model/``); an existing run resumes
    strategy : StrategyConfig or Strategy
    config : TrainConfig
    teacher : frozen nn.Module (put in eval mode, gradients off); required when the strategy uses one
    eval_data : dict of split name to data, evaluated every ``config.eval_every`` epochs and after the last
    student_kwargs : constructor arguments of the student, saved so ``load_classifier`` can rebuild it

    Returns
    -------
    TrainResult with the per-epoch history (loss terms, accuracy and agreement per eval split)
    """
    start_time = time.perf_counter()
    run_dir = Path(run_dir)
    strategy = strategy if isinstance(strategy, Strategy) else Strategy(strategy)
    if strategy.needs_teacher and teacher is None:
        C.fail("teacher", f"a model (strategy {strategy.config.name!r} distils from one)", "None",
               "Pass teacher=..., or use a labels-only strategy.")
    x_all, y_all = as_tensors(data)
    if x_all.is_floating_point() and not bool(torch.isfinite(x_all).all()):
        bad = (~torch.isfinite(x_all)).flatten(1).any(1)  # (n,) examples holding a NaN or inf
        C.fail("data", "finite inputs", f"NaN or inf in {int(bad.sum())} examples (the first at index "
               f"{int(bad.nonzero()[0])})", "Clean or drop those examples before training.")
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    student.to(device).train()
    student_subject = Classifier(student, "student")
    teacher_subject = None
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)
        teacher_subject = Classifier(teacher, "teacher")
    strategy.setup(teacher_subject, student_subject, x_all[: min(8, len(x_all))].to(device))
    strategy.to(device)

    n = x_all.shape[0]
    steps_per_epoch = n // config.batch_size if config.drop_last else math.ceil(n / config.batch_size)
    last_batch = n - (steps_per_epoch - 1) * config.batch_size
    if steps_per_epoch == 0:
        C.fail("data", f"at least one whole batch of {config.batch_size} examples (drop_last is on)", f"{n} examples",
               "Lower batch_size, or turn drop_last off.")
    if last_batch < strategy.min_batch:
        C.fail("data", f"batches of at least {strategy.min_batch} examples (strategy {strategy.config.name!r} "
               "compares examples within a batch)",
               f"{n} examples in batches of {config.batch_size}, the last holding {last_batch}",
               "Set drop_last=True in the train config, or choose a batch_size that divides the data better.")
    eval_data = eval_data or {}
    eval_teacher = {split: teacher_subject.logits(as_tensors(data)[0]) for split, data in eval_data.items()} \
        if teacher_subject is not None else None  # the frozen teacher's eval logits never change: once is enough

    def step(index: torch.Tensor, table: Outputs | None, at: Position) -> Step:
        x, y = x_all[index].to(device), y_all[index].to(device)  # (B, ...), (B,)
        t_out = None
        if strategy.needs_teacher:
            t_out = table.select(index.to(device)) if table is not None else _teacher_outputs(
                teacher_subject, strategy, x, y)
            t_out.logits = _add_noise(t_out.logits, config, at.global_step)
        s_out = _student_outputs(student_subject, strategy, x, y)
        if not bool(torch.isfinite(s_out.logits).all()):
            C.fail("loss", "finite", f"NaN or inf student logits at epoch {at.epoch}, step {at.step}",
                   "Training diverged: lower the learning rate (or check the inputs for NaN).")
        loss, parts = strategy.loss(t_out, s_out, y)
        return Step(loss, parts, {"acc": float((s_out.logits.argmax(-1) == y).double().mean())})

    def evaluate_epoch() -> dict:
        student.eval()
        metrics = evaluate(student_subject, None, eval_data, teacher_logits=eval_teacher)
        student.train()
        return metrics

    # what the weights depend on; device, progress bars and the teacher cache change only how fast they come
    fingerprint = io.stable_hash({"strategy": strategy.config.model_dump(mode="json"), "n": n,
                                  "train": config.model_dump(mode="json", exclude=RUN_SETTINGS)})
    table = functools.partial(_teacher_table, teacher_subject, strategy, x_all, y_all, config, device)
    history = loop.run(loop.Training(
        modules={"student": student, "strategy": strategy}, fingerprint=fingerprint,
        fingerprint_of="another strategy, training config or data size", steps_per_epoch=steps_per_epoch,
        order=lambda seed: torch.randperm(n, generator=torch.Generator().manual_seed(seed)), step=step,
        cache=table if strategy.needs_teacher else None, evaluate=evaluate_epoch, summary="last",
        description=f"distil {strategy.config.name}"), config, run_dir)

    student.eval()
    model_dir = save_classifier(student, run_dir / "model", student_kwargs or {},
                                strategy=strategy.config.name, history=history)
    io.atomic_write_json(run_dir / "train.json", {"strategy": strategy.config.model_dump(mode="json"),
                                                  "train": config.model_dump(mode="json"),
                                                  "student": architecture_path(type(student))})
    return TrainResult(run_dir, model_dir, history, time.perf_counter() - start_time)
