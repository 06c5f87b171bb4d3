"""Adversarial and counterfactual verification: does the student still answer like its teacher when the input moves?

Two kinds of move:

- **Adversarial** (worst case, L-inf): FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018) perturb each image
  within ``epsilon`` to make one model wrong. Attacking the student and asking the teacher, and the reverse, says
  whether the two fail together (the student inherited the teacher's decision boundary) or apart.
- **Counterfactual** (targeted at a known shortcut): the same image with only the spurious cue changed. A model that
  reads the shape keeps its answer; one that reads the cue follows it. The task supplies the edit (for the shapes
  task, :func:`kdlens.tasks.shapes.with_cues`).

Attacks run in eval mode with gradients taken only with respect to the inputs; the model's parameters get no
``.grad``. Inputs are images in ``[low, high]`` (``[0, 1]`` for the lab) and stay there.

Every function works batch by batch (``batch_size`` examples per pass) and per example: run on rows ``[a, b)`` of a
split with the rows ``[a, b)`` of the split's PGD start (:func:`uniform_noise`, the ``start`` arguments) and
``a`` on a batch boundary, each example's values are those of the whole split's run, so a stage can shard them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdlens import validation as C
from kdlens.probes.attribution_common import evaluating
from kdlens.subjects import Classifier


def check_bounds(bounds, epsilon: float | None = None) -> tuple[float, float]:
    """``(low, high)``, finite with ``low < high``; an ``epsilon`` beyond ``high - low`` is refused (such a budget
    reaches every valid input: a typo, not a threat model)."""
    if not isinstance(bounds, tuple | list) or len(bounds) != 2 or not all(
            isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b) for b in bounds) \
            or not bounds[0] < bounds[1]:
        C.fail("bounds", "a finite (low, high) pair with low < high, the inputs' valid range", repr(bounds),
               "Images in [0, 1] use (0, 1); normalised images the range their normalisation maps [0, 1] to.")
    low, high = float(bounds[0]), float(bounds[1])
    if epsilon is not None and epsilon > high - low:
        C.fail("epsilon", f"an L-inf budget of at most the inputs' whole range ({high - low:g}, bounds {low:g} to "
               f"{high:g})", f"{epsilon:g}", "A larger budget lets the attack reach every valid input; for images "
               "in [0, 1], 2/255 to 8/255 are the usual budgets.")
    return low, high


def _check_attack(model, inputs, labels, epsilon, bounds) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    subject = model if isinstance(model, Classifier) else Classifier(model)
    x = C.as_float(inputs, "inputs")
    if x.ndim < 2:
        C.fail("inputs", "a batch of shape (n, ...)", f"shape {tuple(x.shape)}")
    y = C.as_labels(labels, "labels")
    C.check_same_length(x, y, "inputs", "labels")
    C.check_finite(x, "inputs")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 <= epsilon < float("inf"):
        C.fail("epsilon", "a nonnegative L-inf budget in input units", repr(epsilon),
               "For images in [0, 1], 2/255 to 8/255 are the usual budgets.")
    low, high = check_bounds(bounds, epsilon)
    if float(x.min()) < low or float(x.max()) > high:
        C.fail("inputs", f"values inside the attack's bounds [{low:g}, {high:g}] (it clips to them)",
               f"values in [{float(x.min()):.4g}, {float(x.max()):.4g}]",
               "Pass the inputs' valid range as bounds (in a config: probes.robustness.bounds), e.g. the range a "
               "normalisation maps [0, 1] to.")
    return subject, x, y


def _input_gradient(subject: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy with respect to the inputs."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = subject.forward(x)
        if int(y.max()) >= logits.shape[1]:
            C.fail("labels", f"class indices below {logits.shape[1]} (the model's classes)",
                   f"a maximum of {int(y.max())}")
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
    return grad


def uniform_noise(shape: tuple[int, ...] | torch.Size, seed: int = 0) -> torch.Tensor:
    """Uniform noise in ``[-1, 1)``, float32 on the CPU, from ``torch.Generator().manual_seed(seed)``.

    Draw it once for a whole split and slice rows ``[a:b]`` for the examples ``[a, b)``: an example's draw then
    does not depend on which examples are processed with it. :func:`pgd`'s random start is ``epsilon`` times it.

    >>> noise = uniform_noise((4, 3), seed=0)
    >>> tuple(noise.shape), bool(noise.abs().max() <= 1), torch.equal(noise, uniform_noise((4, 3), seed=0))
    ((4, 3), True, True)
    """
    return torch.rand(tuple(shape), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def fgsm(model: nn.Module | Classifier, inputs: torch.Tensor, labels: torch.Tensor, epsilon: float,
         bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 512) -> torch.Tensor:
    """Fast gradient sign method: ``x + epsilon * sign(grad_x CE(model(x), y))``, clipped to ``bounds``.

    Parameters
    ----------
    model : nn.Module returning (B, C) logits, or a Classifier
    inputs : (n, ...) float, in ``bounds``
    labels : (n,) int, the classes the attack pushes away from (true labels, or a model's predictions)
    epsilon : L-inf budget, in input units
    bounds : (low, high) valid input range
    batch_size : examples per forward/backward pass

    Returns
    -------
    (n, ...) adversarial inputs, on the CPU, with ``|x_adv - x| <= epsilon`` everywhere.
    """
    subject, x, y = _check_attack(model, inputs, labels, epsilon, bounds)
    out = []
    with evaluating(subject.model):
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            xb, yb = xb.to(subject.device), yb.to(subject.device)
            grad = _input_gradient(subject, xb, yb)
            out.append((xb + epsilon * grad.sign()).clamp(*bounds).detach().cpu())
    return torch.cat(out)


def pgd(model: nn.Module | Classifier, inputs: torch.Tensor, labels: torch.Tensor, epsilon: float,
        steps: int = 10, step_size: float | None = None, random_start: bool = True, seed: int = 0,
        bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 512,
        start: torch.Tensor | None = None) -> torch.Tensor:
    """Projected gradient descent on the cross-entropy, L-inf ball (Madry et al. 2018).

    From a uniform random start in the ball (seeded), ``steps`` signed-gradient steps of ``step_size`` (default
    ``2.5 * epsilon / steps``, Madry et al.'s choice), each followed by projection onto the ball and ``bounds``.

    Parameters
    ----------
    model, inputs, labels, epsilon, bounds, batch_size : as in :func:`fgsm`
    steps : int >= 1
    step_size : float > 0, or None for ``2.5 * epsilon / steps``
    random_start : start from a uniform point of the ball rather than from x
    seed : seeds the random start (``epsilon * uniform_noise(inputs.shape, seed)``), so the attack is reproducible
    start : (n, ...) float in [-1, 1], optional: the random start in units of ``epsilon``, used instead of the draw
        from ``seed``; pass rows ``[a:b]`` of :func:`uniform_noise` for the whole split when attacking its rows
        ``[a, b)``, so each example starts where it would in the whole split's attack

    Returns
    -------
    (n, ...) adversarial inputs on the CPU, ``|x_adv - x| <= epsilon``.
    """
    subject, x, y = _check_attack(model, inputs, labels, epsilon, bounds)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        C.fail("steps", "a positive integer", repr(steps), "10 steps is the usual PGD budget for evaluation.")
    step_size = 2.5 * epsilon / steps if step_size is None else C.check_positive(step_size, "step_size")
    unit = _check_start(start, x, random_start) if start is not None else uniform_noise(x.shape, seed) \
        if random_start else torch.zeros(x.shape)
    out = []
    with evaluating(subject.model):
        for xb, yb, ub in zip(x.split(batch_size), y.split(batch_size), unit.split(batch_size), strict=True):
            xb, yb = xb.to(subject.device), yb.to(subject.device)
            adv = (xb + (ub * epsilon).to(xb.device, xb.dtype)).clamp(*bounds)
            for _ in range(steps):
                grad = _input_gradient(subject, adv, yb)
                adv = adv + step_size * grad.sign()
                adv = torch.minimum(torch.maximum(adv, xb - epsilon), xb + epsilon).clamp(*bounds)
            out.append(adv.detach().cpu())
    return torch.cat(out)


def _check_start(start, x: torch.Tensor, random_start: bool) -> torch.Tensor:
    if not random_start:
        C.fail("start", "None when random_start is False (no random start is taken)", "a tensor",
               "Drop `start`, or set random_start=True.")
    unit = C.as_float(start, "start").cpu()
    if unit.shape != x.shape:
        C.fail("start", f"one start per input, the inputs' shape {tuple(x.shape)}", f"shape {tuple(unit.shape)}",
               "Slice the rows of the whole split's uniform_noise(...) that the inputs are.")
    C.check_finite(unit, "start")
    if float(unit.abs().max()) > 1:
        C.fail("start", "values in [-1, 1] (units of epsilon)", f"a largest |value| of {float(unit.abs().max()):g}",
               "Pass uniform_noise(shape, seed), not the start already scaled by epsilon.")
    return unit


def predictions(model: nn.Module | Classifier, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(n,) argmax classes in eval mode."""
    subject = model if isinstance(model, Classifier) else Classifier(model)
    return subject.logits(inputs, batch_size).argmax(-1)


def adversarial_agreement(teacher: nn.Module, student: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                          epsilon: float, attack: str = "pgd", teacher_attack: torch.Tensor | None = None,
                          batch_size: int = 512, **attack_kwargs) -> dict[str, torch.Tensor]:
    """Attack each model in turn and record, per example, what both answer on the perturbed input.

    ``teacher_attack`` (n, ...) reuses inputs already crafted against the teacher with the same settings (one
    attack on the teacher serves every student). ``batch_size`` is the examples per pass of the attacks and the
    predictions; ``attack_kwargs`` go to :func:`pgd` or :func:`fgsm` (e.g. ``steps``, ``seed``, ``start``,
    ``bounds``).

    Returns
    -------
    dict of (n,) tensors: ``student_correct`` / ``teacher_correct`` (each model on the attack aimed at it),
    ``agree_on_student_attack`` (teacher and student give the same class on the input crafted against the student)
    and ``agree_on_teacher_attack`` (the same, crafted against the teacher), as float 0/1; and ``clean_agree``.
    """
    C.check_choice(attack, "attack", ("fgsm", "pgd"))
    craft = fgsm if attack == "fgsm" else pgd
    x, y = C.as_float(inputs, "inputs"), C.as_labels(labels, "labels")
    on_student = craft(student, x, y, epsilon, batch_size=batch_size, **attack_kwargs)
    on_teacher = craft(teacher, x, y, epsilon, batch_size=batch_size, **attack_kwargs) if teacher_attack is None \
        else teacher_attack
    t_s, s_s = predictions(teacher, on_student, batch_size), predictions(student, on_student, batch_size)
    t_t, s_t = predictions(teacher, on_teacher, batch_size), predictions(student, on_teacher, batch_size)
    t_clean, s_clean = predictions(teacher, x, batch_size), predictions(student, x, batch_size)
    return {"student_correct": (s_s == y).float(), "teacher_correct": (t_t == y).float(),
            "agree_on_student_attack": (t_s == s_s).float(), "agree_on_teacher_attack": (t_t == s_t).float(),
            "clean_agree": (t_clean == s_clean).float()}


def counterfactual_flips(teacher: nn.Module, student: nn.Module, inputs: torch.Tensor, counterfactuals: torch.Tensor,
                         edited_to: torch.Tensor | None = None, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Compare each model's answer on an input and on the same input with only the spurious cue edited.

    Parameters
    ----------
    teacher, student : nn.Module
    inputs : (n, ...) originals
    counterfactuals : (n, ...) the same examples with the cue changed (nothing else)
    edited_to : (n,) int, optional: the class the edited cue names
    batch_size : examples per forward pass

    Returns
    -------
    dict of (n,) float 0/1 tensors: ``student_flips``, ``teacher_flips`` (answer changed), ``student_only_flips``
    (the student changed its answer where the teacher did not: the shortcut's signature) and, with ``edited_to``,
    ``student_follows_cue`` / ``teacher_follows_cue`` (the new answer is the class the edited cue names, having
    not been before).
    """
    x, x_cf = C.as_float(inputs, "inputs"), C.as_float(counterfactuals, "counterfactuals")
    C.check_same_shape(x, x_cf, "inputs", "counterfactuals")
    t0, t1 = predictions(teacher, x, batch_size), predictions(teacher, x_cf, batch_size)
    s0, s1 = predictions(student, x, batch_size), predictions(student, x_cf, batch_size)
    out = {"student_flips": (s0 != s1).float(), "teacher_flips": (t0 != t1).float(),
           "student_only_flips": ((s0 != s1) & (t0 == t1)).float()}
    if edited_to is not None:
        cue = C.as_labels(edited_to, "edited_to")
        C.check_same_length(x, cue, "inputs", "edited_to")
        out["student_follows_cue"] = ((s1 == cue) & (s0 != cue)).float()
        out["teacher_follows_cue"] = ((t1 == cue) & (t0 != cue)).float()
    return out


def robustness_curve(teacher: nn.Module, students: dict[str, nn.Module], inputs: torch.Tensor, labels: torch.Tensor,
                     epsilons: list[float], steps: int = 10, seed: int = 0, headline_epsilon: float | None = None,
                     headline: dict[str, tuple] | None = None, teacher_attack: torch.Tensor | None = None,
                     bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 512,
                     start: torch.Tensor | None = None, reduction: str = "mean") -> dict:
    """Accuracy under PGD vs L-inf budget for every model, and each student's agreement with the teacher on inputs
    attacked against the student.

    ``headline`` (student -> (accuracy, agreement), in the form this returns) and ``teacher_attack`` (the teacher's
    PGD inputs) at ``headline_epsilon`` are reused there, not recomputed.
    ``bounds``, ``batch_size`` and ``start`` (the random start in units of the budget) are as in :func:`pgd`.
    ``reduction="none"`` gives each budget's per-example (n,) float 0/1 tensors instead of their means (a stage's
    shards; the mean of the concatenated values is the ``"mean"`` value).

    Returns
    -------
    dict: ``epsilons``, ``accuracy`` (model -> one value per budget, the teacher's under ``"teacher"``) and
    ``agreement`` (student -> one value per budget).
    """
    C.check_choice(reduction, "reduction", ("mean", "none"))

    def summary(hits: torch.Tensor) -> float | torch.Tensor:  # (n,) bool -> its mean, or (n,) float 0/1
        return hits.float() if reduction == "none" else float(hits.double().mean())

    def attack(model: nn.Module, e: float) -> torch.Tensor:
        return pgd(model, inputs, labels, e, steps=steps, seed=seed, bounds=bounds, batch_size=batch_size,
                   start=start)

    curve: dict = {"epsilons": epsilons, "accuracy": {}, "agreement": {}}
    attacked = {headline_epsilon: teacher_attack} if teacher_attack is not None else {}
    curve["accuracy"]["teacher"] = [summary(predictions(teacher, attacked[e] if e in attacked else attack(
        teacher, e), batch_size) == labels) for e in epsilons]
    for name, student in students.items():
        accuracy, agreement = [], []
        for e in epsilons:
            if headline is not None and e == headline_epsilon:
                accuracy.append(headline[name][0])
                agreement.append(headline[name][1])
                continue
            adv = attack(student, e)
            own = predictions(student, adv, batch_size)
            accuracy.append(summary(own == labels))
            agreement.append(summary(own == predictions(teacher, adv, batch_size)))
        curve["accuracy"][name], curve["agreement"][name] = accuracy, agreement
    return curve
