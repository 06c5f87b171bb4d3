"""`kdlens select` end to end on the tiny language-model lab (issue 17): k seeded teacher samples per problem, every
sentence scored under the teacher and the original student exactly as the provenance probe scores it, IFD under the
student, one response per problem for each method, written as JSONL and a `datasets` folder; caching, and bad
input."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from kdlens.cli import app
from kdlens.io import read_json
from kdlens.lab import lm
from kdlens.probes import provenance as P
from kdlens.rundir import RunDir
from kdlens.select.choose import METHODS, classify
from kdlens.select.run import select, start_of_text
from kdlens.tasks import babi, chains
from tests.lab.test_lm import tiny


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("select_recipe")
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny().model_dump(mode="json")))
    return {"lab": "lm", "lab_root": str(folder / "labs"), "lab_recipe": str(path)}


def config(recipe, run_dir, **overrides) -> dict:
    return {"run_dir": str(run_dir), "teacher": recipe, "student": {**recipe, "lab_model": "base_student"},
            "data": {"task": "reasoning", "split": "train", "n": 6}, "k": 3, "max_new_tokens": 24, "batch_size": 4,
            **overrides}


@pytest.fixture(scope="module")
def selected(recipe, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("select") / "run"
    return run_dir, select(config(recipe, run_dir), progress=False)


def problems() -> list:
    settings = tiny()
    return chains.make_split(settings.chains, "train", 6) + babi.make_split(settings.babi, "train", 6)


def test_every_method_writes_one_response_per_problem_as_jsonl_and_a_datasets_folder(selected):
    import datasets

    run_dir, found = selected
    assert sorted(found["methods"]) == sorted(METHODS) and found["n_problems"] == 12 and found["k"] == 3
    samples = RunDir(run_dir).stage("samples").rows()
    for method, entry in found["methods"].items():
        path = run_dir / "stages/selection" / f"{method}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(rows) == entry["examples"] == found["n_usable"]
        assert entry["tokens"] == sum(r["tokens"] for r in rows)
        for row in rows:
            assert row["response"] == samples[row["index"]]["texts"][row["sample"]]
            assert row["prompt"] == problems()[row["index"]].prompt and row["answer"] == problems()[row["index"]].answer
        loaded = datasets.load_from_disk(str(run_dir / "stages/selection" / method))
        assert loaded.to_list() == rows


def test_the_scores_are_the_probes_and_the_ifd_the_two_losses(selected, recipe):
    run_dir, _ = selected
    run = RunDir(run_dir)
    lab = lm.build(recipe["lab_root"], tiny(), progress=False)
    teacher, student = lab.model("teacher"), lab.model("base_student")
    texts = [row["texts"] for row in run.stage("samples").rows()]
    checked = 0
    for i, row in enumerate(run.stage("scores").rows()):
        for j, response in enumerate(row["responses"]):
            if not response["scored"]:
                assert response["why"] == "no sentence" and not P.segment(texts[i][j])
                continue
            spans = [tuple(s) for s in response["spans"]]
            assert spans == P.segment(texts[i][j])
            prompt = problems()[i].prompt
            for role, model in (("teacher", teacher), ("student", student)):
                (p,) = P.sentence_probabilities(model, [prompt], [texts[i][j]], [spans])
                assert response[f"p_{role}"] == pytest.approx(p.tolist(), rel=1e-5)
            (given,) = student.score([prompt], [texts[i][j]])
            (alone,) = student.score([start_of_text(student)], [texts[i][j]])
            assert response["tokens"] == len(given.token_logprobs)
            assert response["ifd"] == pytest.approx(given.mean / alone.mean, rel=1e-5)
            checked += 1
    assert checked >= 12


def test_the_teacher_guided_pick_has_the_most_teacher_sentences(selected):
    run_dir, found = selected
    scores = RunDir(run_dir).stage("scores").rows()
    rows = [json.loads(line) for line in (run_dir / "stages/selection/teacher_guided.jsonl").read_text().splitlines()]
    for row in rows:
        counts = [classify(r["p_teacher"], r["p_student"], 0.1).count("teacher") if r["scored"] else -1
                  for r in scores[row["index"]]["responses"]]
        assert row["teacher"] == max(counts) and row["sample"] == counts.index(max(counts))
        assert row["classes"].count("teacher") == row["teacher"]
    fewest = found["methods"]["fewest_teacher"]["teacher_sentences"]
    assert fewest <= found["methods"]["random"]["teacher_sentences"] <= found["methods"]["teacher_guided"][
        "teacher_sentences"]


def test_a_second_run_loads_and_a_new_beta_reads_the_samples_again(selected, recipe, tmp_path):
    import shutil

    run_dir, found = selected
    before = read_json(run_dir / "manifest.json")["stages"]
    assert select(config(recipe, run_dir), progress=False) == found
    assert read_json(run_dir / "manifest.json")["stages"] == before
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    again = select(config(recipe, copy, beta=0.3), progress=False)
    after = read_json(copy / "manifest.json")["stages"]
    assert after["samples"] == before["samples"] and after["scores"] == before["scores"]
    assert again["beta"] == 0.3 and after["selection"]["inputs"] != before["selection"]["inputs"]


def test_the_samples_follow_the_seed(selected, recipe, tmp_path):
    run_dir, _ = selected
    other = tmp_path / "seed1"
    select(config(recipe, other, seed=1, methods=["random"]), progress=False)
    ours = [r["texts"] for r in RunDir(run_dir).stage("samples").rows()]
    assert [r["texts"] for r in RunDir(other).stage("samples").rows()] != ours


def test_the_command_prints_each_selection(selected, recipe, tmp_path):
    run_dir, _ = selected
    path = tmp_path / "select.yaml"
    path.write_text(yaml.safe_dump(config(recipe, run_dir)))
    result = CliRunner().invoke(app, ["select", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "teacher_guided" in result.output and "datasets.load_from_disk" in result.output
    path.write_text(yaml.safe_dump({**config(recipe, run_dir), "kk": 3}))
    result = CliRunner().invoke(app, ["select", str(path)])
    assert result.exit_code != 0 and "Did you mean 'k'?" in result.output


@pytest.mark.parametrize("overrides, message", [
    ({"methods": ["random", "random"]}, "each method once, but random is given twice"),
    ({"methods": ["teacher"]}, "teacher_guided"),
    ({"k": 0}, "greater than or equal to 1"),
    ({"beta": 2}, "less than or equal to 1"),
])
def test_bad_settings_are_named(recipe, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        select(config(recipe, tmp_path / "run", **overrides), progress=False)


def test_ifd_needs_a_start_or_end_of_text_token():
    class Bare:
        bos_token = eos_token = None

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": []}

    model = type("Model", (), {"tokenizer": Bare()})()
    with pytest.raises(ValueError, match="a start- or end-of-text token .* leave ifd out of methods"):
        start_of_text(model)
    model.tokenizer.eos_token = "</s>"
    assert start_of_text(model) == "</s>"
