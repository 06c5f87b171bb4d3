"""Audits beyond one process (issue 16), on CPU with gloo: two ``torchrun`` ranks, three ``--shard`` shares and their
merge, a rank that raises, and a share killed with SIGKILL all end with the single process's ``results.json``.

The audits are the fault matrices' small ones (``tests/reliability/runs.py``) on example counts that do not divide
(97 images, 101 questions); every process runs with one thread, as ``torchrun`` sets it, so float32 sums are the
same in all of them.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from kdlens import audit
from kdlens.io import read_json
from tests.reliability.runs import classifier_audit, lm_audit

REPO = Path(__file__).resolve().parents[2]
COUNTS = {"classifier": 97, "lm": 101}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, tuple[Path, dict, dict]]:
    """Per kind: a folder, its config, and the results of one process with one thread."""
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for kind, build in (("classifier", classifier_audit), ("lm", lm_audit)):
            root = tmp_path_factory.mktemp(kind)
            config = build(root, COUNTS[kind])
            out[kind] = (root, config, audit.run(config, progress=False))
    finally:
        torch.set_num_threads(threads)
    return out


def config_file(cases, kind: str, name: str) -> tuple[Path, Path]:
    """A copy of ``kind``'s config writing to its own run directory ``name``: (config path, run directory)."""
    root, config, _ = cases[kind]
    run_dir = root / name
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**config, "run_dir": str(run_dir)}))
    return path, run_dir


def kdlens(*args: str, launcher: tuple[str, ...] = (), timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, *(launcher or ("-m",)), *(("-m",) if launcher else ()), "kdlens", *args]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def torchrun(n: int) -> tuple[str, ...]:
    return ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n))


