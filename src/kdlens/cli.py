"""The ``kdlens`` command line: a thin layer over the Python API (lab, distill, audit, report, demo, env)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import kdlens

app = typer.Typer(
    name="kdlens",
    help="Distil a teacher into students, then audit whether they learned why the teacher answers as it does.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
# Off a terminal (a log file, CI) rich would cut a wide table to 80 columns with "…"; there every line is as wide as
# it needs to be.
console = Console() if Console().is_terminal else Console(width=1000, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"kdlens {kdlens.__version__}")
        raise typer.Exit()


DEBUG = {"on": False}  # `kdlens --debug ...`: a user error shows its traceback too (for bug reports)
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, TypeError)


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                 help="Print the kdlens version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error (for bug reports)."),
) -> None:
    """kdlens: distillation you can audit."""
    DEBUG["on"] = debug


def user_errors(command):
    """A command whose user errors print as one message (exit 2), without a traceback unless --debug."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            if DEBUG["on"] or kwargs.get("debug"):
                raise
            console.print(f"[red]{escape(error_message(error))}[/red]")
            raise typer.Exit(2) from None

    return run


@app.command()
def env() -> None:
    """Print the versions and devices kdlens sees (paste this into bug reports)."""
    import numpy
    import torch
    import torchmetrics

    table = Table(show_header=False, box=None)
    rows = [
        ("kdlens", kdlens.__version__),
        ("python", platform.python_version()),
        ("platform", platform.platform()),
        ("torch", torch.__version__),
        ("torchmetrics", torchmetrics.__version__),
        ("numpy", numpy.__version__),
        ("cuda available", str(torch.cuda.is_available())),
        ("gpus", ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "none"),
        ("cpu threads", str(torch.get_num_threads())),
    ]
    try:
        import transformers

        rows.append(("transformers", transformers.__version__))
    except ImportError:
        rows.append(("transformers", "not installed (pip install 'kdlens[lm]')"))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    console.print(table)


@app.command()
@user_errors
def distill(
    config: Path = typer.Argument(..., help="YAML file: run_dir, data, teacher, student, strategy, train."),
) -> None:
    """Distil a teacher into a student as CONFIG describes (run it again to resume)."""
    from kdlens.distill.run import DistillRunConfig, run

    parsed = _load(config, DistillRunConfig)
    result = run(parsed)
    _print_metrics(f"student in {result.model_dir}", result.final)


lab_app = typer.Typer(help="Build the lab: tasks that know the right reason, and models kdlens trains itself.",
                      no_args_is_help=True)
app.add_typer(lab_app, name="lab")


@lab_app.command("vision")
@user_errors
def lab_vision(
    root: Path = typer.Option(Path("runs/lab"), help="Folder for labs; each recipe gets its own hashed subfolder."),
    config: Path = typer.Option(None, help="YAML recipe (VisionLabConfig) instead of the default one."),
    quick: bool = typer.Option(False, help="A small lab (less data, fewer epochs) for a first look."),
    device: str = typer.Option("cpu", help="Where to train: cpu, cuda, cuda:1, ..."),
) -> None:
    """Train the shapes teacher and its seven students (cached: a second call loads them)."""
    from kdlens.lab import vision

    recipe = _load(config, vision.VisionLabConfig) if config else vision.quick_config() if quick else None
    lab = vision.build(root, recipe, device=device)
    table = Table(title=escape(f"vision lab: {lab.root}"))
    table.add_column("model", no_wrap=True)
    for column in ("test acc", "shifted acc", "test agree", "shifted agree", "seconds"):
        table.add_column(column, justify="right")
    for name, m in lab.metrics.items():
        table.add_row(name, *(f"{m[k]:.3f}" if k in m else "-" for k in (
            "test/accuracy", "test_shifted/accuracy", "test/agreement", "test_shifted/agreement")),
            f"{m.get('seconds', 0):.0f}")
    console.print(table)


