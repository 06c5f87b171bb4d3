"""Config files that cannot lie or explode: duplicate keys, tabs, bad syntax and anchor bombs are one clear error
each, from Python and from the command line (issue 14, item 4)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kdlens import audit
from kdlens.cli import app
from kdlens.config import MAX_EXPANDED_NODES, read_yaml, validate
from kdlens.subjects.sources import ModelSource


def laughs(levels: int) -> str:
    """A billion-laughs chain: each anchor a list of ten aliases of the one before (10 ** levels leaves)."""
    names = [chr(ord("a") + i) for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]" for a, b in zip(names, names[1:], strict=False)]
    return "run_dir: x\n" + "\n".join(lines) + "\n"


CASES = {
    "duplicate key": ("run_dir: x\nstudents:\n  s: {lab: vision}\n  s: {lab: vision, lab_model: output_kd}\n",
                      r"key 's' appears twice in one mapping \(lines 3 and 4\)"),
    "duplicate section": ("run_dir: x\ndata: {n: 50}\ndata: {n: 5}\n", r"key 'data' appears twice.*lines 2 and 3"),
    "tab": ("run_dir: x\ndata:\n\tn: 5\n", r"line 3, column 1\). YAML indents with spaces, not tabs"),
    "syntax": ("run_dir: [x\n", r"valid YAML, but got: .*line"),
    "anchor bomb": (laughs(9), f"at most {MAX_EXPANDED_NODES:,} YAML nodes"),
}


@pytest.mark.parametrize("case", [*CASES, "not UTF-8"])
def test_each_bad_file_is_one_clear_error(tmp_path, case):
    text, message = CASES.get(case, (None, r"to be UTF-8 text, but byte 0xff at offset 10 is not UTF-8"))
    path = tmp_path / "audit.yaml"
    path.write_bytes(text.encode() if text is not None else b"run_dir: x\xff\n")
    with pytest.raises(ValueError, match=message):
        audit.run(path, progress=False)
    result = CliRunner().invoke(app, ["audit", str(path), "--quiet"])
    assert result.exit_code == 2 and "Traceback" not in result.output and str(path) in result.output


def test_anchors_within_the_bound_still_load():
    assert read_yaml("a: &a [1, 2]\nb: *a\n") == {"a": [1, 2], "b": [1, 2]}
    assert read_yaml(laughs(3))["d"][0][0][0] == [1] * 10


def test_kwargs_are_refused_where_nothing_reads_them():
    with pytest.raises(ValueError, match="kwargs go with architecture"):
        validate({"lab": "vision", "kwargs": {"x": 1}}, ModelSource)
    with pytest.raises(ValueError, match="kwargs go with architecture"):
        validate({"checkpoint": "folder", "kwargs": {"x": 1}}, ModelSource)


def test_a_folder_given_as_the_config_is_named_as_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="which is a folder"):
        audit.run(tmp_path, progress=False)