def assert_same(got, expected, where: str = "results") -> None:
    """Equal JSON: counts, strings and flags exactly, floats to 1e-9 relative."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), f"{where}: keys {set(got) ^ set(expected)}"
        for key in expected:
            assert_same(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), f"{where}: lengths differ"
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)) and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12), \
            f"{where}: {got} != {expected}"
    else:
        assert got == expected and type(got) is type(expected), f"{where}: {got!r} != {expected!r}"


def shards_by(run_dir: Path) -> dict[str, set[str]]:
    """Sharded stage -> who computed its parts, from the manifest."""
    stages = read_json(run_dir / "manifest.json")["stages"]
    return {name: {part["by"] for part in record["shards"]} for name, record in stages.items() if "shards" in record}


@pytest.mark.parametrize("kind", ["classifier", "lm"])
def test_two_torchrun_ranks_give_the_single_process_results(cases, kind):
    path, run_dir = config_file(cases, kind, "ranks")
    done = kdlens("audit", str(path), "--quiet", "--no-report", launcher=torchrun(2))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_same(read_json(run_dir / "results.json"), cases[kind][2])
    by = shards_by(run_dir)
    sharded = {"classifier": {"outputs", "representations", "attribution", "robustness"},
               "lm": {"generate-teacher", "generate-student", "calibration", "representations"}}[kind]
    assert sharded <= set(by), by
    for stage in sharded - {"representations"} if kind == "lm" else sharded:
        assert by[stage] == {"rank 0/2", "rank 1/2"}, (stage, by[stage])  # each rank did its share


@pytest.mark.parametrize("kind", ["classifier", "lm"])
def test_three_shares_and_a_merge_give_the_single_process_results(cases, kind):
    path, run_dir = config_file(cases, kind, "shares")
    rounds = 0
    while True:
        with ThreadPoolExecutor(3) as pool:  # three separate commands, at once, as a job array starts them
            shares = list(pool.map(lambda i: kdlens("audit", str(path), "--shard", f"{i}/3", "--quiet"), range(3)))
        for share in shares:
            assert share.returncode == 0, share.stdout[-3000:] + share.stderr[-3000:]
        rounds += 1
        merged = kdlens("audit", str(path), "--merge", "--quiet", "--no-report")
        if merged.returncode != 3:  # 3: a sharded stage after a one-process stage still waits for the shares
            break
        assert "--shard" in merged.stdout and rounds < 3, merged.stdout
    assert merged.returncode == 0, merged.stdout[-3000:] + merged.stderr[-3000:]
    assert rounds == {"classifier": 1, "lm": 2}[kind]  # lm: calibration and representations follow traces
    assert_same(read_json(run_dir / "results.json"), cases[kind][2])
    for stage, who in shards_by(run_dir).items():
        assert who <= {"shard 0/3", "shard 1/3", "shard 2/3"}, (stage, who)  # the merge computed none


def test_an_exception_in_rank_1_ends_every_rank_with_its_message(cases, tmp_path):
    path, _ = config_file(cases, "classifier", "failing")
    script = tmp_path / "fail_in_rank_1.py"
    script.write_text(
        "import os, sys\n"
        "from kdlens.probes import outputs\n"
        "mapped = outputs.shard_outputs\n"
        "def shard_outputs(*args, **kwargs):\n"
        "    if os.environ['RANK'] == '1':\n"
        "        raise ValueError('planted failure in rank 1')\n"
        "    return mapped(*args, **kwargs)\n"
        "outputs.shard_outputs = shard_outputs\n"
        "from kdlens.cli import app\n"
        "sys.argv = ['kdlens', 'audit', sys.argv[1], '--quiet', '--no-report']\n"
        "app()\n")
    command = [sys.executable, *torchrun(2), str(script), str(path)]
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)  # no hang
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert output.count("planted failure in rank 1") >= 2, output[-3000:]  # rank 1's own, and rank 0's report of it
    assert "rank 1 of 2 failed: ValueError: planted failure in rank 1" in output
    assert "exitcode  : 1" in output or "exitcode  : 2" in output


def test_a_share_killed_mid_stage_keeps_its_finished_shards(cases):
    path, run_dir = config_file(cases, "classifier", "killed")
    command = [sys.executable, "-m", "tests.reliability.killed", str(path), "outputs", "shard", "1/3"]
    killed = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    parts = sorted((run_dir / "stages" / "outputs" / "parts").rglob("*.safetensors"))
    assert len(parts) == 1  # its first shard, saved before the kill at the second
    rerun = kdlens("audit", str(path), "--quiet", "--no-report")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert_same(read_json(run_dir / "results.json"), cases["classifier"][2])
    by = [part["by"] for part in read_json(run_dir / "manifest.json")["stages"]["outputs"]["shards"]]
    assert by.count("shard 1/3") == 1 and by.count("one process") == len(by) - 1  # not computed again


def test_the_lab_is_built_once_by_rank_0_while_rank_1_waits(tmp_path):
    from tests.lab.test_lm import tiny

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny(students=["seq_kd"]).model_dump(mode="json")))
    source = {"lab": "lm", "lab_root": str(tmp_path / "labs"), "lab_recipe": str(recipe)}
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"), "data": {"task": "reasoning", "n": 9}, "teacher": source,
        "students": {"seq_kd": {**source, "lab_model": "seq_kd"}},
        "probes": {"traces": {"max_new_tokens": 8}, "representations": {"n": 4}}}))
    script = tmp_path / "count_training.py"
    script.write_text(  # each rank says how many models it trained: the lab's first stage is made by rank 0 alone
        "import atexit, os, sys\n"
        "from kdlens.lab import lm\n"
        "made, built = [], lm.new_llama\n"
        "def new_llama(*args, **kwargs):\n"
        "    made.append(1)\n"
        "    return built(*args, **kwargs)\n"
        "lm.new_llama = new_llama\n"
        "atexit.register(lambda: print(f\"rank {os.environ['RANK']} trained {len(made)}\", flush=True))\n"
        "from kdlens.cli import app\n"
        "sys.argv = ['kdlens', 'audit', sys.argv[1], '--quiet', '--no-report']\n"
        "app()\n")
    done = subprocess.run([sys.executable, *torchrun(2), str(script), str(path)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rank 0 trained 2" in done.stdout and "rank 1 trained 0" in done.stdout, done.stdout[-2000:]
    assert (tmp_path / "run" / "results.json").is_file()
