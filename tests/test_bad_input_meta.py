"""The bad-input meta-test beyond the measures: kdlens.subjects, kdlens.probes and every config model.

In the spirit of tests/measures/test_bad_inputs.py, each case feeds one public function, method or constructor one
bad value (a wrong type, a NaN tensor, a wrong shape, a bad int or flag) and checks that it raises a ValueError,
TypeError or KeyError in the one template, ``Expected `name` to ..., but got ...``, naming the argument at fault.
Config models must refuse an unknown key and name the closest valid one.

A case where a probe still takes garbage silently (or lets a torch error through) is a strict xfail: it records the
gap, and fails once the probe is fixed, so the mark is removed then. Everything runs on tiny models in seconds.
"""

from __future__ import annotations

import itertools
import math
import re
import typing
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel
from torch import nn

from kdlens import probes as P
from kdlens import subjects as S
from kdlens.config import StrictModel, validate

TEMPLATE = re.compile(r"Expected `[^`]+`(?: and `[^`]+`)? to \w+ .+, but got .+", re.S)
CORPUS = ["mary went to the garden .", "john went to the kitchen .", "where is mary ? mary is in the garden ."]
OTHER_CORPUS = ["one two three four ."]


class Things:
    """Tiny models and inputs, built once: a CNN, token models, two language models, a checkpoint folder."""

    def __init__(self, folder: Path) -> None:
        torch.manual_seed(0)
        self.folder = folder
        self.checkpoint = S.save_classifier(nn.Linear(2, 3), folder / "linear", {"in_features": 2, "out_features": 3})
        self.cnn = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))  # (B, 3, H, W) -> (B, 3)
        self.clf = S.Classifier(self.cnn, "cnn")
        self.x = torch.rand(2, 3, 4, 4)
        self.nan_x = self.x.clone()
        self.nan_x[1, 0, 2, 2] = math.nan
        self.ids = torch.tensor([[1, 2, 3], [4, 5, 6]])  # (B, T) token ids
        self.token_classifier = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))  # (B, 2)
        self.token_lm = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))  # (B, T, 10)
        self.lm = self._lm(CORPUS, "tiny")
        self.other_lm = self._lm(OTHER_CORPUS, "other")
        self.states = torch.randn(4, 8)  # (T, d)
        self.nan_states = self.states.clone()
        self.nan_states[2, 5] = math.nan
        self.offsets = [(0, 0), (0, 4), (5, 9), (10, 12)]  # bos, mary, went, to

    @staticmethod
    def _lm(corpus: list[str], name: str) -> S.LanguageModel:
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = S.build_word_tokenizer(corpus)
        net = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), **S.SPECIAL_TOKEN_IDS, hidden_size=16,
                                           intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           num_key_value_heads=1, max_position_embeddings=16))
        return S.LanguageModel(net, tok, name)


@pytest.fixture(scope="module")
def things(tmp_path_factory) -> Things:
    return Things(tmp_path_factory.mktemp("bad_input_meta"))


def enter(context_manager):
    with context_manager:
        pass


CASE_NUMBER = itertools.count()


def case(public: str, call, error: type[Exception], name: str, gap: str = ""):
    """One bad call of the public name ``public``; ``gap`` marks a known hole (a strict xfail saying what it is)."""
    marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
    return pytest.param(public, call, error, name, marks=marks, id=f"{public}-{name}-{next(CASE_NUMBER)}")


