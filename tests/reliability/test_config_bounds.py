"""Configs that cannot exhaust the machine, and devices checked before any work (issue 14, items 4 and 5)."""

from __future__ import annotations

import pytest

from kdlens import audit
from kdlens.config import validate
from kdlens.distill.config import TrainConfig
from kdlens.subjects.devices import check_device, visible_devices

BAD = {
    "a hundred million images": ({"data": {"task": "shapes", "n": 100_000_000}}, "less than or equal to 100000"),
    "a hundred million questions": ({"data": {"task": "reasoning", "n": 100_000_000}}, "less than or equal to 100000"),
    "1e11 bins": ({"probes": {"outputs": {"n_bins": 1e11}}}, "less than or equal to 1000"),
    "an infinite weight": ({"selection": {"weights": {"accuracy": float("inf")}}}, "inf is not a finite number"),
    "a NaN floor": ({"selection": {"floors": {"ece": float("nan")}}}, "nan is not a finite number"),
    "a huge batch": ({"batch_size": 10**9}, "less than or equal to 65536"),
    "an epsilon of 1e30": ({"probes": {"robustness": {"epsilons": [1e30]}}}, "epsilon 1e\\+30 exceeds the inputs' "
                                                                              "whole range"),
    "bounds the wrong way round": ({"probes": {"robustness": {"bounds": [1, 0]}}}, "low < high"),
    "a billion questions for CKA": ({"data": {"task": "reasoning"}, "probes": {"representations": {"n": 10**9}}},
                                    "less than or equal to 100000"),
    "a billion images to attack": ({"probes": {"robustness": {"n": 10**9}}}, "less than or equal to 100000"),
    "endless generation": ({"data": {"task": "reasoning"}, "probes": {"traces": {"max_new_tokens": 10**7}}},
                           "less than or equal to 32768"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_number_past_its_bound_is_refused_before_any_work(tmp_path, case):
    fields, message = BAD[case]
    with pytest.raises(ValueError, match=message):
        audit.run({"run_dir": str(tmp_path / "run"), **fields}, progress=False)
    assert not (tmp_path / "run").exists()


def test_training_settings_are_bounded():
    with pytest.raises(ValueError, match="less than or equal to 10000"):
        validate({"epochs": 10**6}, TrainConfig)


def test_a_device_this_machine_lacks_is_refused_before_any_model_loads(tmp_path):
    missing = f"cuda:{len(visible_devices())}"  # one past what is there
    with pytest.raises(ValueError, match=r"one of the devices this machine has \(cpu"):
        audit.run({"run_dir": str(tmp_path / "run"), "device": missing, "teacher": {"lab": "vision",
                   "lab_root": str(tmp_path / "labs")}, "students": {"s": {"lab": "vision", "lab_root": str(
                       tmp_path / "labs"), "lab_model": "output_kd"}}}, progress=False)
    assert not (tmp_path / "labs").exists() and not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="a device name"):
        check_device("gpu please")
    assert check_device("cpu") == "cpu"
