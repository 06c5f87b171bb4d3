"""Atomic files: a failed write keeps the old file, and what a killed write leaves behind is found and removed."""

import os

import pytest

from kdlens import io


def test_a_write_that_fails_before_the_rename_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "figures.json"
    io.atomic_write_json(target, {"old": 1})

    def failing(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_json(target, {"new": 2})
    assert io.read_json(target) == {"old": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["figures.json"]


def test_torn_writes_are_the_temporaries_of_atomic_writes_only(tmp_path):
    (tmp_path / "parts").mkdir()
    torn = [tmp_path / ".figures.json.k2j4.tmp", tmp_path / "parts" / ".00001.json.a1b2.tmp"]
    kept = [tmp_path / "figures.json", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for path in torn + kept:
        path.write_text("x")
    assert io.remove_torn_writes(tmp_path) == sorted(torn)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in torn)
    assert io.remove_torn_writes(tmp_path / "nowhere") == []