SUBJECT_CASES = [
    # Classifier
    case("Classifier", lambda t: S.Classifier("net"), TypeError, "model"),
    case("Classifier", lambda t: S.Classifier(t.cnn, name=3), TypeError, "name"),
    case("Classifier", lambda t: t.clf.resolve("conv1"), KeyError, "layer"),
    case("Classifier", lambda t: t.clf.resolve(0), TypeError, "layer"),
    case("Classifier", lambda t: enter(t.clf.capture(["nope"])), KeyError, "layer"),
    case("Classifier", lambda t: enter(t.clf.capture(["0"], detach="no")), TypeError, "detach"),
    case("Classifier", lambda t: t.clf.logits([[1.0, 2.0]]), TypeError, "inputs"),
    case("Classifier", lambda t: t.clf.logits(t.nan_x), ValueError, "inputs"),
    case("Classifier", lambda t: t.clf.logits(t.x[:0]), ValueError, "inputs"),
    case("Classifier", lambda t: t.clf.logits(torch.tensor(1.0)), ValueError, "inputs"),
    case("Classifier", lambda t: t.clf.logits(t.x, batch_size=0), ValueError, "batch_size"),
    case("Classifier", lambda t: t.clf.logits(t.x, batch_size=2.5), ValueError, "batch_size"),
    case("Classifier", lambda t: t.clf.logits(t.x, batch_size=True), ValueError, "batch_size"),
    case("Classifier", lambda t: t.clf.run(t.x, ["nope"]), KeyError, "layer"),
    case("Classifier", lambda t: t.clf.run(t.nan_x, ["0"]), ValueError, "inputs"),
    case("Classifier", lambda t: t.clf.run(t.x, batch_size="8"), ValueError, "batch_size"),
    case("Classifier", lambda t: S.Classifier(nn.Identity(), "same").forward(t.x), ValueError, "same(inputs)"),
    # checkpoints
    case("build_architecture", lambda t: S.build_architecture("torch.nn.Linear", {}), ValueError, "architecture"),
    case("build_architecture", lambda t: S.build_architecture("os.path:join", {}), ValueError, "architecture"),
    case("build_architecture", lambda t: S.build_architecture("kdlens.nothing:Here", {}), ValueError,
         "architecture"),
    case("build_architecture", lambda t: S.build_architecture("torch.nn:Linear", [2, 3], True), TypeError,
         "kwargs"),
    case("build_architecture", lambda t: S.build_architecture("torch.nn:Linear", {}, trust_remote_code="yes"),
         TypeError, "trust_remote_code"),
    case("save_classifier", lambda t: S.save_classifier("net", t.folder / "never", {}), TypeError, "model"),
    case("save_classifier", lambda t: S.save_classifier(t.cnn, t.folder / "never", kwargs=3), TypeError, "kwargs"),
    case("load_weights", lambda t: S.load_weights("net", t.folder / "model.safetensors"), TypeError, "model"),
    case("load_weights", lambda t: S.load_weights(nn.Linear(3, 3), t.checkpoint / "model.safetensors"), ValueError,
         "{checkpoint}/model.safetensors"),
    case("load_classifier", lambda t: S.load_classifier(t.checkpoint, trust_remote_code="yes"), TypeError,
         "trust_remote_code"),
    # the word tokenizer
    case("build_word_tokenizer", lambda t: S.build_word_tokenizer("mary went"), TypeError, "texts"),
    case("build_word_tokenizer", lambda t: S.build_word_tokenizer(3), TypeError, "texts"),
    case("build_word_tokenizer", lambda t: S.build_word_tokenizer([3]), TypeError, "texts[0]"),
    case("build_word_tokenizer", lambda t: S.build_word_tokenizer([]), ValueError, "texts"),
    case("build_word_tokenizer", lambda t: S.build_word_tokenizer(CORPUS, min_count=0), ValueError, "min_count"),
    case("build_word_tokenizer", lambda t: S.build_word_tokenizer(CORPUS, lowercase="yes"), TypeError,
         "lowercase"),
    case("build_word_tokenizer", lambda t: S.build_word_tokenizer(CORPUS, padding_side="up"), ValueError,
         "padding_side"),
    case("build_word_tokenizer", lambda t: S.build_word_tokenizer(CORPUS, extra_tokens=[" x"]), ValueError,
         "extra_tokens[0]"),
    # word spans and pooling
    case("word_spans", lambda t: S.word_spans(3), TypeError, "text"),
    case("pool_by_spans", lambda t: S.pool_by_spans([[1.0]], [(0, 1)], [(0, 1)]), TypeError, "states"),
    case("pool_by_spans", lambda t: S.pool_by_spans(t.states.long(), t.offsets, [(0, 4)]), TypeError, "states"),
    case("pool_by_spans", lambda t: S.pool_by_spans(t.states[0], t.offsets, [(0, 4)]), ValueError, "states"),
    case("pool_by_spans", lambda t: S.pool_by_spans(t.nan_states, t.offsets, [(0, 4)]),
         ValueError, "states"),
    case("pool_by_spans", lambda t: S.pool_by_spans(t.states, t.offsets[:3], [(0, 4)]), ValueError, "offsets"),
    case("pool_by_spans", lambda t: S.pool_by_spans(t.states, 4, [(0, 4)]), TypeError, "offsets"),
    case("pool_by_spans", lambda t: S.pool_by_spans(t.states, [(0, 0.5)] * 4, [(0, 4)]), TypeError, "offsets"),
    case("pool_by_spans", lambda t: S.pool_by_spans(t.states, t.offsets, []), ValueError, "spans"),
    case("pool_by_spans", lambda t: S.pool_by_spans(t.states, t.offsets, [(0, 4, 9)]), ValueError, "spans"),
    case("pool_by_spans", lambda t: S.pool_by_spans(t.states, t.offsets, [(20, 30)]), ValueError, "spans[0]"),
    # LanguageModel
    case("LanguageModel", lambda t: S.LanguageModel("net", t.lm.tokenizer), TypeError, "model"),
    case("LanguageModel", lambda t: S.LanguageModel(t.lm.model, "tokenizer"), TypeError, "tokenizer"),
    case("LanguageModel", lambda t: S.LanguageModel(t.lm.model, t.lm.tokenizer, name=3), TypeError, "name"),
    case("LanguageModel", lambda t: S.LanguageModel.from_pretrained(t.folder, dtype="int8"), ValueError, "dtype"),
    case("LanguageModel", lambda t: S.LanguageModel.from_pretrained(t.folder, trust_remote_code=1), TypeError,
         "trust_remote_code"),
    case("LanguageModel", lambda t: t.lm.score("mary", [" went"]), TypeError, "contexts"),
    case("LanguageModel", lambda t: t.lm.score([], []), ValueError, "contexts"),
    case("LanguageModel", lambda t: t.lm.score(["mary"], [3]), TypeError, "continuations[0]"),
    case("LanguageModel", lambda t: t.lm.score(["mary"], [""]), ValueError, "continuations[0]"),
    case("LanguageModel", lambda t: t.lm.score(["mary", "john"], [" went"]), ValueError, "contexts"),
    case("LanguageModel", lambda t: t.lm.score(["mary"], [" went"], batch_size=0), ValueError, "batch_size"),
    case("LanguageModel", lambda t: t.lm.score(["mary"], [" the" * 20]), ValueError,
         "contexts[0] + continuations[0]"),
    case("LanguageModel", lambda t: t.lm.hidden_states(["mary"], batch_size=1.5), ValueError, "batch_size"),
    case("LanguageModel", lambda t: t.lm.hidden_states("mary"), TypeError, "texts"),
    case("LanguageModel", lambda t: t.lm.token_logits([None]), TypeError, "texts[0]"),
    case("LanguageModel", lambda t: t.lm.token_logits(["the " * 20]), ValueError, "texts[0]"),
    case("LanguageModel", lambda t: t.lm.encode("mary"), TypeError, "texts"),
    case("LanguageModel", lambda t: t.lm.encode(["mary"], extra_positions=-1), ValueError, "extra_positions"),
    case("LanguageModel", lambda t: t.lm.encode(["mary"], offsets="yes"), TypeError, "offsets"),
    case("LanguageModel", lambda t: t.lm.generate("mary"), TypeError, "prompts"),
    case("LanguageModel", lambda t: t.lm.generate(["mary"], max_new_tokens=0), ValueError, "max_new_tokens"),
    case("LanguageModel", lambda t: t.lm.generate(["mary"], do_sample=1), TypeError, "do_sample"),
    case("LanguageModel", lambda t: t.lm.generate(["mary"], temperature=math.nan), ValueError, "temperature"),
    case("LanguageModel", lambda t: t.lm.generate(["mary"], temperature="hot"), TypeError, "temperature"),
    case("LanguageModel", lambda t: t.lm.generate(["mary"], top_p=1.5), ValueError, "top_p"),
    case("LanguageModel", lambda t: t.lm.generate(["mary"], seed=1.5), TypeError, "seed"),
    case("LanguageModel", lambda t: t.lm.generate(["mary"], stop=""), ValueError, "stop"),
    case("LanguageModel", lambda t: t.lm.generate(["mary"], batch_size=-1), ValueError, "batch_size"),
    case("LanguageModel", lambda t: t.lm.generate(["the " * 14], max_new_tokens=4), ValueError, "prompts[0]"),
    case("LanguageModel", lambda t: t.lm.same_vocabulary("tiny"), TypeError, "other"),
    case("check_same_vocabulary", lambda t: S.check_same_vocabulary(t.lm, "tiny"), TypeError, "student"),
    case("check_same_vocabulary", lambda t: S.check_same_vocabulary(3, t.lm), TypeError, "teacher"),
    case("check_same_vocabulary", lambda t: S.check_same_vocabulary(t.lm, t.other_lm), ValueError, "student"),
]

