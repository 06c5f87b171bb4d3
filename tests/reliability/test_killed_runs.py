"""The kill -9 matrix (issue 14, item 7): an audit of either kind killed by SIGKILL at the start of a stage, between
the shards or chunks of a sharded one, in the middle of writing a file, or after writing its files but before the
manifest says so, resumes on the next run: the stages that had finished load as they were, and ``results.json``
equals an uninterrupted run's byte for byte.

The killed runs are other processes (``tests/reliability/killed.py``), started together to share the cores."""

from __future__ import annotations

import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from kdlens import audit
from kdlens.io import read_json
from tests.reliability.runs import KINDS

REPO = Path(__file__).resolve().parents[2]
CASES = [
    ("classifier", "outputs", "start"), ("classifier", "outputs", "shard"), ("classifier", "outputs", "part"),
    ("classifier", "representations", "shard"), ("classifier", "attribution", "start"),
    ("classifier", "attribution", "shard"), ("classifier", "robustness", "shard"), ("lm", "calibration", "shard"),
    ("classifier", "attribution", "writing"), ("classifier", "robustness", "start"),
    ("classifier", "robustness", "written"), ("classifier", "gallery", "start"), ("classifier", "gallery", "writing"),
    ("lm", "generate-teacher", "start"), ("lm", "generate-teacher", "shard"), ("lm", "generate-student", "shard"),
    ("lm", "generate-student", "part"), ("lm", "traces", "start"), ("lm", "traces", "written"),
    ("lm", "calibration", "start"), ("lm", "calibration", "writing"), ("lm", "representations", "start"),
    ("lm", "representations", "written"),
]


@pytest.fixture(scope="module")
def killed(finished, tmp_path_factory):
    """Per case: its config and the state of its run directory just after the kill."""
    root = tmp_path_factory.mktemp("killed")

    def kill(case):
        kind, stage, when = case
        folder = root / f"{kind}-{stage}-{when}"
        folder.mkdir()
        config = {**finished[kind][1], "run_dir": str(folder / "run")}
        (folder / "audit.yaml").write_text(yaml.safe_dump(config))
        done = subprocess.run([sys.executable, "-m", "tests.reliability.killed", str(folder / "audit.yaml"), stage,
                               when], cwd=REPO, capture_output=True, text=True, timeout=600)
        run = folder / "run"
        return case, (config, done, read_json(run / "manifest.json")["stages"],
                      {p.relative_to(run / "stages").as_posix() for p in (run / "stages").rglob("*") if p.is_file()})

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(kill, CASES))


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_a_run_killed_anywhere_resumes_to_identical_results(finished, killed, case):
    kind, stage, when = case
    config, done, stages, files = killed[case]
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    order = KINDS[kind][1]
    before = order[: order.index(stage)]
    assert all(stages[name]["done"] for name in before) and not stages[stage]["done"]
    if when == "shard":
        assert any(name.startswith(f"{stage}/parts/") and name.endswith((".json", ".safetensors"))
                   for name in files)  # the first shard kept
    if when in ("part", "writing"):
        assert any(name.startswith(f"{stage}/") and name.endswith(".tmp") for name in files)  # a torn write
    audit.run(config, progress=False)
    clean = finished[kind][0] / "run" / "results.json"
    assert (Path(config["run_dir"]) / "results.json").read_text() == clean.read_text()
    after = read_json(Path(config["run_dir"]) / "manifest.json")["stages"]
    assert all(after[name] == stages[name] for name in before)  # loaded as they were, not computed again
    leftovers = [p for p in (Path(config["run_dir"]) / "stages").rglob("*.tmp")]
    assert not leftovers, leftovers
