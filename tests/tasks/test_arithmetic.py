"""The arithmetic checker: each rule of what counts as an equation (right, wrong, not an equation), the parser against
an oracle that builds its expressions, numbers and gold results as written, and never a raise on model output."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlens.tasks.arithmetic import (
    MAX_BITS,
    ArithmeticCheck,
    Equation,
    check_arithmetic,
    evaluate,
    find_equations,
    gold_results,
    numbers_in,
)
from kdlens.tasks.text import split_sentences

RIGHT = [  # (trace, the result it states), a rule or a form per line
    ("3 + 4 * 2 = 11", 11), ("(3 + 4) * 2 = 14", 14), ("12 / 4 = 3", 3), ("12/4=3", 3), ("48-24=24", 24),
    ("2 x 3 = 6", 6), ("2 × 3 = 6", 6), ("6 ÷ 2 = 3", 3), ("5 − 2 = 3", 3), ("$48 \\times 2 = 96$", 96),
    ("-3 + 5 = 2", 2), ("10 - 12 = -2", -2), ("$1,200 + $300 = $1,500", 1500), ("3.5 * 2 = 7", 7),
    ("3 * .5 = 1.5", Fraction(3, 2)), ("1/2 + 1/4 = 3/4", Fraction(3, 4)), ("2^10 = 1024", 1024),
    ("20% of 50 = 10", 10), ("1/3 of 12 = 4", 4), ("80 + 25% of 80 = 100", 100), ("50 * (1 - 20%) = 40", 40),
    ("3/4 * 100 = 75%", 75), ("3/4 = 75%", 75), ("100% - 20% = 80%", 80), ("100% - 20% = 80", 80),
    ("3 plus 4 is 7", 7), ("5 times 6 equals 30", 30), ("10 divided by 2 is 5", 5), ("7 multiplied by 3 is 21", 21),
    ("9 minus 4 is 5", 5), ("3 + 4 is equal to 7", 7),
    ("2 + 3 = 5 = 5", 5), ("(3 + 4) * 2 = 7 * 2 = 14", 14), ("x = 3 + 4 = 7", 7), ("3 dozen = 3 * 12 = 36", 36),
    ("10 / 3 = 3.33", Fraction(333, 100)), ("10 / 3 = 3.3", Fraction(33, 10)), ("2 / 3 = 0.67", Fraction(67, 100)),
    ("1 / 8 = 0.13", Fraction(13, 100)), ("1 / 8 = 0.12", Fraction(12, 100)),
    ("100 / 7 = 14.2857...", Fraction(142857, 10000)),
    ("5 * 3 = 15 cookies", 15), ("So 48 + 24 = 72.", 72), ("5 * 3 = 15 (5 boxes)", 15), ("(so 5 * 3 = 15)", 15),
    ("**48 / 2 = 24**", 24), ("5 * 3 = **15**", 15), ("- 3 + 4 = 7", 7), ("1) 3 + 4 = 7", 7),
    ("Step 1: 5 + 3 = 8", 8), ("1. 5 + 3 = 8", 8),
    ("2 + 3 = 5 + 4 = 9", 9), ("48 / 2 = 24 + 10 = 34", 34), ("3 * 4 = 12 - 2 = 10 * 2 = 20", 20),  # running totals
]
WRONG = [
    "3 + 4 * 2 = 14", "(3 + 4) * 2 = 11", "12 / 4 = 4", "2 x 3 = 5", "6 ÷ 2 = 4", "5 − 2 = 7", "-3 + 5 = -2",
    "$1,200 + $300 = $1,600", "3.5 * 2 = 8", "1/2 + 1/4 = 2/6", "<<48/2=25>>", "5 * 3 = 16 cookies",
    "20% of 50 = 20", "20% of 50 = 1000", "3 plus 4 is 8", "5 times 6 equals 35",
    "2 + 3 = 6 + 4 = 10", "48 / 2 = 24 + 10 = 35", "2 + 3 = 5 = 6",
    "a + b = 3 + 4 = 8",  # the chain after the variables is a claim of its own
    "10 / 3 = 3.4", "2 / 3 = 0.6", "10 / 3 = 3", "7 / 2 = 3",  # a decimal rounds; a whole number is exact
]
NOT_EQUATIONS = [
    "x = 5", "a = 3", "24 = 48 / 2", "Step 1: 5", "The answer is 72.", "= 7", "",  # no operator on the left
    "b = a + 4", "2x + 3 = 7", "x * 3 = 15", "x ** 2 + 1 = 10", "a + 4 = 3 + 4 = 8",  # variables
    "5 cookies * 3 = 15", "H2O + 3 = 5", "15kg * 2 = 31", "km/h * 2 = 7", "40 hours * $10/hour = $400",  # cut off
    "5 - 3 = 2 - that is all", "3 * 5 = 15 times", "3 + = 7", "2(3 + 4) = 15",  # incomplete or unreadable
    "It starts at 3:00 = noon", "2:30 + 1:15 = 3:45", "12/25/2020 + 1 = 5", "version 1.2.3 + 1 = 2",
    "1. First", "it takes 3-4 days", "pages 10-20 = 11 pages", "1,5 + 1 = 2,5", "x.5 + 1 = 1.5",
    "Is 3 + 4 = 8?", "Did she get 3 + 4 = 8 apples?", "3 + 4 is 5 more than 2", "3 + 4 is less than 9",
    "100 / 7 = 14 remainder 2", "100 / 7 = 14 R2", "100 / 7 = 14 (approx.)", "3 + 4 ≈ 7.1", "3 + 4 != 8",
    "3 + 4 ≠ 8", "100 + 10% = 110", "10/3 * 3 = 3.33 * 3 = 9.99", "2 ^ 0.5 = 1.41", "half of 10 = 5",
]


def only(text: str) -> Equation:
    equations = find_equations(text)
    assert len(equations) == 1, equations
    return equations[0]


@pytest.mark.parametrize("text, stated", RIGHT)
def test_a_right_equation_is_found_right_with_its_stated_result(text, stated):
    equation = only(text)
    assert equation.correct and equation.stated == stated
    assert text[equation.span[0]:equation.span[1]] == equation.text


@pytest.mark.parametrize("text", WRONG)
def test_a_wrong_equation_is_found_wrong(text):
    assert not only(text).correct


@pytest.mark.parametrize("text", NOT_EQUATIONS)
def test_what_is_not_an_equation_is_not_checked(text):
    assert find_equations(text) == []


def test_a_cut_off_side_starts_after_the_word_and_units_after_the_result_are_fine():
    assert [e.text for e in find_equations("5 cookies * 3 = 15. Then 15 + 2 = 17 cookies")] == ["15 + 2 = 17"]


def test_a_gsm8k_annotation_is_checked_once_and_the_text_around_it_is_no_second_equation():
    trace = "Natalia sold 48/2 = <<48/2=24>>24 clips in May. 48+24 = <<48+24=72>>72 in all."
    equations = find_equations(trace)
    assert [(e.text, e.value, e.correct) for e in equations] == [("48/2=24", 24, True), ("48+24=72", 72, True)]
    assert all(trace[e.span[0]:e.span[1]] == e.text for e in equations)


def test_every_equation_of_a_trace_is_found_in_order():
    trace = "She sold 48/2 = 24 clips in May. 48 + 24 = 71 in all; 3 * 3 = 9 and 2 + 2 = 4, so x = 72."
    assert [(e.text, e.correct) for e in find_equations(trace)] == [
        ("48/2 = 24", True), ("48 + 24 = 71", False), ("3 * 3 = 9", True), ("2 + 2 = 4", True)]


@st.composite
def expressions(draw, depth: int = 3, compound: bool = False) -> tuple[str, Fraction, int]:
    """(text, oracle value, precedence) of a random expression over 0..12, an operation at the top when
    ``compound``. The value is computed from the tree as it is built; the text carries the parentheses the tree
    needs and, at random, some it does not."""
    if not compound and (depth == 0 or draw(st.integers(0, 3)) == 0):
        n = draw(st.integers(0, 12))
        return str(n), Fraction(n), 3
    (a, x, pa), (b, y, pb) = draw(expressions(depth - 1)), draw(expressions(depth - 1))
    op = draw(st.sampled_from("+-*/"))
    if op == "/" and y == 0:
        op = "*"
    prec = 1 if op in "+-" else 2
    if pa < prec or (pa < 3 and draw(st.booleans())):
        a = f"({a})"
    if pb < prec or (pb == prec and op in "-/") or (pb < 3 and draw(st.booleans())):
        b = f"({b})"
    value = {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else x * y}[op]
    return f"{a} {op} {b}", value, prec


@settings(max_examples=150, deadline=None)
@given(expressions(compound=True))
def test_the_parser_agrees_with_an_oracle_and_equations_of_it_are_judged_right(expression):
    text, value, _ = expression
    assert evaluate(text) == value
    assert only(f"{text} = {value}").correct
    assert not only(f"{text} = {value + 1}").correct


@pytest.mark.parametrize("text", [
    "__import__('os')", "os.system('ls')", "open('f').read()", "lambda: 1", "x + 1", "two + two", "1 if 1 else 2",
    "", "   ", "3 +", "(3 + 4", "3 + 4)", "1 / 0", "5 / (2 - 2)", "0 ^ -1", "100 + 10%", "<<1+1=2>>", "3 = 3",
    "2 ** 1000000", "2 ^ 100000", f"2 ^ {MAX_BITS}", "3 ^ 9000", "(2^100)^200", "9^9^9^9", "2 ^ 0.5",
    "(" * 200 + "1" + ")" * 200, "-" * 200 + "1",
])
def test_evaluate_refuses_what_is_not_small_arithmetic_with_a_value_error(text):
    with pytest.raises(ValueError, match="Expected `expression`"):
        evaluate(text)


def test_evaluate_reads_the_written_forms_of_operators_and_numbers():
    assert evaluate("2 x 3") == evaluate("2 × 3") == evaluate("2 · 3") == evaluate("2 times 3") == 6
    assert evaluate("6 ÷ 2") == evaluate("6 divided by 2") == evaluate("5 − 2") == 3
    assert evaluate("$1,200 + $300") == 1500 and evaluate(".5 * 4") == 2 and evaluate("20% of 50") == 10
    assert evaluate("2 ** 10") == evaluate("2^10") == 1024 and evaluate("2 ^ -2") == Fraction(1, 4)
    assert evaluate("8 - 3 - 2") == 3 and evaluate("8 / 4 / 2") == 1 and evaluate("-2 ^ 2") == -4
    assert evaluate("- 3") == -3 and evaluate("10-20") == -10 and evaluate("12/4/3") == 1
    assert evaluate(f"2 ^ {MAX_BITS - 1}") == 2 ** (MAX_BITS - 1) and evaluate("1 ^ 10 ^ 100") == 1
    with pytest.raises(TypeError):
        evaluate(3)


@pytest.mark.parametrize("text, numbers", [
    ("1,234 apples", [1234]), ("$5.50 each", [Fraction(11, 2)]), ("3/4 of them", [Fraction(3, 4)]),
    ("-3 degrees", [-3]), ("50% off", [50]), ("it is 72.", [72]), ("3.5 and .5", [Fraction(7, 2), Fraction(1, 2)]),
    ("on 12/25/2020", []), ("x2 H2O 15kg 3rd", []), ("at 3:00", []), ("version 1.2.3", []), ("5-3", [5, 3]),
    ("3 / 4", [3, 4]), ("48/2 = <<48/2=24>>24", [24, 24, 24, 24]), ("1" * 2000, []), ("no numbers", []),
])
def test_numbers_in_reads_numbers_as_written(text, numbers):
    assert numbers_in(text) == numbers


def test_gold_results_are_the_annotations_else_the_equations_else_none():
    gsm8k = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
             "altogether in April and May.\n#### 72")
    assert gold_results(gsm8k) == [24, 72]
    assert gold_results("<<2*3=6>> <<12/2=6>> <<6+1=7>> <<10/3=3.33>>") == [6, 7, Fraction(333, 100)]
    assert gold_results("3 * 4 = 12 eggs. 12 - 2 = 10 left. 5 + 5 = 10.") == [12, 10]
    assert gold_results("Ten eggs, two broken: eight left.") == [] and gold_results("x = 5") == []


@pytest.mark.parametrize("text, sentences", [
    ("It weighs 3.5 kg. Then .5 more.", ["It weighs 3.5 kg.", "Then .5 more."]),
    ("3.5 * 2 = 7. 7 + 1 = 8.", ["3.5 * 2 = 7.", "7 + 1 = 8."]),
    ("It is 72.5 more than 7.", ["It is 72.5 more than 7."]), ("Step 1. Add.", ["Step 1.", "Add."]),
    ("see fig.5 now", ["see fig.", "5 now"]),
])
def test_split_sentences_keeps_decimal_points(text, sentences):
    assert split_sentences(text)[0] == sentences


def test_sentence_marks_align_with_split_sentences():
    trace = "We have 3.5 kg. 3.5 * 2 = 7 and 7 + 1 = 8. Then 8 - 3 = 6! So we are done; 2 + 2 = 4 = 4\nThe end"
    check = check_arithmetic(trace)
    sentences = split_sentences(trace)[0]
    assert sentences[0] == "We have 3.5 kg." and len(check.sentence_correct) == len(sentences) == 6
    assert check.sentence_correct == [None, True, False, None, True, None]


def test_trace_correct_with_gold_results_needs_every_result_reached_and_no_wrong_equation():
    solution = "48/2 = <<48/2=24>>24 clips in May; 48+24 = <<48+24=72>>72 in all."
    right = check_arithmetic("In May 48 / 2 = 24. In all 48 + 24 = 72. The answer is 72.", solution)
    assert right.gold == [24, 72] and right.reached == [True, True] and right.trace_correct is True
    skipped = check_arithmetic("She sold 72 in all.", solution)
    assert skipped.reached == [False, True] and skipped.trace_correct is False
    wrong = check_arithmetic("48 / 2 = 24 and 24 + 48 = 70, so 72.", solution)
    assert wrong.reached == [True, True] and wrong.trace_correct is False


def test_trace_correct_without_gold_results_is_no_wrong_equation_or_none():
    assert check_arithmetic("I think it is 7.").trace_correct is None
    assert check_arithmetic("3 + 4 = 7.", "Seven.").trace_correct is True  # a solution without results: no gold
    assert check_arithmetic("3 + 4 = 7. 7 * 2 = 15.").trace_correct is False
    check = check_arithmetic("3 + 4 = 7.")
    assert isinstance(check, ArithmeticCheck) and check.gold == [] and check.reached == []


def test_check_arithmetic_refuses_what_is_not_a_string():
    with pytest.raises(TypeError):
        check_arithmetic(None)
    with pytest.raises(TypeError):
        check_arithmetic("3 + 4 = 7", 7)


MESSY = st.text(alphabet="0123456789 +-−*/x×÷=().,%$£\\:<>^?\nabis_", max_size=60)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=80), MESSY), st.one_of(st.none(), st.text(max_size=40), MESSY))
def test_check_arithmetic_never_raises_on_a_string(text, solution):
    check = check_arithmetic(text, solution)
    assert len(check.sentence_correct) == len(split_sentences(text)[0]) and len(check.reached) == len(check.gold)
    for equation in check.equations:
        assert text[equation.span[0]:equation.span[1]] == equation.text
    numbers_in(text)
