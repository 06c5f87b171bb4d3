"""``kdlens crosscoder CONFIG`` (issue 18) on two tiny Llamas saved as local checkpoints and a file of texts: the
stages run and resume from the cache, the CLI prints the fit and the exclusive latents, and bad texts are named."""

import json

import pytest
from typer.testing import CliRunner

from kdlens.cli import app
from kdlens.diffing.run import diff
from kdlens.rundir import RunDir
from tests.probes.test_lm_representations import TEXTS, word_lm


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    for seed in (0, 1):
        model = word_lm(seed, layers=2)
        model.model.save_pretrained(root / f"m{seed}")
        model.tokenizer.save_pretrained(root / f"m{seed}")
    texts = root / "texts.jsonl"
    texts.write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS * 8))
    return root


def config(pair, run_dir, **texts) -> dict:
    return {"run_dir": str(run_dir), "first": {"checkpoint": str(pair / "m0")},
            "second": {"checkpoint": str(pair / "m1")}, "names": ["base", "tuned"],
            "texts": {"path": str(pair / "texts.jsonl"), "field": "body", **texts},
            "crosscoder": {"eval_share": 0.25, "training": {"epochs": 5, "k": 4, "batch_size": 64, "expansion": 2}}}


def test_the_stages_run_and_resume(pair, tmp_path):
    found = diff(config(pair, tmp_path / "run"), progress=False)
    run = RunDir(tmp_path / "run")
    assert found["base"] == "base" and found["distilled"] == "tuned" and found["pairing"] == "token"
    assert found["n_latents"] == 32 and found["layers"] == ["layers.0", "layers.0"]
    rows = sum(len(t.split()) for t in TEXTS * 8)  # one row per word token (the BOS has no text)
    assert found["n_rows"] == rows and found["inside"]["base"]["original"]["tokens"] > 0
    assert json.loads((tmp_path / "run" / "crosscoder.json").read_text())["fit"] == found["fit"]
    stamp = run.stage("crosscoder-train-tuned").file("arrays.safetensors").stat().st_mtime_ns
    again = diff(config(pair, tmp_path / "run"), progress=False)
    assert again["fit"] == found["fit"]
    assert run.stage("crosscoder-train-tuned").file("arrays.safetensors").stat().st_mtime_ns == stamp


def test_the_command_prints_the_fit_and_the_latents(pair, tmp_path):
    path = tmp_path / "diff.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config(pair, tmp_path / "run")))
    result = CliRunner().invoke(app, ["crosscoder", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "held-out FVE" in result.output and "latents one model has alone" in result.output
    assert "crosscoder.json" in result.output


def test_bad_texts_are_named(pair, tmp_path):
    with pytest.raises(ValueError, match=r"Expected `texts.field` to be one of texts.jsonl's columns \(body\), but got "
                                         r"'text'"):
        diff({**config(pair, tmp_path / "a"), "texts": {"path": str(pair / "texts.jsonl")}}, progress=False)
    with pytest.raises(FileNotFoundError, match="no such file"):
        diff({**config(pair, tmp_path / "b"), "texts": {"path": str(tmp_path / "none.txt")}}, progress=False)
    (tmp_path / "one.txt").write_text("only one text\n\n")
    with pytest.raises(ValueError, match="at least 2 non-empty texts"):
        diff({**config(pair, tmp_path / "c"), "texts": {"path": str(tmp_path / "one.txt")}}, progress=False)
    with pytest.raises(ValueError, match="base and students belong to the audit's probe"):
        diff({**config(pair, tmp_path / "d"), "crosscoder": {"base": "x"}}, progress=False)


def test_texts_are_read_by_line_by_paragraph_and_from_several_files(tmp_path):
    from kdlens.diffing.config import TextsSource
    from kdlens.diffing.run import read_texts_file

    (tmp_path / "a.md").write_text("# Title\n\nfirst paragraph\nits second line\n\n\n\nlast one\n")
    (tmp_path / "b.txt").write_text("line one\n\nline two\n")
    paths = [str(tmp_path / "a.md"), str(tmp_path / "b.txt")]
    assert read_texts_file(TextsSource(path=paths)) == ["# Title", "first paragraph its second line", "last one",
                                                        "line one", "line two"]
    assert read_texts_file(TextsSource(path=paths, n=2)) == ["# Title", "first paragraph its second line"]
    with pytest.raises(ValueError, match=r"Expected `texts.path` to be a .txt, .md, .jsonl"):
        (tmp_path / "c.bin").write_text("x")
        read_texts_file(TextsSource(path=str(tmp_path / "c.bin")))


def test_activations_can_be_stored_in_bfloat16(pair, tmp_path):
    import torch

    settings = config(pair, tmp_path / "run")
    settings["crosscoder"] = {**settings["crosscoder"], "dtype": "bfloat16",
                              "training": {**settings["crosscoder"]["training"], "epochs": 1}}
    found = diff(settings, progress=False)
    stage = RunDir(tmp_path / "run").stage("crosscoder-activations-tuned")
    arrays = stage.arrays()
    assert arrays["first"].dtype == torch.bfloat16 and arrays["second"].dtype == torch.bfloat16
    scale = stage.figures()["scales"][0]
    assert float((arrays["first"].double() * scale).norm(dim=1).mean()) == pytest.approx(16 ** 0.5, rel=1e-6)
    assert found["fit"]["n_rows"] > 0
