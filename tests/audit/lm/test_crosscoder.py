"""The language-model audit's crosscoder stages on the tiny lab (issue 18): activations scaled to mean norm sqrt(d)
with the scale stored, the held-out FVE recomputed from the saved files, the loss recovered from its parts, the
unsteered traces equal to the audit's own, the cache (new analysis settings leave the training alone), and the
config checks."""

import numpy as np
import pytest
import torch

from kdlens import audit
from kdlens.audit.lm.config import LMAuditConfig
from kdlens.audit.lm.crosscoder import held_out, load_crosscoder, names
from kdlens.rundir import RunDir
from tests.audit.lm.labs import lab_config

CROSSCODER = {"base": "base_student", "n": 10, "training": {"epochs": 30, "k": 4, "batch_size": 256},
              "steering": {"latents": 2, "n": 4, "scales": [-2.0, 0.0, 2.0]}}


def crosscoder_config(recipe, run_dir, **changes) -> dict:
    config = lab_config(recipe, run_dir, students=["base_student", "seq_kd"])
    config["probes"]["crosscoder"] = {**CROSSCODER, **changes}
    return config


@pytest.fixture(scope="module")
def diffed(recipe, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("crosscoder") / "run"
    return run_dir, audit.run(crosscoder_config(recipe, run_dir), progress=False)


def test_activations_are_scaled_and_the_fit_is_what_the_files_say(diffed):
    run_dir, results = diffed
    run = RunDir(run_dir)
    made = run.stage(names("seq_kd")["activations"])
    figures, arrays = made.figures(), made.arrays()
    for key, scale, width in zip(("first", "second"), figures["scales"], figures["widths"], strict=True):
        norms = (arrays[key].double() * scale).norm(dim=1)
        assert float(norms.mean()) == pytest.approx(width ** 0.5, rel=1e-6)
    coder = load_crosscoder(run, "seq_kd")
    held = held_out(10, 0.1, 0)[arrays["text"] // 3].numpy()
    xs = [arrays[k].double().numpy()[held] * s for k, s in zip(("first", "second"), figures["scales"], strict=True)]
    with torch.no_grad():
        _, xhats = coder([torch.from_numpy(x).float() for x in xs])
    entry = results["crosscoder"]["seq_kd"]
    for m, (x, xh) in enumerate(zip(xs, xhats, strict=True)):
        fve = 1 - ((x - xh.double().numpy()) ** 2).sum(1).mean() / x.var(0).sum()
        assert entry["fit"]["fve"][m] == pytest.approx(fve, abs=1e-6)
    assert entry["fit"]["fve"][0] > 0.3 and entry["fit"]["fve"][1] > 0.3  # 30 epochs of a tiny lab
    assert sum(entry["classes"].values()) == run.stage("crosscoder-seq_kd").figures()["classes"]["live"]
    for side in ("base", "distilled"):
        inside = entry["inside"][side]
        gap = inside["zeroed"]["ce"] - inside["original"]["ce"]
        assert inside["loss_recovered"] == pytest.approx((inside["zeroed"]["ce"] - inside["spliced"]["ce"]) / gap)
        assert inside["spliced"]["kl"] >= 0 and inside["zeroed"]["kl"] > inside["spliced"]["kl"]
    assert "base_student" not in results["crosscoder"]  # the base is compared, not diffed against itself


def test_the_unsteered_traces_are_the_audits_own(diffed):
    run = RunDir(diffed[0])
    steered = run.stage(names("seq_kd")["steering"])
    own = [r["text"] for r in run.stage("generate-seq_kd").rows()]
    unsteered = [r for r in steered.rows() if r["latent"] is None]
    assert len(unsteered) == 4 and all(r["text"] == own[r["index"]] for r in unsteered)
    curves = steered.figures()["curves"]
    chosen = [c["latent"] for c in steered.figures()["latents"]]
    assert set(curves) == {"none", *map(str, chosen)}
    for latent in chosen:
        assert set(curves[str(latent)]) == {"-2.0", "2.0"}


def test_new_analysis_settings_leave_the_activations_and_training_alone(diffed, recipe):
    run_dir, _ = diffed
    run = RunDir(run_dir)
    trained = run.stage(names("seq_kd")["train"]).file("arrays.safetensors").stat().st_mtime_ns
    before = run.manifest()["stages"][names("seq_kd")["analysis"]]["inputs"]
    audit.run(crosscoder_config(recipe, run_dir, contexts=3, steering={"latents": 0}), progress=False)
    assert run.stage(names("seq_kd")["train"]).file("arrays.safetensors").stat().st_mtime_ns == trained
    assert run.manifest()["stages"][names("seq_kd")["analysis"]]["inputs"] != before
    latents = run.stage(names("seq_kd")["analysis"]).figures()["latents"]
    assert all(len(e.get("contexts", [])) <= 3 for side in latents.values() for e in side)
    assert run.stage(names("seq_kd")["steering"]).figures() is None  # steering off: its stage is gone


def test_the_base_and_the_compared_students_are_checked(tmp_path):
    students = {"base_student": {"lab": "lm"}, "seq_kd": {"lab": "lm"}}
    with pytest.raises(ValueError, match="probes.crosscoder.base is 'base_studnt', which is none of the students"
                                         ".*Did you mean 'base_student'"):
        LMAuditConfig(run_dir=str(tmp_path), students=students, probes={"crosscoder": {"base": "base_studnt"}})
    with pytest.raises(ValueError, match="probes.crosscoder.students names 'base_student', which is the base itself"):
        LMAuditConfig(run_dir=str(tmp_path), students=students,
                      probes={"crosscoder": {"base": "base_student", "students": ["base_student"]}})
    with pytest.raises(ValueError, match="low .* must be below high"):
        LMAuditConfig(run_dir=str(tmp_path), students=students,
                      probes={"crosscoder": {"base": "base_student", "low": 0.8}})
    with pytest.raises(ValueError, match="steering.scales must include 0.0"):
        LMAuditConfig(run_dir=str(tmp_path), students=students,
                      probes={"crosscoder": {"base": "base_student", "steering": {"scales": [1.0, 2.0]}}})
    assert np.isclose(held_out(10, 0.1, 0).sum(), 1)