PROBE_CASES = [
    # class activation maps
    case("GradCAM", lambda t: P.GradCAM("net", "0"), TypeError, "model"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, "conv2"), KeyError, "layer"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, 2), TypeError, "layer"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, nn.Conv2d(3, 4, 3)), ValueError, "layer"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, "2", reshape=3), TypeError, "reshape"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, "2").attribute([[1.0]], 0), TypeError, "inputs"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, "2").attribute(t.x[:0], 0), ValueError, "inputs"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, "2").attribute(t.x, "teacher"), TypeError, "target"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, "2").attribute(t.x, None), TypeError, "target"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, "2").attribute(t.x, 3), ValueError, "target"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, "2").attribute(t.x, 1.5), TypeError, "target"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, "2").attribute(t.x, [0, 1, 2]), ValueError, "target"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, "6").attribute(t.x, 0), ValueError, "layer"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, "2").attribute(t.nan_x, 0), ValueError, "inputs"),
    case("GradCAM", lambda t: P.GradCAM(t.cnn, "2").attribute(t.x[:, :2], 0), ValueError, "inputs"),
    case("GradCAMPlusPlus", lambda t: P.GradCAMPlusPlus(t.cnn, "nope"), KeyError, "layer"),
    case("GradCAMPlusPlus", lambda t: P.GradCAMPlusPlus(t.cnn, "2").attribute(t.x, -1), ValueError, "target"),
    case("GradCAMPlusPlus", lambda t: P.GradCAMPlusPlus(t.cnn, "2").attribute(t.nan_x, 0), ValueError, "inputs"),
    # gradients in input space
    case("InputXGradient", lambda t: P.InputXGradient("net"), TypeError, "model"),
    case("InputXGradient", lambda t: P.InputXGradient(t.cnn).attribute(t.ids, 0), TypeError, "inputs"),
    case("InputXGradient", lambda t: P.InputXGradient(t.cnn).attribute(torch.tensor(1.0), 0), ValueError, "inputs"),
    case("InputXGradient", lambda t: P.InputXGradient(t.cnn).attribute(t.x, 7), ValueError, "target"),
    case("InputXGradient", lambda t: P.InputXGradient(t.cnn).attribute(t.nan_x, 0), ValueError, "inputs"),
    case("IntegratedGradients", lambda t: P.IntegratedGradients(t.cnn, n_steps=0), ValueError, "n_steps"),
    case("IntegratedGradients", lambda t: P.IntegratedGradients(t.cnn, n_steps=2.5), ValueError, "n_steps"),
    case("IntegratedGradients", lambda t: P.IntegratedGradients(t.cnn, n_steps=True), ValueError, "n_steps"),
    case("IntegratedGradients", lambda t: P.IntegratedGradients(t.cnn, method="simpson"), ValueError, "method"),
    case("IntegratedGradients", lambda t: P.IntegratedGradients(t.cnn, internal_batch_size=0), ValueError,
         "internal_batch_size"),
    case("IntegratedGradients", lambda t: P.IntegratedGradients(t.cnn, 2).attribute(t.x, 0, torch.rand(5)),
         ValueError, "baselines"),
    case("IntegratedGradients", lambda t: P.IntegratedGradients(t.cnn, 2).attribute(t.x, 0, "zeros"), TypeError,
         "baselines"),
    case("IntegratedGradients", lambda t: P.IntegratedGradients(t.cnn, 2).attribute(t.x, [0]), ValueError,
         "target"),
    case("IntegratedGradients", lambda t: P.IntegratedGradients(t.cnn, 2).attribute(t.nan_x, 0), ValueError,
         "inputs"),
    case("IntegratedGradients", lambda t: P.IntegratedGradients(t.cnn, 2).attribute(t.x, 0, t.nan_x), ValueError,
         "baselines"),
    case("IntegratedGradients", lambda t: P.IntegratedGradients(t.cnn, 2).attribute(t.x, 0, math.nan), ValueError,
         "baselines"),
    case("IntegratedGradients", lambda t: P.IntegratedGradients(t.cnn, 2).attribute(
        t.x, 0, return_convergence_delta="no"), TypeError, "return_convergence_delta"),
    # gradients per token
    case("EmbeddingXGradient", lambda t: P.EmbeddingXGradient("net", "0"), TypeError, "model"),
    case("EmbeddingXGradient", lambda t: P.EmbeddingXGradient(t.token_lm, "embed"), KeyError, "layer"),
    case("EmbeddingXGradient", lambda t: P.EmbeddingXGradient(t.token_lm, "0").attribute([[1, 2]], 0), TypeError,
         "inputs"),
    case("EmbeddingXGradient", lambda t: P.EmbeddingXGradient(t.token_lm, "0").attribute(t.ids, 0, "last"),
         TypeError, "position"),
    case("EmbeddingXGradient", lambda t: P.EmbeddingXGradient(t.token_lm, "0").attribute(t.ids, 0, 3), ValueError,
         "position"),
    case("EmbeddingXGradient", lambda t: P.EmbeddingXGradient(t.token_lm, "0").attribute(t.ids, 0, 1.0),
         TypeError, "position"),
    case("EmbeddingXGradient", lambda t: P.EmbeddingXGradient(t.token_lm, "0").attribute(t.ids, 10), ValueError,
         "target"),
    case("EmbeddingXGradient", lambda t: P.EmbeddingXGradient(t.token_classifier, "2").attribute(t.ids, 0),
         ValueError, "layer"),
    case("EmbeddingXGradient", lambda t: P.EmbeddingXGradient(t.token_lm, "0").attribute(t.ids.float(), 0),
         TypeError, "inputs"),
    case("EmbeddingXGradient", lambda t: P.EmbeddingXGradient(t.token_lm, "0").attribute(t.ids + 10, 0),
         ValueError, "inputs"),
    # targets and maps
    case("resolve_targets", lambda t: P.resolve_targets("best"), ValueError, "rule"),
    case("resolve_targets", lambda t: P.resolve_targets("teacher"), ValueError, "teacher_logits"),
    case("resolve_targets", lambda t: P.resolve_targets("student", student_logits=[[0.1, 0.9]]), TypeError,
         "student_logits"),
    case("resolve_targets", lambda t: P.resolve_targets("teacher", teacher_logits=torch.tensor([[math.nan, 1.0]])),
         ValueError, "teacher_logits"),
    case("resolve_targets", lambda t: P.resolve_targets("teacher", teacher_logits=torch.ones(3)), ValueError,
         "teacher_logits"),
    case("resolve_targets", lambda t: P.resolve_targets("label", labels=torch.tensor([0.0, 1.0])), TypeError,
         "labels"),
    case("spatial_map", lambda t: P.spatial_map([[1.0]]), TypeError, "attributions"),
    case("spatial_map", lambda t: P.spatial_map(t.ids), TypeError, "attributions"),
    case("spatial_map", lambda t: P.spatial_map(t.x[0, 0]), ValueError, "attributions"),
    case("spatial_map", lambda t: P.spatial_map(t.x, kind="max"), ValueError, "kind"),
    case("spatial_map", lambda t: P.spatial_map(t.nan_x), ValueError, "attributions"),
]


