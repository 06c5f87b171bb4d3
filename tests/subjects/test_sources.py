"""One source rule for classifiers and language models, and resolvers registered by name."""

from __future__ import annotations

import pytest

from kdlens.config import validate
from kdlens.subjects import save_classifier
from kdlens.subjects.sources import ModelSource, Resolver, check_sources, load_models, register, resolver


@pytest.mark.parametrize("fields", [{}, {"checkpoint": "a", "lab": "vision"},
                                    {"checkpoint": "a", "architecture": "kdlens.lab.cnn:SmallCNN"}])
def test_exactly_one_source(fields):
    with pytest.raises(ValueError, match="exactly one of checkpoint, architecture, gguf or lab"):
        validate(fields, ModelSource)


def test_lab_settings_go_with_lab():
    with pytest.raises(ValueError, match="lab_model and lab_recipe go with lab"):
        validate({"checkpoint": "a", "lab_model": "output_kd"}, ModelSource)


def test_the_lab_resolves_through_its_entry_point():
    assert resolver("vision").kind == "classifier" and resolver("lm").kind == "lm"


def test_an_unknown_resolver_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"but got 'visoin'\. Did you mean 'vision'\?"):
        check_sources({"t": validate({"lab": "visoin"}, ModelSource)}, "classifier")


def test_a_resolver_of_the_other_kind_is_refused():
    with pytest.raises(ValueError, match="Expected `lab` to be one of lm, but got 'vision'"):
        check_sources({"t": validate({"lab": "vision"}, ModelSource)}, "lm")


def test_each_kind_refuses_the_other_kinds_fields():
    with pytest.raises(ValueError, match="a language model.*save_pretrained"):
        check_sources({"s": validate({"architecture": "kdlens.lab.cnn:SmallCNN"}, ModelSource)}, "lm")
    with pytest.raises(ValueError, match="no dtype for model 's'"):
        check_sources({"s": validate({"checkpoint": "x", "dtype": "bfloat16"}, ModelSource)}, "classifier")


def test_a_registered_resolver_builds_its_models_and_the_rest_load_from_files(tmp_path):
    from kdlens.lab.cnn import SmallCNN

    save_classifier(SmallCNN(n_classes=3, widths=(2, 4, 4)), tmp_path / "ckpt", {"n_classes": 3, "widths": [2, 4, 4]})
    built = []

    def load(wanted, device="cpu", progress=True, overrides=None):
        built.append((sorted(wanted), overrides))
        return {name: SmallCNN(n_classes=3, widths=(2, 4, 4)) for name in wanted}

    register("toy", Resolver("classifier", check=lambda source: None, load=load))
    sources = {"a": validate({"lab": "toy"}, ModelSource), "b": validate({"checkpoint": str(tmp_path / "ckpt")},
                                                                          ModelSource),
               "c": validate({"lab": "toy", "lab_model": "other"}, ModelSource)}
    models = load_models(sources, "classifier", overrides={"shapes": "x"})
    assert list(models) == ["a", "b", "c"] and built == [(["a", "c"], {"shapes": "x"})]


def test_a_dtype_on_a_lab_model_is_refused_not_ignored():
    with pytest.raises(ValueError, match="no dtype for model 's' .*lab model loads in the dtype it was trained in"):
        check_sources({"s": validate({"lab": "lm", "dtype": "float16"}, ModelSource)}, "lm")
