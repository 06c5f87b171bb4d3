"""Questions from local files: the same rows from JSON lines, CSV and Parquet, a field map, GSM8K-style answers,
and one clear error per bad file."""

import json

import pytest

from kdlens.tasks.questions import Question, load_questions

ROWS = [{"problem": "Tom has 3 apples and buys 4. How many?", "solution": "3 + 4 = 7", "gold": 7, "level": 1,
         "topic": "addition"},
        {"problem": "Which is a fruit?", "solution": None, "gold": "B", "level": 2, "topic": "choice",
         "options": "carrot|apple|leek"}]
FIELDS = {"question": "problem", "answer": "gold", "trace": "solution", "difficulty": "level", "category": "topic",
          "choices": "options"}


def write(tmp_path, kind: str, rows=ROWS):
    import datasets

    path = tmp_path / f"questions.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        text_gold = [{k: str(r[k]) if k == "gold" else r.get(k) for k in rows[-1]} for r in rows]  # one type a column
        table = datasets.Dataset.from_list(text_gold)
        table.to_csv(str(path), index=False) if kind == "csv" else table.to_parquet(str(path))
    return path


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_every_format_gives_the_same_questions(tmp_path, kind):
    questions = load_questions(write(tmp_path, kind), fields=FIELDS)
    assert [q.question for q in questions] == [r["problem"] for r in ROWS]
    assert [q.answer for q in questions] == ["7", "B"] and questions[0].trace == "3 + 4 = 7"
    assert questions[1].choices == ("carrot", "apple", "leek") and questions[0].difficulty == 1.0
    assert [q.category for q in questions] == ["addition", "choice"]
    assert [q.line for q in questions] == ([2, 3] if kind == "csv" else [1, 2])


def test_a_gsm8k_answer_is_split_into_solution_and_gold(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "She sold 48/2 = <<48/2=24>>24 in May.\n#### 72"}) + "\n")
    (question,) = load_questions(path)
    assert question == Question("q", "72", "She sold 48/2 = <<48/2=24>>24 in May.", line=1)


def test_the_first_n(tmp_path):
    assert len(load_questions(write(tmp_path, "jsonl"), fields=FIELDS, n=1)) == 1


@pytest.mark.parametrize("setup, error, message", [
    (lambda d: d / "none.jsonl", FileNotFoundError, "no such file"),
    (lambda d: (d / "e.jsonl").write_text("") and d / "e.jsonl" or d / "e.jsonl", ValueError, "an empty file"),
    (lambda d: (d / "b.jsonl").write_text('{"question": "q", "answer": 1}\n{"question": oops}\n') and d / "b.jsonl",
     ValueError, r"b.jsonl, line 2` to be one JSON object per line"),
    (lambda d: (d / "m.jsonl").write_text('{"q": "x", "answer": 1}\n') and d / "m.jsonl", ValueError,
     r"a column 'question' \(fields.question\), but got the columns \['q', 'answer'\]. Map yours"),
    (lambda d: (d / "a.jsonl").write_text('{"question": "x", "answer": ""}\n') and d / "a.jsonl", ValueError,
     r"a.jsonl, line 1` to be a answer"),
    (lambda d: (d / "q.txt").write_text("x") and d / "q.txt", ValueError, "Give format: jsonl, csv or parquet"),
])
def test_a_bad_file_is_one_clear_error(tmp_path, setup, error, message):
    with pytest.raises(error, match=message):
        load_questions(setup(tmp_path))


def test_a_field_map_typo_suggests_the_name(tmp_path):
    with pytest.raises(ValueError, match="questoin.*Did you mean 'question'"):
        load_questions(write(tmp_path, "jsonl"), fields={"questoin": "problem"})
