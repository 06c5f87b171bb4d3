"""The training loop on its own, driven by a third trainer: least-squares regression of a linear module."""

import math

import pytest
import torch
from torch import nn

from kdlens.distill import loop
from kdlens.distill.config import TrainConfig
from kdlens.distill.loop import Step, Training, learning_rate


class Killed(Exception):
    pass


def regression(n=50, seed=0):
    """(n, 3) inputs and (n, 1) targets of a noisy linear map."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g)


def regressor(x, y, seed=0, kill_at=None, summary="mean", calls=None, fingerprint=None):
    """A Training that fits nn.Linear(3, 1) to (x, y); its step draws from the global RNG (input noise), so an
    exact resume needs the RNG restored too. Raises Killed at global step ``kill_at``."""
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    calls = calls if calls is not None else {}

    def step(index, cache, at):
        if at.global_step == kill_at:
            raise Killed
        noisy = x[index] + 0.01 * torch.randn(len(index), 3)  # (B, 3)
        error = model(noisy) - y[index]  # (B, 1)
        return Step((error ** 2).mean(), {"mae": float(error.detach().abs().mean())})

    def cache():
        calls["cache"] = calls.get("cache", 0) + 1

    def evaluate():
        calls["evaluate"] = calls.get("evaluate", 0) + 1
        with torch.no_grad():
            return {"mse": float(((model(x) - y) ** 2).mean())}

    return model, Training(modules={"model": model}, fingerprint=fingerprint or {"n": len(x)},
                           fingerprint_of="another toy regression", steps_per_epoch=math.ceil(len(x) / 8),
                           order=lambda s: torch.randperm(len(x), generator=torch.Generator().manual_seed(s)),
                           step=step, cache=cache, evaluate=evaluate, summary=summary, description="regress")


def config(**kw):
    return TrainConfig(**{"epochs": 3, "batch_size": 8, "lr": 0.3, "warmup_steps": 2, "checkpoint_every": 4,
                          "progress": False, **kw})


@pytest.mark.parametrize("kill_at", [5, 7, 13])  # 7 steps an epoch: mid-epoch 1, the first and the last of epoch 2
@pytest.mark.parametrize("summary", ["mean", "last"])
def test_a_run_killed_at_step_k_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, kill_at, summary):
    x, y = regression()
    model, training = regressor(x, y, summary=summary)
    history = loop.run(training, config(), tmp_path / "whole")
    assert [r["epoch"] for r in history] == [1, 2, 3] and history[-1]["step"] == 21
    assert history[-1]["mse"] < 0.5 * history[0]["mse"]

    _, dying = regressor(x, y, kill_at=kill_at, summary=summary)
    with pytest.raises(Killed):
        loop.run(dying, config(), tmp_path / "resumed")
    torch.manual_seed(99)  # a fresh process: other global RNG state
    fresh, training = regressor(x, y, seed=1, summary=summary)  # other initial weights: all from the checkpoint
    resumed = loop.run(training, config(), tmp_path / "resumed")
    assert torch.equal(fresh.weight, model.weight) and torch.equal(fresh.bias, model.bias)
    assert resumed == history
    for name in ("optimizer.safetensors", "rng.safetensors", "model.safetensors"):
        a, b = (tmp_path / run / "checkpoints" / "step-00000021" / name for run in ("whole", "resumed"))
        assert a.read_bytes() == b.read_bytes(), name


def test_the_epoch_record_holds_the_mean_or_the_last_terms(tmp_path):
    x, y = regression(16)
    records = {summary: loop.run(regressor(x, y, summary=summary)[1], config(epochs=1), tmp_path / summary)[0]
               for summary in ("mean", "last")}
    assert set(records["mean"]) == {"epoch", "step", "loss", "mae", "mse"}
    assert records["mean"]["mse"] == records["last"]["mse"]  # the same run, summarised two ways
    assert records["mean"]["loss"] != records["last"]["loss"]


def test_a_run_dir_holding_another_run_is_refused_and_run_settings_do_not_count(tmp_path):
    x, y = regression(16)
    loop.run(regressor(x, y)[1], config(epochs=1), tmp_path)
    with pytest.raises(ValueError, match=r"Expected `run_dir` to be a new folder or one holding this same run, but "
                                         r"got .*, which holds a checkpoint of a run with another toy regression\. "
                                         r"Use a new run_dir, or delete its checkpoints/"):
        loop.run(regressor(x, y, fingerprint={"n": 17})[1], config(epochs=1), tmp_path)
    # how it runs is not what it computes: the same fingerprint resumes (here: finds the run done)
    calls = {}
    history = loop.run(regressor(x, y, calls=calls)[1], config(epochs=1, checkpoint_every=1), tmp_path)
    assert [r["epoch"] for r in history] == [1] and calls == {}  # nothing left: no cache, no evaluation


def test_the_cache_is_built_once_and_evaluation_runs_on_the_epochs_due(tmp_path):
    x, y = regression(16)
    calls = {}
    history = loop.run(regressor(x, y, calls=calls)[1], config(epochs=5, eval_every=2), tmp_path)
    assert calls == {"cache": 1, "evaluate": 3}  # epochs 2, 4 and the last
    assert ["mse" in r for r in history] == [False, True, False, True, True]


def test_a_diverging_loss_stops_the_run_with_the_cause(tmp_path):
    x, y = regression(16)
    with pytest.raises(ValueError, match=r"Expected `loss` to be finite, but got (nan|inf) at epoch \d, step \d"):
        loop.run(regressor(x, y)[1], config(lr=1e30, warmup_steps=0), tmp_path)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
@pytest.mark.parametrize("warmup", [0, 1, 5])
def test_the_learning_rate_follows_warmup_then_the_schedule(schedule, warmup):
    """Against torch's schedulers: LinearLR for the warmup, CosineAnnealingLR (eta_min 0) after it."""
    lr, total = 0.3, 40
    cfg = TrainConfig(lr=lr, schedule=schedule, warmup_steps=warmup)
    expected = []
    if warmup:
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
        warm = torch.optim.lr_scheduler.LinearLR(opt, 1 / warmup, 1.0, total_iters=max(1, warmup - 1))
        for _ in range(warmup):
            expected.append(opt.param_groups[0]["lr"])
            opt.step()
            warm.step()
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup)
    for _ in range(total - warmup + 1):
        expected.append(opt.param_groups[0]["lr"] if schedule == "cosine" else lr)
        opt.step()
        cosine.step()
    got = [learning_rate(cfg, step, total) for step in range(total + 1)]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert learning_rate(cfg, total + 7, total) == pytest.approx(0.0 if schedule == "cosine" else lr, abs=1e-12)


def test_the_run_applies_the_schedule_to_the_optimiser(tmp_path):
    """With plain SGD on loss = w (gradient 1), each update moves w by exactly that step's learning rate."""
    weight = nn.Parameter(torch.zeros(()))
    module = nn.Module()
    module.weight = weight
    training = Training(modules={"w": module}, fingerprint={}, fingerprint_of="another run", steps_per_epoch=4,
                        order=lambda s: torch.arange(4), step=lambda index, cache, at: Step(weight * 1.0, {}))
    cfg = TrainConfig(epochs=2, batch_size=1, lr=0.1, optimizer="sgd", momentum=0.0, weight_decay=0.0,
                      warmup_steps=3, progress=False)
    loop.run(training, cfg, tmp_path)
    expected = -sum(learning_rate(cfg, step, 8) for step in range(8))
    assert float(weight.detach()) == pytest.approx(expected, rel=1e-6)
