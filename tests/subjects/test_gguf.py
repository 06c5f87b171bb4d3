"""GGUF sources: a real llama.cpp file (SmolLM2-135M-Instruct, Q4_1) loads through the audit's source rule and is
audited end to end; a bad path or file is one clear error each."""

import math

import pytest
import torch

from kdlens import audit
from kdlens.rundir import RunDir
from kdlens.subjects import LanguageModel
from kdlens.subjects.sources import ModelSource, load_models
from kdlens.tasks import chains
from tests.real_models import smollm2_gguf


@pytest.fixture(scope="module")
def smollm2():
    """Loaded once, as a config's ``gguf:`` source is (about 30 s: the weights are dequantised)."""
    return load_models({"smollm2": ModelSource(gguf=str(smollm2_gguf()))}, "lm", progress=False)["smollm2"]


def test_the_real_file_is_a_llama_with_its_own_vocabulary_and_chat_template(smollm2):
    assert isinstance(smollm2, LanguageModel) and smollm2.name == "smollm2"
    assert type(smollm2.model).__name__ == "LlamaForCausalLM" and smollm2.model.config.vocab_size == 49152
    assert 130e6 < sum(p.numel() for p in smollm2.model.parameters()) < 140e6
    assert next(smollm2.model.parameters()).dtype == torch.float32  # dequantised
    assert smollm2.tokenizer.chat_template is not None and "<|im_start|>" in smollm2.tokenizer.chat_template
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = smollm2.model(**ids).logits[0, -1]
    assert math.isfinite(float(logits.logsumexp(-1)))
    assert smollm2.tokenizer.decode(int(logits.argmax())).strip() == "Paris"  # a real model, not random weights


def test_a_real_model_audits_against_itself_end_to_end(smollm2, tmp_path):
    config = {"run_dir": str(tmp_path / "run"), "data": {"task": "reasoning", "babi": None, "n": 3,
                                                         "chains": {"max_steps": 1}},
              "probes": {"traces": {"max_new_tokens": 12, "batch_size": 3}, "calibration": {"enabled": False},
                         "representations": {"n": 3}}}
    results = audit.run(config, teacher=smollm2, students={"same": smollm2}, progress=False)
    entry = results["students"]["same"]
    run = RunDir(tmp_path / "run")
    texts = {name: [row["text"] for row in run.stage(f"generate-{name}").rows()] for name in ("teacher", "same")}
    assert texts["teacher"] == texts["same"] and all(texts["teacher"])  # greedy decoding: the same traces
    assert entry["cka_mean_best"] == pytest.approx(1.0)
    questions = chains.make_split(chains.ChainsConfig(max_steps=1), "test", 3)
    assert results["data"]["splits"] == {"test": len(questions)}


def test_a_gguf_source_is_for_language_models_only(tmp_path):
    with pytest.raises(ValueError, match="GGUF files hold language models"):
        load_models({"m": ModelSource(gguf=str(tmp_path))}, "classifier")


@pytest.mark.parametrize("setup, error, message", [
    (lambda d: d / "missing.gguf", FileNotFoundError, "no such file or folder"),
    (lambda d: d, FileNotFoundError, r"holding exactly one, but got .* holding none"),
    (lambda d: [(d / n).write_bytes(b"GGUF") for n in ("a.gguf", "b.gguf")] and d, ValueError,
     r"holding \['a.gguf', 'b.gguf'\]. Name the file itself"),
    (lambda d: (d / "m.gguf").write_bytes(b"PK\x03\x04 not gguf") and d / "m.gguf", ValueError,
     "a GGUF file .it starts with the bytes GGUF., but got .*m.gguf, which does not"),
])
def test_a_bad_gguf_path_is_one_clear_error(tmp_path, setup, error, message):
    with pytest.raises(error, match=message):
        load_models({"m": ModelSource(gguf=str(setup(tmp_path)))}, "lm")


def test_gguf_is_one_source_among_the_others():
    with pytest.raises(ValueError, match="exactly one of checkpoint, architecture, gguf or lab"):
        ModelSource(gguf="a.gguf", checkpoint="b")
