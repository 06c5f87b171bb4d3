"""The training loop every trainer runs: resume, checkpoints, learning-rate schedule, progress, epoch records.

A trainer (classifiers in ``trainer.py``, causal LMs in ``lm.py``) describes its run as a :class:`Training`: the
modules it trains, what their weights depend on (the fingerprint), how an epoch orders the examples, and one
``step`` that turns a batch's example indices into a loss. :func:`run` does the rest::

    history = loop.run(Training(modules={"student": model}, fingerprint=..., steps_per_epoch=8,
                                order=lambda seed: torch.randperm(n, generator=torch.Generator().manual_seed(seed)),
                                step=lambda index, cache, at: Step(loss_of(index), {})), config, run_dir)

Deterministic given ``config.seed``: epoch ``e`` orders the examples from seed ``config.seed * 100_003 + e``, so a
resumed run sees exactly the batches it would have seen. A checkpoint (see ``checkpoints.py``) holds the modules,
the optimiser, the global RNG and the loop position; it is written at every epoch end (and every
``checkpoint_every`` steps), and ``run`` on the same directory resumes from the last one to the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from kdlens import io
from kdlens.distill import checkpoints
from kdlens.distill.config import TrainConfig
from kdlens.validation import fail

# how a run goes, not what it computes: left out of fingerprints and recipe hashes
RUN_SETTINGS = {"progress", "device", "teacher_cache_mb", "checkpoint_every", "eval_every"}


class Position(NamedTuple):
    """Where a step falls: its epoch, its index within the epoch and the optimiser updates before it (all from 0)."""

    epoch: int
    step: int
    global_step: int


class Step(NamedTuple):
    """What one step computed: the loss to minimise, its terms for the epoch record, and values for the bar only."""

    loss: torch.Tensor  # () scalar
    terms: dict[str, float]  # e.g. {"kd": 0.31, "hard_label": 0.12}
    shown: dict[str, float] | None = None  # e.g. {"acc": 0.9}, shown beside the loss, never recorded


@dataclass
class Training:
    """What differs between trainers; :func:`run` owns everything else.

    modules : what is trained, by name; each is checkpointed as ``<name>.safetensors`` and the optimiser updates
        their parameters in this order
    fingerprint : JSON value of what the weights depend on (never the ``RUN_SETTINGS``); a run directory whose
        checkpoint holds another is refused
    fingerprint_of : what the fingerprint covers, in words, for that error ("another strategy, ... or data size")
    steps_per_epoch : optimiser updates per epoch
    order : epoch seed -> (n,) int64 order of the examples; consecutive ``batch_size`` chunks are the batches
    step : (index (B,) int64, cache, Position) -> Step; the forward pass and loss of the batch ``index``
    cache : built once before the first step (after a resume), passed to every step: a frozen teacher's outputs
        for the whole training set, or None when they do not fit
    evaluate : () -> metrics, merged into the record of each epoch due for evaluation (``eval_every``, the last)
    summary : the loss terms an epoch records: the last step's, or the mean over the epoch's steps
    description : the progress bar's label
    """

    modules: dict[str, nn.Module]
    fingerprint: Any
    fingerprint_of: str
    steps_per_epoch: int
    order: Callable[[int], torch.Tensor]
    step: Callable[[torch.Tensor, Any, Position], Step]
    cache: Callable[[], Any] | None = None
    evaluate: Callable[[], dict] | None = None
    summary: Literal["last", "mean"] = "last"
    description: str = "train"


def run(training: Training, config: TrainConfig, run_dir: str | Path) -> list[dict]:
    """Train ``training.modules`` for ``config.epochs`` epochs in ``run_dir``, resuming its last checkpoint.

    Returns the history, one record per epoch (``epoch``, ``step``, ``loss`` and the summarised terms, the
    evaluation's metrics where due), also written to ``run_dir/history.json``. The modules are left in the mode
    the trainer set; saving the final model is the trainer's.
    """
    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    optimizer = _optimizer([p for module in training.modules.values() for p in module.parameters()], config)
    total = training.steps_per_epoch * config.epochs
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "history": [], "fingerprint": training.fingerprint}
    resumed = checkpoints.latest(checkpoint_dir)
    if resumed is not None:
        if io.read_json(resumed / "state.json").get("fingerprint") != training.fingerprint:
            fail("run_dir", "a new folder or one holding this same run", f"{run_dir}, which holds a checkpoint "
                 f"of a run with {training.fingerprint_of}",
                 "Use a new run_dir, or delete its checkpoints/ folder to start this one over.")
        state = checkpoints.restore(resumed, training.modules, optimizer)
    cache = training.cache() if training.cache is not None and state["global_step"] < total else None
    from kdlens.progress import progress_bar  # local: rich is only needed when training

    with progress_bar(config.progress, training.description, total=total, completed=state["global_step"]) as bar:
        for epoch in range(state["epoch"], config.epochs):
            order = training.order(config.seed * 100_003 + epoch)  # (n,)
            # the epoch's terms so far: a checkpoint written mid-epoch carries them
            sums: dict[str, float] = state.pop("sums", {})
            last: dict[str, float] = state.pop("last", {})
            for step in range(state["step_in_epoch"], training.steps_per_epoch):
                index = order[step * config.batch_size:(step + 1) * config.batch_size]  # (B,)
                loss, terms, shown = training.step(index, cache, Position(epoch, step, state["global_step"]))
                if not torch.isfinite(loss):
                    fail("loss", "finite", f"{float(loss.detach())} at epoch {epoch}, step {step} (terms {terms})",
                         "Lower the learning rate or the weight of the term that diverged.")
                optimizer_step(optimizer, loss, config, state, step, total)
                last = {"loss": float(loss.detach()), **terms}
                for key, value in last.items():
                    sums[key] = sums.get(key, 0.0) + value
                bar.advance(loss=last["loss"], **(shown or {}))
                if config.checkpoint_every and state["global_step"] % config.checkpoint_every == 0:
                    checkpoints.save(checkpoint_dir, state["global_step"], training.modules, optimizer,
                                     {**state, "sums": sums, "last": last})
            means = {k: v / training.steps_per_epoch for k, v in sums.items()}
            due = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
            metrics = training.evaluate() if due and training.evaluate is not None else {}
            record = {"epoch": epoch + 1, "step": state["global_step"],
                      **(last if training.summary == "last" else means), **metrics}
            state["history"].append(record)
            bar.log(record)
            state.update(epoch=epoch + 1, step_in_epoch=0)
            checkpoints.save(checkpoint_dir, state["global_step"], training.modules, optimizer, state)
    io.atomic_write_json(run_dir / "history.json", state["history"])
    return state["history"]


def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate of update ``step`` (from 0) of ``total``: linear warmup over ``warmup_steps`` to
    ``config.lr``, then constant or a half cosine down to 0 at ``total``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, config: TrainConfig, state: dict, step: int,
                   total: int) -> None:
    """One update at the schedule's learning rate; advances the loop position in ``state``."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, state["global_step"], total)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    state["global_step"] += 1
    state["step_in_epoch"] = step + 1


def _optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