def check_rejects(call, error: type[Exception], name: str) -> str:
    with pytest.raises(Exception) as info:
        call()
    raised = info.value
    assert isinstance(raised, error), f"raised {type(raised).__name__}: {raised}"
    message = str(raised.args[0]) if raised.args else str(raised)  # a KeyError's str() adds quotes
    assert TEMPLATE.search(message), f"not the kdlens template: {message!r}"
    assert f"Expected `{name}`" in message, f"does not name `{name}`: {message!r}"
    return message


@pytest.mark.parametrize(("public", "call", "error", "name"), SUBJECT_CASES)
def test_subjects_reject_bad_input(things, public, call, error, name):
    check_rejects(lambda: call(things), error, name.format(checkpoint=things.checkpoint))


@pytest.mark.parametrize(("public", "call", "error", "name"), PROBE_CASES)
def test_probes_reject_bad_input(things, public, call, error, name):
    check_rejects(lambda: call(things), error, name)


def test_the_user_errors_are_value_type_or_key_errors():
    """A missing file is the one other kind (FileNotFoundError, an OSError), still in the template."""
    allowed = (ValueError, TypeError, KeyError, FileNotFoundError)
    assert all(issubclass(p.values[2], allowed) for p in SUBJECT_CASES + PROBE_CASES)