@lab_app.command("lm")
@user_errors
def lab_lm(
    root: Path = typer.Option(Path("runs/lab"), help="Folder for labs; each recipe gets its own hashed subfolder."),
    config: Path = typer.Option(None, help="YAML recipe (LMLabConfig) instead of the default one."),
    quick: bool = typer.Option(False, help="Small models on little data (a minute or two) for a first look."),
    device: str = typer.Option("cpu", help="Where to train: cpu, cuda, cuda:1, ..."),
) -> None:
    """Train the language-model lab: a Llama teacher and base student on chains and babi traces, then students
    distilled from the base student (sequence-level, token-level at T = 1, 2, 5, reverse KL, GJSD, perturbed)."""
    from kdlens.lab import lm

    recipe = _load(config, lm.LMLabConfig) if config else lm.quick_config() if quick else None
    lab = lm.build(root, recipe, device=device)
    table = Table(title=escape(f"language-model lab: {lab.root}"))
    for column in ("model", "loss (last epoch)", "seconds"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, record in lab.metrics.items():
        loss = record.get("loss")
        table.add_row(name, "-" if loss is None else f"{loss:.4f}", f"{record.get('seconds', 0):.0f}")
    console.print(table)


@app.command()
@user_errors
def audit(
    config: Path = typer.Argument(..., help="YAML: run_dir, data, teacher, students, baselines, probes, selection."),
    report: bool = typer.Option(True, help="Write report.html and summary.md when the audit is done."),
    quiet: bool = typer.Option(False, help="No progress display."),
    shard: str = typer.Option(None, metavar="I/N", help="Do share I of N of every sharded stage and exit (no "
                              "launcher: a Slurm array, a Ray or Kubernetes job); a later run merges the shares."),
    merge: bool = typer.Option(False, help="Merge the shares' saved shards and run the one-process stages; compute "
                               "no shard here (exit 3 when a stage still misses shards)."),
    debug: bool = typer.Option(False, help="Show the full traceback of an error (for bug reports)."),
) -> None:
    """Audit a teacher against its students as CONFIG describes (run it again to resume; done stages load).
    Classifiers by default; language models that reason in steps with `data: {task: reasoning}`. Under torchrun or
    accelerate launch, every rank takes its share of each sharded stage and rank 0 writes the results."""
    from kdlens.audit import as_config, run_share
    from kdlens.audit import run as run_audit
    from kdlens.distributed import RankFailed, World, leave
    from kdlens.stages import SharesMissing

    if shard is not None and merge:
        raise ValueError("Expected --shard or --merge, but got both. A share maps its shards; the merge, run once the "
                         "shares are done, reduces them.")
    if shard is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("Expected --shard without a launcher, but this process is a rank of a torchrun / accelerate "
                         "job. Launch the audit without --shard (each rank takes its share), or run each share as its "
                         "own command.")
    if shard is not None:
        World.shard(shard)  # a bad i/n is refused before the config is read
    parsed = as_config(config)
    if shard is not None:
        done = run_share(parsed, shard, progress=not quiet)
        mapped = ", ".join(f"{stage} {n}" for stage, n in done["mapped"].items()) or "nothing (all saved already)"
        console.print(f"{done['share']}: mapped {mapped} shards")
        if done["waits_for"] is not None:
            console.print(f"stage {done['waits_for']} needs every share: when all are done, run kdlens audit "
                          f"{escape(str(config))} --merge (or without --merge to compute what is missing there)")
        return
    try:
        world = World.from_environment()
        results = run_audit(parsed, progress=not quiet, world=world, merge_only=merge)
    except SharesMissing as missing:
        console.print(f"[yellow]{escape(str(missing))}[/yellow]")
        raise typer.Exit(3) from None
    except RankFailed as failed:
        console.print(f"[red]{escape(str(failed))}[/red]")
        raise typer.Exit(1) from None
    finally:
        leave()
    if world.rank != 0:
        return
    _print_scorecard(results)
    if report:
        _report(Path(parsed.run_dir))


@app.command("crosscoder")
@user_errors
def crosscoder_command(
    config: Path = typer.Argument(..., help="YAML: run_dir, first, second, names, texts, crosscoder."),
    quiet: bool = typer.Option(False, help="No progress display."),
) -> None:
    """Diff two language models with a crosscoder on your texts: paired activations at one block, the crosscoder
    trained on them, and which latents each model has alone, checked by Latent Scaling, with their contexts and
    what removing them costs each model (run it again to resume; done stages load)."""
    from kdlens.diffing.run import diff

    found = diff(config, progress=not quiet)
    first, second = found["base"], found["distilled"]
    fit, counts, inside = found["fit"], found["counts"], found["inside"]
    console.print(f"{found['n_latents']} latents ({found['kind']}) at {found['layers'][0]} / {found['layers'][1]}; "
                  f"held-out FVE {fit['fve'][0]:.3f} ({escape(first)}) / {fit['fve'][1]:.3f} ({escape(second)}), "
                  f"L0 {fit['l0']:.1f}, dead {fit['dead']:.1%}")
    table = Table(title="latents one model has alone")
    for column in ("model", "exclusive", "real (Latent Scaling)", "likely artifacts", "mostly template/special"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for side, name in (("first", first), ("second", second)):
        c = counts[side]
        table.add_row(escape(name), str(c["exclusive"]), "-" if c["real"] is None else str(c["real"]),
                      "-" if c["artifact"] is None else str(c["artifact"]), str(c["template_or_special"]))
    console.print(table)
    if inside is not None:
        for key, name in (("base", first), ("distilled", second)):
            e = inside[key]
            console.print(f"{escape(name)}: next-token loss {e['original']['ce']:.3f} nats, with reconstructions "
                          f"{e['spliced']['ce']:.3f} (KL {e['spliced']['kl']:.3f}); {escape(second)}'s exclusive "
                          f"latents removed: {e['ablate_distilled']['ce'] - e['original']['ce']:+.3f}")
    console.print(f"figures: {escape(found['run_dir'])}/crosscoder.json (contexts, every latent's label and ratios)")


@app.command("select")
@user_errors
def select_command(
    config: Path = typer.Argument(..., help="YAML: run_dir, teacher, student, data, k, beta, methods."),
    quiet: bool = typer.Option(False, help="No progress display."),
) -> None:
    """Choose distillation data: k sampled teacher responses per problem, each sentence classified with the teacher
    and the original student; keep the response with the most teacher sentences (and each baseline's pick).
    Writes every selection as JSONL and a `datasets` folder (run it again to resume; done stages load)."""
    from kdlens.select.run import as_select_config, select

    found = select(as_select_config(config), progress=not quiet)
    table = Table(title=f"selections of {found['n_usable']} of {found['n_problems']} problems (k = {found['k']})")
    for column in ("method", "examples", "tokens", "sentences", "teacher sentences", "teacher share", "IFD"):
        table.add_column(column, justify="left" if column == "method" else "right", no_wrap=True)
    for method, e in found["methods"].items():
        table.add_row(method, str(e["examples"]), str(e["tokens"]),
                      *("-" if e[k] is None else f"{e[k]:.3f}" for k in ("sentences", "teacher_sentences",
                                                                       "teacher_share", "ifd")))
    console.print(table)
    console.print(f"{found['distinct']:.2f} different responses per problem on average, of {found['k']} sampled"
                  + (": every method keeps the same text; sample more diversely (temperature)"
                     if found["distinct"] == 1 else ""))
    console.print(f"selections: {escape(found['folder'])}/<method>.jsonl and <method>/ (datasets.load_from_disk)")


@app.command("report")
@user_errors
def report_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `kdlens audit` (holds results.json)."),
) -> None:
    """Re-render report.html and summary.md from RUN_DIR's result files (no model is loaded)."""
    _report(run_dir)


@app.command()
@user_errors
def demo(
    root: Path = typer.Option(Path("runs"), help="Where the lab (ROOT/lab) and the audit (ROOT/demo) live."),
    device: str = typer.Option("cpu", help="Where to train the lab: cpu, cuda, ..."),
) -> None:
    """The whole story in one command: build the vision lab (cached), audit it, write the report."""
    from kdlens.audit import AuditConfig
    from kdlens.audit import run as run_audit
    from kdlens.config import validate
    config = validate(demo_config(root, device), AuditConfig, source="kdlens demo")
    results = run_audit(config)
    _print_scorecard(results)
    _report(Path(config.run_dir))


def demo_config(root: Path, device: str = "cpu") -> dict:
    """The demo's audit: the vision lab's teacher, four of its students and both baselines, on 1,000 test images
    (PGD on the first 256)."""
    from kdlens.lab.vision import DEMO_STUDENTS

    lab = {"lab": "vision", "lab_root": str(root / "lab"), "lab_recipe": "default"}
    return {"run_dir": str(root / "demo"), "device": device, "data": {"task": "shapes", "n": 1000},
            "teacher": lab, "students": {name: {**lab, "lab_model": name} for name in DEMO_STUDENTS},
            "baselines": {name: {**lab, "lab_model": name} for name in ("teacher_reseeded", "untrained_student")},
            "probes": {"robustness": {"n": 256, "epsilons": [2 / 255, 4 / 255, 8 / 255]}}}


def _report(run_dir: Path) -> None:
    from kdlens.report import render

    with console.status("drawing the report"):
        path = render(run_dir)
    console.print(f"report: [bold]{escape(str(path.resolve()))}[/bold]")
    console.print(f"summary: {escape(str(path.with_name('summary.md').resolve()))}")


SCORECARD_COLUMNS = {  # per audit kind (results.json's "kind"): metric -> column header
    "classifier": {"score": "score", "accuracy": "accuracy", "accuracy_shifted": "shifted", "agreement": "agreement",
                   "ece": "ECE", "attribution_spearman": "attr. rho", "right_for_wrong_reasons": "wrong reasons",
                   "cue_flip_rate": "cue flips"},
    "lm": {"score": "score", "accuracy": "acc.", "trace_accuracy": "trace acc.", "step_agreement": "step agree",
           "bleu": "BLEU", "right_for_wrong_reasons": "wrong trace"},
}


def _print_scorecard(results: dict) -> None:
    card = results["scorecard"]
    warning = (card.get("teacher_reference") or {}).get("text")
    if warning:
        console.print(f"[bold yellow]{escape(warning)}[/bold yellow]")
    table = Table(title="scorecard")
    table.add_column("student", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    columns = SCORECARD_COLUMNS[results["kind"]]
    for column in columns.values():
        table.add_column(column, justify="right", no_wrap=True)
    keys = tuple(columns)
    for name, s in results["students"].items():
        table.add_row(escape(name), s["verdict"], *("-" if s.get(k) is None else f"{s[k]:.3f}" for k in keys))
    console.print(table)
    if card["chosen"] is None:
        console.print(f"[red]{escape(card.get('no_choice') or 'No student passes the selection rule floors.')}[/red]")
    else:
        note = (f" (accuracy alone would have chosen {escape(card['chosen_by_accuracy'])})"
                if card["chosen_by_accuracy"] != card["chosen"] else "")
        console.print(f"chosen: [bold]{escape(card['chosen'])}[/bold]{note}")
        console.print(escape(results["students"][card["chosen"]]["verdict_text"]))


def error_message(error: BaseException) -> str:
    """The whole message of an error, as a user reads it: a KeyError's own text without the quotes str() adds; an
    error that carries no sentence (an internal one) named by its type, with how to report it."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        message = error.args[0]
    else:
        message = str(error)
    if " " not in message.strip():
        return (f"{type(error).__name__}: {message!r}. This is a kdlens bug, not a mistake of yours: run the same "
                f"command with --debug and report the traceback.")
    return message


def _load(path: Path, model):
    """Validate a YAML config (a bad one raises with the typo's suggestion; the command prints it, exit 2)."""
    from kdlens.config import load_yaml

    return load_yaml(path, model)


def _print_metrics(title: str, metrics: dict) -> None:
    table = Table(title=escape(title), show_header=False)
    for key, value in metrics.items():
        table.add_row(escape(str(key)), f"{value:.4f}" if isinstance(value, float) else escape(str(value)))
    console.print(table)


if __name__ == "__main__":
    app()
