"""kdlens writes only into folders it made (issue 14, item 3)."""

from __future__ import annotations

import pytest

from kdlens import audit
from kdlens.rundir import LayoutError, RunDir


def test_a_folder_of_other_files_is_refused_and_left_as_it_was(tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own config")
    with pytest.raises(LayoutError, match=r"holds files kdlens did not write \(config.yaml\)"):
        audit.run({"run_dir": str(mine), "data": {"task": "shapes", "n": 8}, "teacher": {"lab": "vision"},
                   "students": {"s": {"lab": "vision", "lab_model": "output_kd"}}}, progress=False)
    assert (mine / "config.yaml").read_text() == "my own config" and sorted(p.name for p in mine.iterdir()) == [
        "config.yaml"]


def test_a_file_is_no_run_directory(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(LayoutError, match="which is a file"):
        RunDir(tmp_path / "a_file").claim()


@pytest.mark.parametrize("run_dir", ["", "   "])
def test_an_empty_run_dir_is_refused(run_dir):
    with pytest.raises(ValueError, match="run_dir must name a folder"):
        audit.as_config({"run_dir": run_dir})


def test_an_empty_or_new_folder_is_claimed_and_reused(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "new" / "run"):
        run = RunDir(folder)
        run.claim()
        run.write_config("x: 1\n")
        RunDir(folder).claim()  # a run directory kdlens made: accepted again
        assert (folder / "manifest.json").is_file()


def test_an_unwritable_run_dir_is_refused_before_any_work(tmp_path, monkeypatch):
    import kdlens.rundir as rundir

    monkeypatch.setattr(rundir.os, "access", lambda path, mode: False)  # as a non-root user on a read-only folder
    with pytest.raises(LayoutError, match="is not writable by this user"):
        audit.run({"run_dir": str(tmp_path / "run"), "teacher": {"lab": "vision", "lab_root": str(tmp_path / "labs")},
                   "students": {"s": {"lab": "vision", "lab_root": str(tmp_path / "labs"), "lab_model": "output_kd"}}},
                  progress=False)
    assert not (tmp_path / "labs").exists()


def test_a_run_dir_where_no_file_can_be_made_is_refused_and_nothing_is_left(tmp_path):
    """Permission bits say yes as root, or on /proc: a real file is tried, inside the run directory only."""
    with pytest.raises(LayoutError, match=r"/proc cannot hold a new file"):
        RunDir("/proc/kdlens-run/x").check_writable()
    RunDir(tmp_path / "new" / "run").check_writable()
    assert list(tmp_path.iterdir()) == []  # the folders it tried with are gone again