RECORDS = {"SPECIAL_TOKEN_IDS", "ContinuationScore", "HiddenStates", "TokenLogits", "DEFAULT_TARGET"}


@pytest.mark.parametrize("module", [S, P], ids=lambda module: module.__name__)
def test_every_public_name_has_bad_input_cases(module):
    """A name added to ``__all__`` needs its cases here (constants and result records take no input)."""
    covered = {p.values[0] for p in SUBJECT_CASES + PROBE_CASES}
    assert set(module.__all__) - RECORDS - covered == set()


def test_missing_files_say_so(things):
    check_rejects(lambda: S.load_classifier(things.folder / "nothing"), FileNotFoundError, "directory")
    check_rejects(lambda: S.load_weights(things.cnn, things.folder / "nothing.safetensors"), FileNotFoundError,
                  "weights")
    check_rejects(lambda: S.LanguageModel.from_pretrained(things.folder / "nothing"), FileNotFoundError, "path")


def test_nothing_was_written_by_the_rejected_calls(things):
    assert not (things.folder / "never").exists()


# --- config models ---------------------------------------------------------------------------------------------


def config_models() -> list[type[BaseModel]]:
    """Every model reachable from the three top-level configs, through fields, unions, lists and dicts."""
    from kdlens.audit import AuditConfig, LMAuditConfig
    from kdlens.distill.run import DistillRunConfig

    def models_in(annotation):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield annotation
            return
        for arg in typing.get_args(annotation):
            yield from models_in(arg)

    found, todo = [], [AuditConfig, LMAuditConfig, DistillRunConfig]
    while todo:
        model = todo.pop(0)
        if model not in found:
            found.append(model)
            for field in model.model_fields.values():
                todo.extend(models_in(field.annotation))
    return found


