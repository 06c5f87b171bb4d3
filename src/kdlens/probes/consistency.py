"""Does the student look where the teacher looks? Per-example attribution agreement, evidence and verdicts.

For each example, both models explain the same target class (the teacher's prediction by default, see
:mod:`kdlens.probes.attribution`) with the same method on comparable layers; :mod:`kdlens.measures` compares the two
maps (Spearman, top-k IoU, cosine) and, where the task knows the evidence, scores each map against it (share of
attribution mass in the evidence mask, pointing game).

A per-example **verdict** then combines the student's correctness with whether its explanation is the teacher's:

- ``right_for_right_reasons``: correct, and its map agrees with the teacher's (Spearman >= ``agreement_threshold``)
  and, where masks exist, puts at least ``evidence_threshold`` of its mass on the evidence;
- ``right_for_wrong_reasons``: correct, but failing either test;
- ``wrong``: the student's answer is not the label.

The thresholds are arguments, never hidden constants, and every result carries them. :func:`baseline_thresholds`
derives them from baselines: a student counts as agreeing when it agrees with the teacher at least as well as a
re-seeded teacher does on most examples, and as using the evidence when it puts as much mass there as the teacher
itself does on most examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from kdlens import measures as M
from kdlens import validation as C

VERDICTS = ("right_for_right_reasons", "right_for_wrong_reasons", "wrong")


def compare_maps(teacher_maps: torch.Tensor, student_maps: torch.Tensor, masks: torch.Tensor | None = None,
                 top_k: float = 0.2) -> dict[str, torch.Tensor]:
    """Per-example comparison of two models' (n, h, w) maps, and of each with the evidence masks (n, H, W).

    Returns
    -------
    dict of (n,) float64 tensors: ``spearman``, ``iou_top{k}``, ``cosine`` (NaN where a map is constant) and, with
    masks, ``teacher_evidence`` / ``student_evidence`` (share of mass in the mask), ``teacher_pointing`` /
    ``student_pointing`` (the map's peak in the mask) and ``mask_fraction`` (the chance level of the evidence share).
    """
    out = {"spearman": M.map_spearman(teacher_maps, student_maps, reduction="none"),
           f"iou_top{round(top_k * 100)}": M.map_topk_iou(teacher_maps, student_maps, k=top_k, reduction="none"),
           "cosine": M.map_cosine(teacher_maps, student_maps, reduction="none")}
    if masks is not None:
        for who, maps in (("teacher", teacher_maps), ("student", student_maps)):
            out[f"{who}_evidence"] = M.evidence_mass(maps, masks, reduction="none")
            out[f"{who}_pointing"] = M.pointing_game(maps, masks, reduction="none")
        out["mask_fraction"] = M.mask_fraction(masks, reduction="none")
    return {k: torch.as_tensor(v, dtype=torch.float64) for k, v in out.items()}


def verdicts(correct: torch.Tensor, agreement: torch.Tensor, agreement_threshold: float,
             evidence: torch.Tensor | None = None, evidence_threshold: float | None = None) -> list[str]:
    """One verdict per example (see the module docstring); a NaN agreement or evidence counts as failing.

    Parameters
    ----------
    correct : (n,) bool, the student's answer equals the label
    agreement : (n,) float, e.g. the Spearman correlation of student and teacher maps
    agreement_threshold : float
    evidence : (n,) float in [0, 1], optional: the student's share of attribution mass in the evidence mask
    evidence_threshold : float, required with ``evidence``

    Returns
    -------
    list of n strings from ``VERDICTS``
    """
    correct = C.as_tensor(correct, "correct").bool()
    agreement = C.as_float(agreement, "agreement")
    C.check_same_length(correct, agreement, "correct", "agreement")
    if not isinstance(agreement_threshold, (int, float)) or math.isnan(agreement_threshold):
        C.fail("agreement_threshold", "a number", repr(agreement_threshold))
    reasons_ok = agreement >= agreement_threshold  # NaN compares False
    if evidence is not None:
        evidence = C.as_float(evidence, "evidence")
        C.check_same_length(correct, evidence, "correct", "evidence")
        if not isinstance(evidence_threshold, (int, float)) or math.isnan(evidence_threshold):
            C.fail("evidence_threshold", "a number (the share of mass in the evidence mask that counts as using "
                   "it)", repr(evidence_threshold), "baseline_thresholds() derives one from the teacher.")
        reasons_ok = reasons_ok & (evidence >= evidence_threshold)
    return [VERDICTS[2] if not ok_answer else VERDICTS[0] if ok_reason else VERDICTS[1]
            for ok_answer, ok_reason in zip(correct.tolist(), reasons_ok.tolist(), strict=True)]


def baseline_thresholds(reseeded_agreement: torch.Tensor, teacher_evidence: torch.Tensor | None = None,
                        quantile: float = 0.1) -> dict[str, float]:
    """Thresholds read off the baselines: the ``quantile`` of the re-seeded teacher's agreement with the teacher,
    and the same quantile of the teacher's own evidence share (NaNs ignored).

    With the default 0.1, a student example counts as agreeing if its agreement reaches what 90% of the re-seeded
    teacher's examples reach, and as using the evidence if its share reaches what 90% of the teacher's do.
    """
    if not 0 < quantile < 1:
        C.fail("quantile", "in (0, 1)", repr(quantile), "0.1 reads the threshold off the baseline's 10th percentile.")

    def q(values: torch.Tensor, name: str) -> float:
        values = C.as_float(values, name).double()
        values = values[~torch.isnan(values)]
        if values.numel() == 0:
            C.fail(name, "at least one defined (non-NaN) value", "only NaN")
        return float(torch.quantile(values, quantile))

    out = {"agreement_threshold": q(reseeded_agreement, "reseeded_agreement"), "quantile": quantile}
    if teacher_evidence is not None:
        out["evidence_threshold"] = q(teacher_evidence, "teacher_evidence")
    return out


def verdict_rates(labels: list[str], difficulty: torch.Tensor | None = None, bins: int = 4) -> dict:
    """Share of each verdict overall and, with a per-example ``difficulty``, in ``bins`` equal-count difficulty bins.

    Returns
    -------
    ``{"overall": {verdict: share}, "by_difficulty": [{"low": x, "high": y, "n": k, verdict: share, ...}, ...]}``
    """
    n = len(labels)
    if n == 0:
        C.fail("labels", "at least one verdict", "none")

    def shares(chosen: list[str]) -> dict[str, float]:
        return {v: sum(label == v for label in chosen) / max(len(chosen), 1) for v in VERDICTS}

    out: dict = {"overall": shares(labels)}
    if difficulty is not None:
        difficulty = C.as_float(difficulty, "difficulty").double()
        if difficulty.shape != (n,):
            C.fail("difficulty", f"one value per example ({n},)", f"shape {tuple(difficulty.shape)}")
        order = torch.argsort(difficulty, stable=True)
        out["by_difficulty"] = []
        for part in order.tensor_split(bins):
            if len(part) == 0:
                continue
            chosen = [labels[i] for i in part.tolist()]
            out["by_difficulty"].append({"low": float(difficulty[part].min()), "high": float(difficulty[part].max()),
                                         "n": len(chosen), **shares(chosen)})
    return out


@dataclass
class Consistency:
    """What :func:`attribution_consistency` measured on n examples (every tensor indexed by example).

    targets : (n,) the class every model explains (the teacher's prediction)
    correct : model -> (n,) bool, its prediction equals the label
    maps : model -> (n, h, w) float, Grad-CAM maps
    stability, stability_adversarial : model -> (n,) Spearman of its map on x with its map on x + noise, and on its
        own FGSM example
    compared : student or baseline -> :func:`compare_maps` of the teacher's maps with its own
    thresholds : the verdict thresholds used (empty: no verdicts)
    """

    targets: torch.Tensor
    correct: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    stability: dict[str, torch.Tensor]
    stability_adversarial: dict[str, torch.Tensor]
    compared: dict[str, dict[str, torch.Tensor]]
    thresholds: dict[str, float] = field(default_factory=dict)


def attribution_consistency(models: dict, inputs: torch.Tensor, labels: torch.Tensor, layers: dict[str, str],
                            masks: torch.Tensor | None = None, top_k: float = 0.2, quantile: float = 0.1,
                            noise: float = 8 / 255, attack_epsilon: float = 4 / 255, seed: int = 0,
                            batch_size: int = 256, thresholds: dict[str, float] | None = None,
                            teacher: str = "teacher") -> Consistency:
    """Grad-CAM maps of every model for the teacher's predicted class, compared with the teacher's, with each
    map's stability under input noise and under an FGSM step, and the verdict thresholds.

    Parameters
    ----------
    models : name -> nn.Module, the teacher (``teacher``) first; a ``teacher_reseeded`` model sets the agreement
        threshold and the teacher's own evidence share the evidence one (:func:`baseline_thresholds`)
    inputs : (n, C, H, W); labels (n,); masks (n, H, W) evidence, or None
    layers : model name -> the conv layer to explain
    noise : half-width of the uniform input noise of the stability test, in input units
    attack_epsilon : L-inf budget of the FGSM step pushing each model away from the target class; inputs stay
        within the data's range
    batch_size : examples per pass (forward, Grad-CAM and the FGSM step)
    thresholds : used when there is no ``teacher_reseeded`` model to derive them from

    This is :func:`example_consistency` (every value per example) followed by :func:`choose_thresholds` (over all
    examples); a sharded stage runs the first on each shard and the second on the concatenated values.
    """
    found = example_consistency(models, inputs, labels, layers, masks, top_k=top_k, noise=noise,
                                attack_epsilon=attack_epsilon, seed=seed, batch_size=batch_size, teacher=teacher)
    found.thresholds = choose_thresholds(found.compared, quantile, thresholds)
    return found


def example_consistency(models: dict, inputs: torch.Tensor, labels: torch.Tensor, layers: dict[str, str],
                        masks: torch.Tensor | None = None, top_k: float = 0.2, noise: float = 8 / 255,
                        attack_epsilon: float = 4 / 255, seed: int = 0, batch_size: int = 256,
                        teacher: str = "teacher", unit_noise: torch.Tensor | None = None,
                        bounds: tuple[float, float] | None = None) -> Consistency:
    """The per-example part of :func:`attribution_consistency` (its result's ``thresholds`` are empty).

    Every value of example i depends only on example i and on what it is batched with, batches of ``batch_size``
    from the first input: run on rows ``[a, b)`` of a split (``a`` a multiple of ``batch_size``) with that split's
    ``unit_noise[a:b]`` and ``bounds``, it gives rows ``[a, b)`` of the whole split's result.

    Parameters
    ----------
    models, inputs, labels, layers, masks, top_k, noise, attack_epsilon, batch_size, teacher : as in
        :func:`attribution_consistency`
    seed : draws the stability noise when ``unit_noise`` is None
    unit_noise : (n, C, H, W) float in [-1, 1], optional: the stability test's noise in units of ``noise`` (rows of
        :func:`kdlens.probes.robustness.uniform_noise` drawn for the whole split); None draws it for these inputs
        from ``seed``
    bounds : (low, high), the range the FGSM step clips to; None: these inputs' own min and max (pass the whole
        split's when these are some of its rows)
    """
    from kdlens.probes.attribution import GradCAM, resolve_targets
    from kdlens.probes.robustness import fgsm, uniform_noise
    from kdlens.subjects import Classifier

    def attribute(name: str, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        method = GradCAM(models[name], layers[name])
        return torch.cat([method.attribute(xb, tb).detach().cpu()
                          for xb, tb in zip(x.split(batch_size), targets.split(batch_size), strict=True)])

    if unit_noise is None:
        unit_noise = uniform_noise(inputs.shape, seed)
    elif tuple(unit_noise.shape) != tuple(inputs.shape):
        C.fail("unit_noise", f"the inputs' shape {tuple(inputs.shape)}", f"shape {tuple(unit_noise.shape)}",
               "Slice the rows of the whole split's uniform_noise(...) that the inputs are.")
    logits = {name: Classifier(model, name).logits(inputs, batch_size) for name, model in models.items()}
    targets = resolve_targets("teacher", teacher_logits=logits[teacher])
    maps = {name: attribute(name, inputs, targets) for name in models}
    noisy = inputs + (noise * unit_noise).to(inputs.device)
    stability = {name: M.map_spearman(maps[name], attribute(name, noisy, targets), reduction="none")
                 for name in models}
    bounds = (float(inputs.min()), float(inputs.max())) if bounds is None else bounds
    adversarial = {name: M.map_spearman(maps[name], attribute(
        name, fgsm(model, inputs, targets, attack_epsilon, bounds=bounds, batch_size=batch_size), targets),
        reduction="none") for name, model in models.items()}
    compared = {name: compare_maps(maps[teacher], maps[name], masks, top_k) for name in models if name != teacher}
    correct = {name: z.argmax(-1) == labels for name, z in logits.items()}
    return Consistency(targets, correct, maps, stability, adversarial, compared)


def choose_thresholds(compared: dict[str, dict[str, torch.Tensor]], quantile: float = 0.1,
                      thresholds: dict[str, float] | None = None) -> dict[str, float]:
    """The verdict thresholds: from the ``teacher_reseeded`` baseline's agreement and the teacher's evidence share
    over all examples (:func:`baseline_thresholds`) when ``compared`` has that baseline, else ``thresholds`` (none:
    an empty dict, no verdicts).

    compared : model -> :func:`compare_maps` values over all examples (:attr:`Consistency.compared`)
    """
    if "teacher_reseeded" not in compared:
        return dict(thresholds or {})
    teacher_evidence = compared[next(iter(compared))].get("teacher_evidence")  # the same teacher maps in every one
    return baseline_thresholds(compared["teacher_reseeded"]["spearman"], teacher_evidence, quantile)
