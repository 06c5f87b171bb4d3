"""The audit kind follows the config's data.task, in one place."""

from __future__ import annotations

import pytest

from kdlens import audit
from kdlens.audit.kind import kind_for_task, kind_of, kinds


def test_every_task_has_exactly_one_kind():
    tasks = [task for kind in kinds().values() for task in kind.tasks]
    assert len(tasks) == len(set(tasks))
    assert {"shapes", "tensors", "image_folder", "reasoning", "questions"} == set(tasks)
    assert kind_for_task("reasoning").name == kind_for_task("questions").name == "lm"
    assert kind_for_task(None).name == "classifier"


def test_a_config_object_or_dict_names_its_kind(tmp_path):
    lm = audit.as_config({"run_dir": str(tmp_path), "data": {"task": "reasoning"}})
    assert isinstance(lm, audit.LMAuditConfig) and kind_of(lm).name == "lm"
    assert kind_of({"run_dir": "x"}).name == "classifier"  # shapes by default


def test_an_unknown_task_suggests_the_right_one(tmp_path):
    with pytest.raises(ValueError, match=r"Expected `data.task` to be one of .*but got 'reasonning'\. Did you mean "
                                         r"'reasoning'\?"):
        audit.run({"run_dir": str(tmp_path / "run"), "data": {"task": "reasonning"}}, progress=False)
    assert not (tmp_path / "run").exists()
