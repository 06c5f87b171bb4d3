"""Strict configs: typos get suggestions, YAML round-trips, presets resolve."""

import pytest

from kdlens.config import dump_yaml, load_yaml, validate
from kdlens.distill.config import StrategyConfig, TrainConfig


def test_typo_in_a_key_suggests_the_right_one():
    with pytest.raises(ValueError, match=r"unknown key 'epocs' in TrainConfig\. Did you mean 'epochs'\?"):
        validate({"epocs": 3}, TrainConfig)


def test_typo_inside_a_loss_term_suggests_the_right_one():
    with pytest.raises(ValueError, match=r"terms\.0\.kd.*unknown key 'temprature'.*'temperature'"):
        validate({"terms": [{"loss": "kd", "temprature": 4}]}, StrategyConfig)


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown loss 'kld'. Did you mean 'kd'\?"):
        validate({"terms": [{"loss": "kld"}]}, StrategyConfig)


def test_pair_losses_need_pairs_and_gradcam_needs_one():
    with pytest.raises(ValueError, match="pairs"):
        validate({"terms": [{"loss": "fitnet"}]}, StrategyConfig)
    with pytest.raises(ValueError, match="exactly one layer pair"):
        validate({"terms": [{"loss": "attribution", "method": "gradcam"}]}, StrategyConfig)


def test_out_of_range_values_are_rejected():
    with pytest.raises(ValueError, match="temperature"):
        validate({"terms": [{"loss": "kd", "temperature": 0}]}, StrategyConfig)
    with pytest.raises(ValueError, match="beta"):
        validate({"terms": [{"loss": "jsd", "beta": 1.5}]}, StrategyConfig)


def test_yaml_round_trip(tmp_path):
    config = validate({"name": "mine", "terms": [{"loss": "kd", "temperature": 2.0},
                                                 {"loss": "fitnet", "pairs": [{"teacher": "a", "student": "b"}]}]},
                      StrategyConfig)
    path = tmp_path / "s.yaml"
    path.write_text(dump_yaml(config))
    assert load_yaml(path, StrategyConfig) == config
    assert config.needs_teacher


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_yaml(tmp_path / "nope.yaml", TrainConfig)


def test_every_example_config_validates():
    from pathlib import Path

    from kdlens.audit import as_config
    from kdlens.diffing.run import as_crosscoder_config
    from kdlens.distill.run import DistillRunConfig
    from kdlens.select.run import as_select_config

    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
    kinds = {"distill": DistillRunConfig, "audit": as_config, "select": as_select_config,
             "crosscoder": as_crosscoder_config}
    assert examples
    for path in examples:
        kind = path.stem.split("_")[0]
        assert kind in kinds, (f"name example configs distill_*.yaml, audit_*.yaml, select_*.yaml or "
                               f"crosscoder_*.yaml, not {path.name}")
        if kind == "crosscoder":
            assert as_crosscoder_config(path).crosscoder.training.expansion >= 1
            continue
        if kind == "select":
            assert as_select_config(path).k >= 1
            continue
        config = load_yaml(path, DistillRunConfig) if kind == "distill" else as_config(path)
        if kind == "distill":
            assert config.strategy_config().terms
        else:
            assert config.students
