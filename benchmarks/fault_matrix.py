"""The fault matrix of issue 14: hostile and unlucky cases tried against a kdlens install as a user meets them
(config files, model folders, run directories, kills, the Python measures), each classified by what happened.

    python benchmarks/fault_matrix.py --python /path/to/.venv/bin/python --out after.json [--workers 2]
    python benchmarks/fault_matrix.py --table before.json after.json      # the markdown table of both

Not a speed script: it needs only the install's ``kdlens`` command and its Python, so the same cases run against
an older kdlens (``--python`` of another checkout's venv). Every case runs in its own process with a time limit
and a 6 GB address-space limit. Outcomes:

  identical results   the command succeeded and results.json equals a clean run's (or the value is right)
  clear error         it refused, without a traceback, with a message that names the problem and the fix
  cryptic error       it refused without a traceback, but the message names nothing ("2", "Expecting value")
  traceback           it failed with a raw Python traceback
  silent              it succeeded where it should have refused, or its results differ from a clean run's
  ran code            a payload the case planted ran (a file it writes appeared)
  wrote outside       a file the user owned was changed or a file appeared outside the run directory
  exhausted           it ran out of time or memory
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MEMORY = 6 * 2**30
# Written out rather than imported from tests/: it must run on an install of another kdlens version.
SETUP = r'''
import json, sys, torch
from pathlib import Path
from safetensors.torch import save_file
from kdlens.lab.cnn import SmallCNN
from kdlens.subjects import save_classifier
from kdlens.tasks import chains
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

root = Path(sys.argv[1])
g = torch.Generator().manual_seed(0)
save_file({"inputs": torch.rand(16, 3, 16, 16, generator=g), "labels": torch.randint(0, 3, (16,), generator=g)},
          str(root / "test.safetensors"))
for name, seed in (("teacher", 0), ("student", 1)):
    torch.manual_seed(seed)
    save_classifier(SmallCNN(n_classes=3, widths=(2, 4, 4)), root / f"cnn-{name}",
                    {"n_classes": 3, "widths": [2, 4, 4]})
questions = chains.make_split(chains.ChainsConfig(max_steps=2), "test", 10)
texts = [q.prompt + chains.write_trace(q, "teacher") for q in questions] + ["0123456789 ?.,;="]
chars = sorted(set("".join(texts)))
vocab = {c: i for i, c in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *chars])}
for name, seed in (("teacher", 0), ("student", 1)):
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                  eos_token="<eos>")
    torch.manual_seed(seed)
    net = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                       pad_token_id=0, bos_token_id=2, eos_token_id=3))
    net.save_pretrained(root / f"lm-{name}")
    tok.save_pretrained(root / f"lm-{name}")
'''


@dataclass
class Outcome:
    label: str
    detail: str = ""


@dataclass
class Case:
    id: str
    group: str
    run: Callable[[Path], Outcome]  # given an empty folder of its own


class Install:
    """The kdlens under test: its Python and its command, and the shared models and clean runs."""

    def __init__(self, python: Path, root: Path) -> None:
        self.python, self.kdlens, self.root = python, python.parent / "kdlens", root
        self.clean: dict[str, dict] = {}
        self.seconds: dict[str, float] = {}

    def call(self, args: list[str], cwd: Path, timeout: float = 120, env: dict | None = None):
        """(returncode or "timeout", output) of a command in its own process group, under the memory limit."""
        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
            os.setsid()

        process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   preexec_fn=limit, env={**os.environ, "COLUMNS": "200", **(env or {})})
        try:
            output, _ = process.communicate(timeout=timeout)
            return process.returncode, output
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return "timeout", process.communicate()[0]

    def audit(self, config: dict | str, folder: Path, timeout: float = 120):
        path = folder / "audit.yaml"
        path.write_text(config if isinstance(config, str) else json.dumps(config))
        return self.call([str(self.kdlens), "audit", str(path), "--quiet"], folder, timeout)

    def python_snippet(self, code: str, folder: Path, timeout: float = 120):
        return self.call([str(self.python), "-c", textwrap.dedent(code)], folder, timeout)

    def config(self, kind: str, run_dir: Path) -> dict:
        r = self.root
        if kind == "classifier":
            return {"run_dir": str(run_dir), "batch_size": 1,
                    "data": {"task": "tensors", "splits": {"test": str(r / "test.safetensors")}},
                    "teacher": {"checkpoint": str(r / "cnn-teacher")},
                    "students": {"student": {"checkpoint": str(r / "cnn-student")}},
                    "probes": {"robustness": {"steps": 1, "epsilons": [0.01]},
                               "attribution": {"agreement_threshold": 0.3}}}
        return {"run_dir": str(run_dir),
                "data": {"task": "reasoning", "chains": {"max_steps": 2}, "babi": None, "n": 10},
                "teacher": {"checkpoint": str(r / "lm-teacher")}, "students": {"student": {"checkpoint": str(
                    r / "lm-student")}},
                "probes": {"traces": {"max_new_tokens": 8, "batch_size": 1}, "calibration": {"batch_size": 4},
                           "representations": {"n": 4}}}

    def prepare(self) -> None:
        code, output = self.call([str(self.python), "-c", SETUP, str(self.root)], self.root, 300)
        assert code == 0, output
        for kind in ("classifier", "lm"):
            folder = self.root / f"clean-{kind}"
            folder.mkdir()
            started = time.perf_counter()
            code, output = self.audit(self.config(kind, folder / "run"), folder)
            self.seconds[kind] = time.perf_counter() - started
            assert code == 0, output
            self.clean[kind] = json.loads((folder / "run" / "results.json").read_text())


def judged(code, output: str) -> Outcome:
    """Outcome of a command that should refuse."""
    if code == "timeout" or "MemoryError" in output or code in (-9, 137):
        return Outcome("exhausted", output.strip().splitlines()[-1][:200] if output.strip() else "")
    if "Traceback (most recent call last)" in output:
        return Outcome("traceback", output.strip().splitlines()[-1][:200])
    if code == 0:
        return Outcome("silent", "exit 0")
    lines = [line for line in output.strip().splitlines() if line.strip()]
    message = " ".join(lines)[:300]
    return Outcome(clarity(message), message)


def clarity(message: str) -> str:
    """"clear error" when the message names the problem (kdlens's "Expected X to be ..., but got ..." template, or
    a config's "Invalid ... in FILE" summary), else "cryptic error" (e.g. "2", "teacher", "Expecting value")."""
    return "clear error" if any(mark in message for mark in ("Expected", "Invalid ")) else "cryptic error"


def same_results(install: Install, kind: str, run: Path, code, output) -> Outcome:
    """Outcome of a command that should succeed with the clean run's results."""
    if code != 0:
        return judged(code, output)
    results = json.loads((run / "results.json").read_text())
    drop = {"seconds"}
    strip = lambda d: {k: strip(v) for k, v in d.items() if k not in drop} if isinstance(d, dict) else d  # noqa: E731
    if strip(results) == strip(install.clean[kind]):
        return Outcome("identical results")
    return Outcome("silent", "results differ from a clean run's")


# --- the cases ------------------------------------------------------------------------------------------------------

def trust_cases(install: Install) -> list[Case]:
    """A downloaded model folder whose config.json tries to run code, audited with trust_remote_code off."""
    def folder_with(architecture: str, kwargs: dict, **extra):
        def run(folder: Path) -> Outcome:
            marker = folder / "PWNED"
            model = folder / "model"
            shutil.copytree(install.root / "cnn-teacher", model)
            body = json.loads((model / "config.json").read_text())
            text = json.dumps({**body, "architecture": architecture, "kwargs": kwargs, **extra})
            (model / "config.json").write_text(text.replace("MARKER", str(marker)))
            config = install.config("classifier", folder / "run")
            config["students"]["student"]["checkpoint"] = str(model)
            code, output = install.audit(config, folder)
            return Outcome("ran code", "the payload ran") if marker.exists() else judged(code, output)
        return run

    shell = {"args": ["touch", "MARKER"]}
    cases = {
        "build_architecture wrapping subprocess.run, trust turned on in its kwargs": folder_with(
            "kdlens.subjects.checkpoint:build_architecture",
            {"architecture": "subprocess:run", "kwargs": shell, "trust_remote_code": True}),
        "kdlens.io:atomic_write_text as the architecture (writes any file)": folder_with(
            "kdlens.io:atomic_write_text", {"path": "MARKER", "text": "x"}),
        "subprocess:run as the architecture": folder_with("subprocess:run", shell),
        "os:system as the architecture": folder_with("os:system", {"command": "touch MARKER"}),
        "builtins:exec as the architecture": folder_with("builtins:exec", {
            "source": "open('MARKER', 'w')"}),
        "another kdlens callable (kdlens.audit:run) as the architecture": folder_with(
            "kdlens.audit:run", {"config": {}}),
        "a source nested in the kwargs": folder_with("kdlens.lab.cnn:SmallCNN", {
            "n_classes": {"architecture": "subprocess:run", "kwargs": shell}, "widths": [2, 4, 4]}),
        "trust_remote_code: true written in the model's own config.json": folder_with(
            "subprocess:run", shell, trust_remote_code=True),
    }
    out = [Case(what, "trust", run) for what, run in cases.items()]

    def hf_auto_map(folder: Path) -> Outcome:
        marker, model = folder / "PWNED", folder / "model"
        shutil.copytree(install.root / "lm-student", model)
        body = json.loads((model / "config.json").read_text())
        body["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.Evil"}
        (model / "config.json").write_text(json.dumps(body))
        (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
        config = install.config("lm", folder / "run")
        config["students"]["student"]["checkpoint"] = str(model)
        code, output = install.audit(config, folder)
        if marker.exists():
            return Outcome("ran code", "the folder's evil.py ran")
        return same_results(install, "lm", folder / "run", code, output) if code == 0 else judged(code, output)

    def pickled_weights(folder: Path) -> Outcome:
        marker, model = folder / "PWNED", folder / "model"
        shutil.copytree(install.root / "lm-student", model)
        (model / "model.safetensors").unlink()
        payload = ("import os, pickle\nclass P:\n    def __reduce__(self):\n        return (os.system, ('touch "
                   f"{marker}',))\npickle.dump(P(), open({str(model / 'pytorch_model.bin')!r}, 'wb'))\n")
        install.python_snippet(payload, folder)
        config = install.config("lm", folder / "run")
        config["students"]["student"]["checkpoint"] = str(model)
        code, output = install.audit(config, folder)
        return Outcome("ran code", "the pickle ran") if marker.exists() else judged(code, output)

    def legit(folder: Path) -> Outcome:
        code, output = install.audit(install.config("classifier", folder / "run"), folder)
        return same_results(install, "classifier", folder / "run", code, output)

    out += [Case("a Hugging Face folder with auto_map code (evil.py)", "trust", hf_auto_map),
            Case("pytorch_model.bin holding a pickle that runs a command", "trust", pickled_weights),
            Case("legitimate: the lab's SmallCNN from a checkpoint folder", "trust", legit)]
    return out


def damage_cases(install: Install) -> list[Case]:
    """A finished run's stage deleted, cut short or filled with garbage; the audit runs again (or the report)."""
    stages = {"classifier": ["outputs", "representations", "attribution", "robustness", "gallery"],
              "lm": ["generat", "traces", "calibration", "representations"]}

    def damaged(kind: str, stage: str, how: str, command: str):
        def run(folder: Path) -> Outcome:
            run_dir = folder / "run"
            shutil.copytree(install.root / f"clean-{kind}" / "run", run_dir)
            config = {**install.config(kind, run_dir)}
            target = next(p for p in sorted((run_dir / "stages").iterdir()) if p.name.startswith(stage))
            files = sorted(p for p in target.rglob("*") if p.is_file())
            if how == "deleted":
                shutil.rmtree(target)
            elif how == "truncated":
                files[0].write_bytes(files[0].read_bytes()[: max(1, files[0].stat().st_size // 2)])
            else:
                victim = next((p for p in files if p.suffix == ".json"), files[0])
                victim.write_text("not json at all")
            if command == "report":
                code, output = install.call([str(install.kdlens), "report", str(run_dir)], folder)
                if code == 0:
                    return Outcome("silent", "the report rendered a damaged run")
                return judged(code, output)
            code, output = install.audit(config, folder)
            return same_results(install, kind, run_dir, code, output)
        return run

    out = []
    for kind, names in stages.items():
        for stage in names:
            label = "generation" if stage == "generat" else stage
            for how in ("deleted", "truncated", "garbage"):
                out.append(Case(f"{kind} {label}: {how}, audit again", "damaged run", damaged(kind, stage, how,
                                                                                                "audit")))
            out.append(Case(f"{kind} {label}: truncated, kdlens report", "damaged run",
                            damaged(kind, stage, "truncated", "report")))

    def results_file(how: str):
        def run(folder: Path) -> Outcome:
            run_dir = folder / "run"
            shutil.copytree(install.root / "clean-classifier" / "run", run_dir)
            path = run_dir / "results.json"
            if how == "truncated":
                path.write_text(path.read_text()[:200])
            elif how == "deleted manifest":
                (run_dir / "manifest.json").unlink()
            else:
                (run_dir / "manifest.json").write_text("{{{")
            code, output = install.call([str(install.kdlens), "report", str(run_dir)], folder)
            if how == "truncated":
                return judged(code, output) if code != 0 else Outcome("silent", "rendered")
            code, output = install.audit(install.config("classifier", run_dir), folder)
            return same_results(install, "classifier", run_dir, code, output)
        return run

    out += [Case("results.json cut short, kdlens report", "damaged run", results_file("truncated")),
            Case("manifest.json deleted, audit again", "damaged run", results_file("deleted manifest")),
            Case("manifest.json garbage, audit again", "damaged run", results_file("garbage manifest"))]
    return out


def kill_cases(install: Install) -> list[Case]:
    """SIGKILL of the whole audit at a fraction of a clean run's wall time, then the same command again."""
    def killed(kind: str, fraction: float):
        def run(folder: Path) -> Outcome:
            run_dir = folder / "run"
            path = folder / "audit.yaml"
            path.write_text(json.dumps(install.config(kind, run_dir)))
            process = subprocess.Popen([str(install.kdlens), "audit", str(path), "--quiet"], cwd=folder,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                process.wait(timeout=fraction * install.seconds[kind])
                note = "finished before the kill"
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                note = ""
            code, output = install.audit(install.config(kind, run_dir), folder)
            outcome = same_results(install, kind, run_dir, code, output)
            return Outcome(outcome.label, outcome.detail or note)
        return run

    return [Case(f"{kind}: kill -9 at {fraction:.0%} of a clean run's time, audit again", "kill -9",
                 killed(kind, fraction)) for kind in ("classifier", "lm")
            for fraction in (0.45, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)]


def config_cases(install: Install) -> list[Case]:
    """Config files a user might write by mistake or download, and run-directory choices."""
    def yaml_text(text: str, check: Callable[[Path], Outcome | None] | None = None):
        def run(folder: Path) -> Outcome:
            body = text.replace("ROOT", str(install.root)).replace("RUN", str(folder / "run"))
            code, output = install.audit(body, folder)
            if check is not None and (verdict := check(folder)) is not None:
                return verdict
            return judged(code, output)
        return run

    c = install.root
    base = (f"data: {{task: tensors, splits: {{test: {c}/test.safetensors}}}}\nteacher: {{checkpoint: {c}/cnn-teacher}}"
            "\nrun_dir: RUN\n")
    lm = (f"data: {{task: reasoning, babi: null, chains: {{max_steps: 2}}, n: 10}}\nteacher: {{checkpoint: "
          f"{c}/lm-teacher}}\nstudents: {{s: {{checkpoint: {c}/lm-student}}}}\nrun_dir: RUN\n")
    students = f"students:\n  output_kd: {{checkpoint: {c}/cnn-student}}\n"
    letters = "abcdefghij"
    laughs = "".join(f"    {k}: &{k} [{', '.join([f'*{p}' for p in [letters[i - 1]] * 9] if i else ['lol'] * 9)}]\n"
                     for i, k in enumerate(letters))
    lab_laughs = (f"data: {{task: shapes, n: 50}}\nrun_dir: RUN\nteacher:\n  lab: vision\n  lab_root: {c}/labs\n"
                  f"  kwargs:\n{laughs}students: {{s: {{lab: vision, lab_root: {c}/labs, lab_model: output_kd}}}}\n")
    cases = {
        "two students with the same name": base + students + f"  output_kd: {{checkpoint: {c}/cnn-teacher}}\n",
        "two data: keys": base + students + "data: {task: tensors}\n",
        "a billion-laughs anchor chain under a lab source's kwargs": lab_laughs,
        "a tab in the indentation": base + "students:\n\toutput_kd: {checkpoint: x}\n",
        "unbalanced brackets": base + "students: {output_kd: {checkpoint: x}\n",
        "a typo in a top-level key (studnets)": base + students.replace("students", "studnets"),
        "a typo in a probe key": base + students + "probes: {robustnes: {steps: 1}}\n",
        "n given as text": base + students + "samples: ten\n",
        "an empty file": "",
        "a list instead of a mapping": "- teacher\n- students\n",
        "bytes that are not UTF-8": "\udcff\udcfe",
        "data n of a hundred million images": "run_dir: RUN\ndata: {task: shapes, n: 100000000}\n",
        "data n of a hundred million questions": lm.replace("n: 10", "n: 100000000"),
        "n_bins of 1e11": base + students + "probes: {outputs: {n_bins: 100000000000}}\n",
        "batch_size of a billion": base + students + "batch_size: 1000000000\n",
        "max_new_tokens of ten million": lm + "probes: {traces: {max_new_tokens: 10000000}}\n",
        "a selection weight of .inf": base + students + "selection: {weights: {accuracy: .inf}}\n",
        "a selection floor of .nan": base + students + "selection: {floors: {ece: .nan}}\n",
        "robustness epsilons of 1e30": base + students + "probes: {robustness: {epsilons: [1.0e+30], steps: 1}}\n",
        "robustness steps of a billion": base + students + "probes: {robustness: {steps: 1000000000}}\n",
        "LM representations n of a billion": lm + "probes: {representations: {n: 1000000000}}\n",
        "few_shot of a million": lm.replace("n: 10}", "n: 10, few_shot: 1000000}"),
        "device: cuda on a machine without a GPU": base + students + "device: cuda\n",
        "device: cuda:7": base + students + "device: 'cuda:7'\n",
        "device: gpu please": base + students + "device: gpu please\n",
        "a student named teacher (LM)": lm.replace("students: {s:", "students: {teacher:"),
        "a student name that is no folder name (LM)": lm.replace("students: {s:", "students: {'a/../b':"),
        "a checkpoint folder that does not exist": base.replace("cnn-teacher", "nowhere") + students,
        "no students": base,
    }
    out = []
    for what, text in cases.items():
        if what == "bytes that are not UTF-8":
            def run(folder: Path) -> Outcome:
                (folder / "audit.yaml").write_bytes(b"\xff\xfe\x00teacher")
                return judged(*install.call([str(install.kdlens), "audit", str(folder / "audit.yaml")], folder))
            out.append(Case(what, "config", run))
        elif what in ("two students with the same name", "two data: keys"):
            out.append(Case(what, "config", yaml_text(text, check=None)))
        else:
            out.append(Case(what, "config", yaml_text(text)))

    def missing_file(folder: Path) -> Outcome:
        return judged(*install.call([str(install.kdlens), "audit", str(folder / "nope.yaml")], folder))

    def folder_as_config(folder: Path) -> Outcome:
        return judged(*install.call([str(install.kdlens), "audit", str(folder)], folder))

    def report_of_nothing(folder: Path) -> Outcome:
        return judged(*install.call([str(install.kdlens), "report", str(folder / "nowhere")], folder))

    def report_of_a_plain_folder(folder: Path) -> Outcome:
        (folder / "notes.txt").write_text("mine")
        return judged(*install.call([str(install.kdlens), "report", str(folder)], folder))

    out += [Case("a config file that does not exist", "config", missing_file),
            Case("a folder given as the config", "config", folder_as_config),
            Case("kdlens report of a path that does not exist", "config", report_of_nothing),
            Case("kdlens report of a folder that is no run", "config", report_of_a_plain_folder)]
    return out


def folder_cases(install: Install) -> list[Case]:
    """Where the run directory points."""
    def owned(run_dir: Callable[[Path], str], plant: Callable[[Path], list[Path]]):
        def run(folder: Path) -> Outcome:
            mine = plant(folder)
            before = {p: p.read_bytes() for p in mine}
            listing = {p for p in folder.rglob("*")}
            config = install.config("classifier", folder / "unused")
            config["run_dir"] = run_dir(folder)
            path = folder / "cases" / "audit.yaml"
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps(config))
            code, output = install.call([str(install.kdlens), "audit", str(path), "--quiet"], folder)
            changed = [p.name for p, data in before.items() if not p.is_file() or p.read_bytes() != data]
            appeared = [p for p in folder.rglob("*") if p not in listing and p != path and "cases" not in p.parts]
            if changed:
                return Outcome("wrote outside", f"changed the user's {', '.join(changed)}")
            if code == 0 and run_dir(folder) in ("", "."):
                return Outcome("wrote outside", f"wrote {len(appeared)} files into the current folder")
            return judged(code, output)
        return run

    def user_files(folder: Path) -> list[Path]:
        (folder / "mine").mkdir()
        files = [folder / "mine" / "config.yaml", folder / "mine" / "results.json", folder / "mine" / "report.html"]
        for p in files:
            p.write_text("the user's own file")
        return files

    def cwd_config(folder: Path) -> list[Path]:
        (folder / "config.yaml").write_text("the user's own config")
        return [folder / "config.yaml"]

    def a_file(folder: Path) -> list[Path]:
        (folder / "run.txt").write_text("a file")
        return [folder / "run.txt"]

    return [Case("run_dir: an existing folder of the user's files", "folders",
                 owned(lambda f: str(f / "mine"), user_files)),
            Case("run_dir: '' (the current folder holds the user's config.yaml)", "folders", owned(lambda f: "",
                                                                                                   cwd_config)),
            Case("run_dir: '.'", "folders", owned(lambda f: ".", cwd_config)),
            Case("run_dir: a file", "folders", owned(lambda f: str(f / "run.txt"), a_file)),
            Case("run_dir under /proc (not writable)", "folders", owned(lambda f: "/proc/kdlens-run", lambda f: []))]


def measure_cases(install: Install) -> list[Case]:
    """The Python measures given bad input (should refuse with a message naming it) or extreme but valid input
    (should give the right number)."""
    prelude = ("import torch, math\nfrom kdlens import measures as M\ng = torch.Generator().manual_seed(0)\n"
               "x = torch.randn(20, 5, generator=g, dtype=torch.float64)\n"
               "y = torch.randn(20, 4, generator=g, dtype=torch.float64)\n"
               "t = torch.randn(8, 3, generator=g); s = torch.randn(8, 3, generator=g)\n"
               "labels = torch.randint(0, 3, (8,), generator=g); p = t.softmax(-1)\n")
    bad = {
        "agreement with NaN logits": "M.agreement(torch.full((8, 3), float('nan')), s)",
        "agreement of (8, 3) and (8, 4) logits": "M.agreement(t, torch.randn(8, 4))",
        "agreement of 1-D logits": "M.agreement(t[0], s[0])",
        "kl_divergence with inf logits": "M.kl_divergence(t, s.index_fill(0, torch.tensor([0]), float('inf')))",
        "kl_divergence at temperature 0": "M.kl_divergence(t, s, temperature=0.0)",
        "kl_divergence at temperature -1": "M.kl_divergence(t, s, temperature=-1.0)",
        "ECE of probabilities with negative entries": "M.expected_calibration_error(p - 0.5, labels)",
        "ECE of rows summing to 2": "M.expected_calibration_error(2 * p, labels)",
        "ECE with a label of 3 for 3 classes": "M.expected_calibration_error(p, labels.clamp(max=2) + 1)",
        "ECE with float labels": "M.expected_calibration_error(p, labels.float())",
        "ECE with n_bins 0": "M.expected_calibration_error(p, labels, n_bins=0)",
        "ECE with binning 'widht'": "M.expected_calibration_error(p, labels, binning='widht')",
        "ECE with 7 labels for 8 rows": "M.expected_calibration_error(p, labels[:7])",
        "ECE of an empty batch": "M.expected_calibration_error(p[:0], labels[:0])",
        "linear_cka of 20 and 19 examples": "M.linear_cka(x, y[:19])",
        "linear_cka of constant features": "M.linear_cka(torch.ones(20, 3), y)",
        "linear_cka of 3-D features with no pool": "M.linear_cka(x.reshape(20, 5, 1), y)",
        "linear_cka with NaN": "M.linear_cka(x.index_fill(0, torch.tensor([0]), float('nan')), y)",
        "debiased CKA of 3 examples": "M.linear_cka(x[:3], y[:3], debiased=True)",
        "cka_matrix of an empty dict": "M.cka_matrix({}, {'b': y})",
        "streaming LinearCKA at 1e200": "m = M.LinearCKA(); m.update(x * 1e200, y); m.compute()",
    }
    right = {
        "linear_cka at 1e100 (was 0.0)": ("M.linear_cka(x * 1e100, y)", "M.linear_cka(x, y)"),
        "linear_cka at 1e200": ("M.linear_cka(x * 1e200, y)", "M.linear_cka(x, y)"),
        "linear_cka at 1e-200": ("M.linear_cka(x * 1e-200, y)", "M.linear_cka(x, y)"),
        "rbf_cka at 1e200": ("M.rbf_cka(x * 1e200, y)", "M.rbf_cka(x, y)"),
        "ECE of bfloat16 softmax rows": ("M.expected_calibration_error(t.bfloat16().softmax(-1), labels)",
                                         "M.expected_calibration_error(t.bfloat16().softmax(-1).double(), labels)"),
        "ECE of float16 softmax rows": ("M.expected_calibration_error(t.half().softmax(-1), labels)",
                                        "M.expected_calibration_error(t.half().softmax(-1).double(), labels)"),
    }

    def refuses(call: str):
        def run(folder: Path) -> Outcome:
            code, output = install.python_snippet(
                prelude + f"try:\n    {call}\nexcept (ValueError, TypeError, KeyError) as e:\n"
                "    print('ERROR', type(e).__name__, e); raise SystemExit(2)\nprint('VALUE')", folder)
            if code == 0:
                return Outcome("silent", output.strip()[-200:])
            return judged(code, output.replace("ERROR ", ""))
        return run

    def computes(call: str, reference: str):
        def run(folder: Path) -> Outcome:
            code, output = install.python_snippet(
                prelude + f"try:\n    a = float({call}); b = float({reference})\nexcept (ValueError, TypeError) as e:"
                f"\n    print(e); raise SystemExit(2)\nprint(a, b); raise SystemExit(0 if math.isclose(a, b, "
                "rel_tol=1e-6, abs_tol=1e-9) else 5)", folder)
            if code == 0:
                return Outcome("identical results", output.strip())
            if code == 5:
                return Outcome("silent", f"wrong value: {output.strip()}")
            return judged(code, output)
        return run

    return ([Case(what, "measures", refuses(call)) for what, call in bad.items()]
            + [Case(what, "measures", computes(*calls)) for what, calls in right.items()])


def report_cases(install: Install) -> list[Case]:
    """Names and text a report must show as text."""
    def named(name: str, check: Callable[[Path], Outcome]):
        def run(folder: Path) -> Outcome:
            config = install.config("classifier", folder / "run")
            config["students"] = {name: config["students"]["student"]}
            code, output = install.audit(config, folder)
            return check(folder / "run") if code == 0 else judged(code, output)
        return run

    def escaped(run: Path) -> Outcome:
        html = (run / "report.html").read_text()
        if "<script>alert(1)</script>" in html:
            return Outcome("silent", "the name reached the page as markup")
        return Outcome("identical results", "escaped")

    def table(run: Path) -> Outcome:
        summary = (run / "summary.md").read_text()
        rows = [line for line in summary.splitlines() if line.startswith("|") and "a|b" in line.replace("\\|", "|")]
        if not rows or "a\\|b" not in rows[0]:
            return Outcome("silent", "the | split the summary table")
        return Outcome("identical results", "escaped")

    def offline(run: Path) -> Outcome:
        html = (run / "report.html").read_text()
        loads = [m for m in ("src=\"http", "href=\"http", "@import", "url(http") if m in html]
        return Outcome("silent", f"loads {loads}") if loads else Outcome("identical results", "no network loads")

    return [Case("a student named <script>alert(1)</script>", "report", named("<script>alert(1)</script>", escaped)),
            Case("a student named a|b (summary.md table)", "report", named("a|b", table)),
            Case("the report loads nothing from the network", "report", named("student", offline))]


GROUPS = (trust_cases, config_cases, folder_cases, damage_cases, kill_cases, measure_cases, report_cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default=None, help="run the cases whose group or id contains this")
    parser.add_argument("--table", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.table:
        print(table(*[json.loads(p.read_text()) for p in args.table]))
        return
    with tempfile.TemporaryDirectory(prefix="kdlens-faults-") as tmp:
        install = Install(args.python.absolute(), Path(tmp))
        install.prepare()
        cases = [case for group in GROUPS for case in group(install)]
        if args.only:
            cases = [c for c in cases if args.only in c.group or args.only in c.id]

        def one(case: Case) -> dict:
            folder = Path(tmp) / "cases" / f"{cases.index(case):03d}"
            folder.mkdir(parents=True)
            started = time.perf_counter()
            try:
                outcome = case.run(folder)
            except Exception as error:  # the harness itself failed on this case: say so, never hide it
                outcome = Outcome("harness error", f"{type(error).__name__}: {error}")
            print(f"{case.group:12} {outcome.label:18} {case.id}", flush=True)
            return {"group": case.group, "id": case.id, "outcome": outcome.label, "detail": outcome.detail,
                    "seconds": round(time.perf_counter() - started, 1)}

        with ThreadPoolExecutor(args.workers) as pool:
            rows = list(pool.map(one, cases))
    args.out.write_text(json.dumps({"python": str(args.python), "cases": rows}, indent=1))


def table(before: dict, after: dict) -> str:
    """Markdown: one row per case, its outcome before and after, and counts per outcome."""
    for row in before["cases"] + after["cases"]:  # files written before "cryptic error" existed
        if row["outcome"] == "clear error":
            row["outcome"] = clarity(row["detail"])
    old = {(r["group"], r["id"]): r for r in before["cases"]}
    lines = ["| group | case | before | after |", "|---|---|---|---|"]
    for row in after["cases"]:
        prior = old.get((row["group"], row["id"]), {"outcome": "-"})
        lines.append(f"| {row['group']} | {row['id'].replace('|', '&#124;')} | {prior['outcome']} | "
                     f"{row['outcome']} |")
    for name, rows in (("before", before["cases"]), ("after", after["cases"])):
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        lines.append(f"\n{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
