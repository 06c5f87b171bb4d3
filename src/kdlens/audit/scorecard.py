"""The scorecard: which student to ship, and a plain-language verdict on each that names its risk.

Pure functions of the headline metrics (the ``students`` / ``teacher`` objects of ``results.json``) and a
:class:`~kdlens.audit.selection.SelectionRule`; nothing here runs a model. What differs between audit kinds is
how a verdict is worded and which two metrics the Pareto front weighs: a :class:`Wording`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kdlens.audit.selection import METRICS, RiskThresholds, SelectionRule, competence_floor


@dataclass(frozen=True)
class Wording:
    """How an audit kind's verdicts speak.

    wrong_reasons : what is wrong with a right answer reached for the wrong reasons ("its trace is wrong ...")
    unit : what the students answer ("examples", "questions")
    followed : what follows the teacher's when no risk is found ("answers, evidence")
    pareto_axes : the two metrics of the Pareto front (accuracy and a reasoning-fidelity metric)
    """

    wrong_reasons: str = "its evidence disagrees with the teacher's"
    unit: str = "examples"
    followed: str = "answers, evidence"
    pareto_axes: tuple[str, str] = ("accuracy", "attribution_spearman")


def utility(metric: str, value: float) -> float:
    """A metric's value mapped to [0, 1], higher better: the value itself, 1 - value for shares where lower is
    better, exp(-kl) for KL (nats), max(value, 0) for correlations."""
    if metric == "kl":
        return math.exp(-value)
    if metric == "attribution_spearman":
        return max(value, 0.0)
    return 1.0 - value if METRICS[metric] == "lower" else value


def _floors(student: dict, teacher: dict, rule: SelectionRule, accuracy_floor: float) -> list[str]:
    """The floors ``student`` fails, each said in words; a floor on a metric nobody measured is not applied."""
    failed = []
    accuracy = student.get("accuracy")
    if accuracy is not None and accuracy < accuracy_floor:
        failed.append(f"accuracy {_pct(accuracy)} is below the {_pct(accuracy_floor)} a recommended model must reach")
    if rule.max_accuracy_drop is not None and student.get("accuracy") is not None \
            and teacher.get("accuracy") is not None:
        drop = teacher["accuracy"] - student["accuracy"]
        if drop > rule.max_accuracy_drop:
            failed.append(f"accuracy {_pct(student['accuracy'])} is {100 * drop:.1f} points below the teacher's "
                          f"(allowed: {100 * rule.max_accuracy_drop:.1f})")
    for metric, bound in rule.floors.items():
        value = student.get(metric)
        if value is None:
            continue
        if (METRICS[metric] == "higher" and value < bound) or (METRICS[metric] == "lower" and value > bound):
            word = "at least" if METRICS[metric] == "higher" else "at most"
            failed.append(f"{metric} {value:.3f} (required: {word} {bound:g})")
    return failed


def pareto_front(points: dict[str, tuple[float | None, float | None]]) -> list[str]:
    """Names of the points no other point beats on both coordinates (both maximised), by the first coordinate;
    a point with a missing coordinate is on no front."""
    known = {k: p for k, p in points.items() if None not in p}
    front = [k for k, (x, y) in known.items()
             if not any(x2 >= x and y2 >= y and (x2 > x or y2 > y) for x2, y2 in known.values())]
    return sorted(front, key=lambda k: known[k])


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def risks(student: dict, teacher: dict, thresholds: RiskThresholds, wording: Wording | None = None) -> list[dict]:
    """Each risk ``student`` shows, as ``{"kind", "text"}``, worst kinds first (see :class:`RiskThresholds`),
    worded as the audit kind speaks (``wording``)."""
    wording = wording or Wording()
    found = []
    wrong = student.get("right_for_wrong_reasons")
    if wrong is not None and wrong > thresholds.wrong_reasons:
        found.append({"kind": "wrong_reasons", "text": f"on {_pct(wrong)} of its correct answers "
                      f"{wording.wrong_reasons}"})
    steps = student.get("step_agreement")
    if steps is not None and 1 - steps > thresholds.step_disagreement:
        found.append({"kind": "trace_fidelity", "text": f"it shares only {_pct(steps)} of the teacher's right "
                      "steps"})
    shifted, teacher_shifted = student.get("accuracy_shifted"), teacher.get("accuracy_shifted")
    if shifted is not None and teacher_shifted is not None and teacher_shifted - shifted > thresholds.shifted_drop:
        found.append({"kind": "spurious_cue", "text": f"when the spurious cue points to a wrong class its accuracy "
                      f"falls to {_pct(shifted)} (the teacher keeps {_pct(teacher_shifted)})"})
    flips = student.get("cue_flip_rate")
    if flips is not None and flips > thresholds.cue_flips:
        found.append({"kind": "cue_flips", "text": f"it changes its answer on {_pct(flips)} of images when only the "
                      "cue is edited"})
    ece, teacher_ece = student.get("ece"), teacher.get("ece")
    if ece is not None and teacher_ece is not None and ece - teacher_ece > thresholds.ece_excess:
        gap = student.get("overconfidence")
        kind = "over-confident" if gap is None or gap >= 0 else "under-confident"
        found.append({"kind": "calibration", "text": f"it is {kind} (ECE {ece:.3f} against the teacher's "
                      f"{teacher_ece:.3f})"})
    agreement = student.get("agreement")
    if agreement is not None and 1 - agreement > thresholds.disagreement:
        found.append({"kind": "fidelity", "text": f"its answer differs from the teacher's on "
                      f"{_pct(1 - agreement)} of {wording.unit}"})
    adversarial = student.get("adversarial_agreement")
    if adversarial is not None and adversarial < thresholds.adversarial_agreement:
        found.append({"kind": "robustness", "text": f"under attack it agrees with the teacher on only "
                      f"{_pct(adversarial)} of inputs"})
    return found


def _lead(student: dict, teacher: dict) -> str:
    accuracy, teacher_accuracy = student.get("accuracy"), teacher.get("accuracy")
    if accuracy is None or teacher_accuracy is None:
        return "its accuracy is unknown"
    if accuracy - teacher_accuracy > 0.005:
        return f"beats the teacher's accuracy ({_pct(accuracy)} vs {_pct(teacher_accuracy)})"
    if teacher_accuracy - accuracy <= 0.01:
        return f"matches the teacher's accuracy ({_pct(accuracy)} vs {_pct(teacher_accuracy)})"
    return (f"trails the teacher's accuracy by {100 * (teacher_accuracy - accuracy):.1f} points "
            f"({_pct(accuracy)} vs {_pct(teacher_accuracy)})")


def scorecard(teacher: dict, students: dict[str, dict], rule: SelectionRule | None = None,
              wording: Wording | None = None) -> dict:
    """Score, floors, risks and a verdict for every student, and the one the rule chooses.

    Parameters
    ----------
    teacher : the teacher's metrics (``accuracy``, ``accuracy_shifted``, ``ece``, ...; None where not measured)
    students : name -> metrics (the keys of :data:`~kdlens.audit.config.METRICS`, plus ``overconfidence``)
    rule : the selection rule (default :class:`SelectionRule`)
    wording : how the audit kind words risks, and its Pareto axes (default: a classifier's without masks)

    Returns
    -------
    dict: ``students`` (name -> score, utilities, failed_floors, risks, verdict, verdict_text, pareto),
    ``chosen`` (or None when every student fails a floor), ``chosen_by_accuracy``, ``pareto_front``,
    ``pareto_axes``, ``metrics_scored``, and the ``rule`` as data.
    """
    rule, wording = rule or SelectionRule(), wording or Wording()
    reference = teacher_reference(teacher, rule, wording)
    accuracy_floor = rule.accuracy_floor if rule.accuracy_floor is not None else reference["floor"]
    scored = [m for m, w in rule.weights.items() if w > 0 and all(s.get(m) is not None for s in students.values())]
    cards: dict[str, dict] = {}
    for name, metrics in students.items():
        utilities = {m: utility(m, metrics[m]) for m in scored}
        total = sum(rule.weights[m] for m in scored)
        score = sum(rule.weights[m] * u for m, u in utilities.items()) / total if total else None
        cards[name] = {"score": score, "utilities": utilities,
                       "failed_floors": _floors(metrics, teacher, rule, accuracy_floor),
                       "risks": risks(metrics, teacher, rule.risks, wording)}
    eligible = [n for n, c in cards.items() if not c["failed_floors"] and c["score"] is not None]
    by_score = sorted(eligible, key=lambda n: (-cards[n]["score"], -(students[n].get("accuracy") or 0),
                                               list(students).index(n)))
    chosen = by_score[0] if by_score and reference["is_reference"] else None
    with_accuracy = [n for n in students if students[n].get("accuracy") is not None]
    order = {n: i for i, n in enumerate(students)}  # ties go to the student named first
    by_accuracy = max(with_accuracy, key=lambda n: (students[n]["accuracy"], -order[n]), default=None)
    axes = wording.pareto_axes
    front = pareto_front({n: tuple(students[n].get(axis) for axis in axes) for n in students})
    for rank, name in enumerate(by_score, start=1):
        cards[name]["rank"] = rank
    for name, card in cards.items():
        card.setdefault("rank", None)
        card["pareto"] = name in front
        lead = _lead(students[name], teacher)
        if card["failed_floors"]:
            card["verdict"] = "rejected"
            text = f"Rejected: {'; '.join(card['failed_floors'])}."
        elif not reference["is_reference"]:
            card["verdict"] = "unrated"
            text = f"Unrated: the teacher is no reference here; {lead}."
        else:
            card["verdict"] = "recommended" if name == chosen else "at risk" if card["risks"] else "acceptable"
            text = lead
            if card["risks"]:  # the two worst in words; the rest are in ``risks`` and the table
                text += ", but " + "; and ".join(r["text"] for r in card["risks"][:2])
                if len(card["risks"]) > 2:
                    text += f" (and {len(card['risks']) - 2} more: {', '.join(r['kind'] for r in card['risks'][2:])})"
            else:
                text += f"; no risk found: its {wording.followed} and confidence follow the teacher's"
            text = text[0].upper() + text[1:] + "."
            if name == chosen:
                text = "Recommended. " + text
        card["verdict_text"] = text
    return {"students": cards, "chosen": chosen, "chosen_by_accuracy": by_accuracy, "pareto_front": front,
            "pareto_axes": list(axes), "metrics_scored": scored, "teacher_reference": reference,
            "accuracy_floor": accuracy_floor, "no_choice": None if chosen else _no_choice(reference, cards),
            "rule": rule.model_dump(mode="json")}


def teacher_reference(teacher: dict, rule: SelectionRule, wording: Wording | None = None) -> dict:
    """Whether the teacher answers well enough to judge students against: ``is_reference``, its ``accuracy``, the
    ``floor`` (``rule.teacher_floor``, else :func:`~kdlens.audit.selection.competence_floor` of the teacher's
    ``chance``) and, when it is no reference, the ``text`` a report leads with."""
    wording = wording or Wording()
    floor = rule.teacher_floor if rule.teacher_floor is not None else competence_floor(teacher.get("chance"))
    accuracy = teacher.get("accuracy")
    is_reference = accuracy is None or accuracy >= floor
    text = None if is_reference else (
        f"The teacher answers {_pct(accuracy)} of the {wording.unit} right, below the {_pct(floor)} a reference "
        f"needs: it is no reference on these {wording.unit}, and no student is recommended against it.")
    return {"is_reference": is_reference, "accuracy": accuracy, "floor": floor, "text": text}


def _no_choice(reference: dict, cards: dict[str, dict]) -> str:
    """Why no student is chosen, in one sentence."""
    if not reference["is_reference"]:
        return f"No student chosen: {reference['text'][0].lower()}{reference['text'][1:]}"
    reasons = "; ".join(f"{name}: {card['failed_floors'][0]}" for name, card in cards.items() if card["failed_floors"])
    return f"No student chosen: every student fails a floor ({reasons})." if reasons else "No student chosen."
