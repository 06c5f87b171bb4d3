"""The scorecard: utilities, floors, the Pareto front, risks and verdicts, on hand-written metrics."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdlens.audit import SelectionRule, scorecard
from kdlens.audit.scorecard import pareto_front, utility
from kdlens.audit.selection import METRICS
from kdlens.config import validate

TEACHER = {"accuracy": 0.98, "accuracy_shifted": 0.99, "ece": 0.02}


def student(**values) -> dict:
    base = {"accuracy": 0.97, "accuracy_shifted": 0.95, "agreement": 0.97, "kl": 0.05, "ece": 0.02,
            "cka_mean_best": 0.9, "attribution_spearman": 0.8, "evidence_mass": 0.3, "right_for_wrong_reasons": 0.1,
            "cue_flip_rate": 0.05, "adversarial_agreement": 0.4, "overconfidence": 0.01}
    return {**base, **values}


def test_utilities_are_in_the_unit_interval_and_oriented():
    assert utility("accuracy", 0.9) == 0.9
    assert utility("ece", 0.1) == pytest.approx(0.9)
    assert utility("right_for_wrong_reasons", 0.3) == pytest.approx(0.7)
    assert utility("kl", 0.0) == 1.0 and utility("kl", 2.0) == pytest.approx(math.exp(-2))
    assert utility("attribution_spearman", -0.4) == 0.0


def test_the_shortcut_student_loses_to_the_faithful_one_though_it_is_more_accurate():
    students = {"shortcut": student(accuracy=0.975, accuracy_shifted=0.3, attribution_spearman=0.3,
                                    right_for_wrong_reasons=0.8, cue_flip_rate=0.7),
                "faithful": student(accuracy=0.97)}
    card = scorecard(TEACHER, students)
    assert card["chosen"] == "faithful" and card["chosen_by_accuracy"] == "shortcut"
    shortcut = card["students"]["shortcut"]
    assert shortcut["verdict"] == "at risk"
    assert [r["kind"] for r in shortcut["risks"]] == ["wrong_reasons", "spurious_cue", "cue_flips"]
    assert "on 80.0% of its correct answers its evidence disagrees" in shortcut["verdict_text"]  # the worst two
    assert "falls to 30.0% (the teacher keeps 99.0%)" in shortcut["verdict_text"]
    assert shortcut["verdict_text"].endswith("(and 1 more: cue_flips).")
    assert card["students"]["faithful"]["verdict_text"].startswith("Recommended.")


def test_the_rule_is_the_users(tmp_path):
    students = {"a": student(accuracy=0.97, ece=0.2), "b": student(accuracy=0.96, ece=0.01)}
    assert scorecard(TEACHER, students, SelectionRule(weights={"accuracy": 1.0}))["chosen"] == "a"
    assert scorecard(TEACHER, students, SelectionRule(weights={"ece": 1.0}))["chosen"] == "b"
    floors = scorecard(TEACHER, students, SelectionRule(weights={"accuracy": 1.0}, floors={"ece": 0.05}))
    assert floors["chosen"] == "b" and floors["students"]["a"]["verdict"] == "rejected"
    assert "ece 0.200 (required: at most 0.05)" in floors["students"]["a"]["verdict_text"]


def test_max_accuracy_drop_is_measured_from_the_teacher():
    card = scorecard(TEACHER, {"weak": student(accuracy=0.90)}, SelectionRule(max_accuracy_drop=0.05))
    assert card["chosen"] is None and card["students"]["weak"]["verdict"] == "rejected"
    assert "8.0 points below the teacher's" in card["students"]["weak"]["failed_floors"][0]
    assert scorecard(TEACHER, {"weak": student(accuracy=0.90)},
                     SelectionRule(max_accuracy_drop=None))["chosen"] == "weak"


def test_a_metric_nobody_measured_drops_out_of_the_score():
    students = {"a": student(cue_flip_rate=None), "b": student(cue_flip_rate=None, accuracy=0.5)}
    card = scorecard(TEACHER, students, SelectionRule(max_accuracy_drop=None))
    assert "cue_flip_rate" not in card["metrics_scored"] and "accuracy" in card["metrics_scored"]
    weights = SelectionRule().weights
    scored = card["metrics_scored"]
    expected = sum(weights[m] * utility(m, students["a"][m]) for m in scored) / sum(weights[m] for m in scored)
    assert card["students"]["a"]["score"] == pytest.approx(expected)


def test_the_default_rule_is_documented_and_valid():
    rule = SelectionRule()
    assert set(rule.weights) <= set(METRICS) and all(w >= 0 for w in rule.weights.values())
    assert rule.max_accuracy_drop == 0.05


@pytest.mark.parametrize("bad, message", [
    ({"weights": {"acc": 1.0}}, "Did you mean 'accuracy'"),
    ({"weights": {"accuracy": -1.0}}, "must be >= 0"),
    ({"weights": {"accuracy": 0.0}}, "at least one weight"),
    ({"floors": {"eec": 0.1}}, "Did you mean 'ece'"),
    ({"max_accuracy_drop": -0.1}, "greater than or equal to 0"),
    ({"risk": {}}, "Did you mean 'risks'"),
])
def test_bad_rules(bad, message):
    with pytest.raises(ValueError, match=message):
        validate(bad, SelectionRule)


points = st.dictionaries(st.text("abcdef", min_size=1, max_size=3),
                         st.tuples(st.floats(0, 1), st.floats(-1, 1)), min_size=1, max_size=8)


@given(points)
def test_the_pareto_front_is_exactly_the_undominated_points(pts):
    front = pareto_front(pts)

    def dominated(k):
        x, y = pts[k]
        return any(x2 >= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in pts.values())

    assert set(front) == {k for k in pts if not dominated(k)}
    assert front  # a finite non-empty set always has an undominated point


def test_ties_go_to_the_student_named_first():
    card = scorecard(TEACHER, {"b": student(), "a": student()})
    assert card["chosen"] == "b" and card["chosen_by_accuracy"] == "b"


def test_a_point_with_a_missing_coordinate_is_on_no_front():
    assert pareto_front({"a": (0.9, None), "b": (0.5, 0.5)}) == ["b"]


# -- verdicts a user can trust: a competence floor for the teacher, an accuracy floor for students --------------------

LM_TEACHER = {"accuracy": 0.075}  # free-form answers: no ``chance``


def test_a_teacher_that_rarely_answers_right_is_no_reference_and_no_student_is_recommended():
    """The case a real audit met: teacher 7.5%, student 0%, and the student was "Recommended" and "chosen"."""
    students = {"zero": student(accuracy=0.0), "better": student(accuracy=0.6)}
    card = scorecard(LM_TEACHER, students, SelectionRule(max_accuracy_drop=None))
    reference = card["teacher_reference"]
    assert not reference["is_reference"] and reference["floor"] == 0.5
    assert reference["text"].startswith("The teacher answers 7.5% of the examples right, below the 50.0% a "
                                        "reference needs: it is no reference")
    assert card["chosen"] is None and card["no_choice"].startswith("No student chosen: the teacher answers 7.5%")
    assert card["students"]["zero"]["verdict"] == "rejected"
    assert "accuracy 0.0% is below the 50.0% a recommended model must reach" in card["students"]["zero"][
        "verdict_text"]
    assert card["students"]["better"]["verdict"] == "unrated"
    assert card["students"]["better"]["verdict_text"].startswith("Unrated: the teacher is no reference here; beats")
    assert not any("Recommended" in c["verdict_text"] for c in card["students"].values())


def test_a_student_below_the_accuracy_floor_is_never_chosen_even_with_the_best_score():
    teacher = {"accuracy": 0.55}
    students = {"faithful_but_wrong": student(accuracy=0.45, agreement=1.0, attribution_spearman=1.0),
                "fine": student(accuracy=0.52)}
    card = scorecard(teacher, students, SelectionRule(max_accuracy_drop=0.2))
    assert card["teacher_reference"]["is_reference"] and card["chosen"] == "fine"
    assert card["students"]["faithful_but_wrong"]["verdict"] == "rejected"


def test_when_every_student_fails_a_floor_the_summary_says_why():
    card = scorecard({"accuracy": 0.9}, {"a": student(accuracy=0.3), "b": student(accuracy=0.2)})
    assert card["chosen"] is None and card["teacher_reference"]["is_reference"]
    assert card["no_choice"].startswith("No student chosen: every student fails a floor (a: accuracy 30.0% is below")
    assert "; b: accuracy 20.0%" in card["no_choice"]


@pytest.mark.parametrize("classes, accuracy, is_reference", [(4, 0.45, False), (4, 0.5, True), (10, 0.4, True),
                                                            (2, 0.7, False), (1000, 0.26, True)])
def test_a_classifier_teacher_must_beat_chance_by_25_points(classes, accuracy, is_reference):
    card = scorecard({"accuracy": accuracy, "chance": 1 / classes}, {"s": student(accuracy=accuracy)},
                     SelectionRule(max_accuracy_drop=None))
    assert card["teacher_reference"]["is_reference"] is is_reference
    assert card["teacher_reference"]["floor"] == pytest.approx(1 / classes + 0.25)
    assert (card["chosen"] == "s") is is_reference


@given(st.floats(0.0, 1.0))
def test_the_default_floor_is_chance_plus_25_points_and_half_for_free_form_answers(chance):
    from kdlens.audit.selection import competence_floor

    floor = competence_floor(chance)
    assert floor == (0.5 if chance == 0 else min(1.0, chance + 0.25)) and floor >= chance
    assert competence_floor(None) == 0.5


def test_the_floors_are_the_users_to_set():
    rule = SelectionRule(teacher_floor=0.05, accuracy_floor=0.0, max_accuracy_drop=None)
    card = scorecard(LM_TEACHER, {"zero": student(accuracy=0.0)}, rule)
    assert card["teacher_reference"]["is_reference"] and card["chosen"] == "zero" and card["accuracy_floor"] == 0.0
    with pytest.raises(ValueError, match="less than or equal to 1"):
        validate({"teacher_floor": 50}, SelectionRule)
