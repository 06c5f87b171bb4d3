"""The examples a reviewer should look at, with what the report needs to draw them without any model.

For each student, up to ``per_kind`` examples of each telling kind, read off the other stages' per-example tables:

- ``right_for_wrong_reasons``: correct, but its map is not the teacher's (lowest Spearman first);
- ``disagreement``: the student's answer differs from the teacher's (largest KL first);
- ``cue_flip``: the student changed its answer when only the spurious cue was edited.

Writes ``stages/gallery/figures.json`` (the entries) and ``stages/gallery/arrays.safetensors`` (``images`` as
uint8 (k, C, H, W), ``counterfactuals`` for cue flips, ``maps.<model>`` (k, h, w) for the teacher and each student).
Not sharded: it reads the other stages' finished tables.
"""

from __future__ import annotations

import torch

from kdlens.audit.common import TEACHER, data_digest
from kdlens.rundir import RunDir, StageOutput
from kdlens.stages import Stage
from kdlens.tasks.files import EvalSplit

KINDS = ("right_for_wrong_reasons", "disagreement", "cue_flip")


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    """(k, C, H, W) images for display: [0, 1] data as is, anything else min-max scaled per image."""
    x = images.double()
    if x.min() < 0 or x.max() > 1:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        high = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - low) / (high - low).clamp_min(1e-12)
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def _pick(run: RunDir, students: list[str], primary: str, per_kind: int) -> list[dict]:
    attribution = [r for r in run.stage("attribution").rows() if r["model"] in students]
    outputs = [r for r in run.stage("outputs").rows() if r["split"] == primary]
    teacher_prediction = {r["index"]: r["prediction"] for r in outputs if r["model"] == TEACHER}
    prediction = {(r["model"], r["index"]): r["prediction"] for r in outputs}
    flips = [r for r in run.stage("robustness").rows() if r.get("student_flips") == 1.0]
    entries = []
    for name in students:
        mine = [r for r in attribution if r["model"] == name]
        wrong = [r for r in mine if r.get("verdict", "") == "right_for_wrong_reasons"]
        wrong.sort(key=lambda r: (r["spearman"] if r["spearman"] is not None else -2, r["index"]))
        disagree = [r for r in outputs if r["model"] == name and not r["agree"]]
        disagree.sort(key=lambda r: (-r["kl"], r["index"]))
        flipped = sorted((r for r in flips if r["model"] == name), key=lambda r: r["index"])
        spearman = {r["index"]: r for r in mine}
        for kind, rows in zip(KINDS, (wrong, disagree, flipped), strict=True):
            for r in rows[:per_kind]:
                i = r["index"]
                detail = spearman.get(i, {})
                entries.append({"student": name, "kind": kind, "index": i, "label": detail.get("label"),
                                "teacher_prediction": teacher_prediction.get(i),
                                "student_prediction": prediction.get((name, i)),
                                "spearman": detail.get("spearman"), "evidence": detail.get("student_evidence"),
                                "teacher_evidence": detail.get("teacher_evidence")})
    return entries


def gallery_stage(run: RunDir, data: EvalSplit, students: list[str], primary: str, depends_on: dict,
                  per_kind: int = 4) -> Stage:
    """Choose and save the gallery (see the module docstring); ``depends_on`` names the input stages' hashes,
    so the gallery is chosen again whenever one of them changes."""
    inputs = {"stage": "gallery", "data": data_digest(data), "students": students, "per_kind": per_kind,
              "primary": primary, "depends_on": depends_on}

    def compute(_) -> StageOutput:
        entries = _pick(run, students, primary, per_kind)
        maps = run.stage("attribution").arrays()
        indices = sorted({e["index"] for e in entries if e["index"] < len(data.inputs)})
        where = {i: row for row, i in enumerate(indices)}
        arrays: dict[str, torch.Tensor] = {}
        if indices and data.inputs.ndim == 4:
            chosen = torch.tensor(indices)
            arrays["images"] = _as_uint8(data.inputs[chosen])
            if data.counterfactuals is not None:
                arrays["counterfactuals"] = _as_uint8(data.counterfactuals[chosen])
            for name in (TEACHER, *students):
                key = f"maps.{name}"
                if key in maps and int(chosen.max()) < len(maps[key]):
                    arrays[key] = maps[key][chosen].float().contiguous()
        for entry in entries:
            entry["row"] = where.get(entry["index"])
        return StageOutput(figures={"kinds": list(KINDS), "entries": entries, "has_images": "images" in arrays},
                           arrays=arrays, summary={"entries": len(entries)})

    return Stage("gallery", inputs, compute=compute)