CONFIG_MODELS = config_models()


def test_the_config_tree_is_large_and_strict():
    assert len(CONFIG_MODELS) > 20  # the walk goes through unions and lists, not just the top level
    loose = [model.__name__ for model in CONFIG_MODELS if not issubclass(model, StrictModel)]
    assert loose == [], f"config models that would ignore a misspelt key: {loose}"


@pytest.mark.parametrize("model", CONFIG_MODELS, ids=lambda model: model.__name__)
def test_an_unknown_key_names_the_closest_valid_one(model):
    key = max(model.model_fields, key=len)
    typo = key + key[-1]  # "batch_size" -> "batch_sizee"
    for call in (lambda: validate({typo: 1}, model), lambda: model.model_validate({typo: 1})):
        with pytest.raises(ValueError) as info:  # pydantic's ValidationError is a ValueError
            call()
        message = str(info.value)
        assert f"unknown key {typo!r} in {model.__name__}" in message
        assert f"Did you mean {key!r}?" in message


def test_a_nested_unknown_key_says_where_it_is():
    from kdlens.audit import AuditConfig

    with pytest.raises(ValueError) as info:
        validate({"probes": {"outputs": {"n_binz": 10}}}, AuditConfig, source="audit.yaml")
    message = str(info.value)
    assert "audit.yaml" in message and "probes.outputs" in message and "Did you mean 'n_bins'?" in message
