"""The ``kdlens`` command line: a thin layer over the Python API (later issues add distill, audit, report)."""

from __future__ import annotations

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
console = Console()


def _print_version(value: bool) -> None:
    if value:
        console.print(f"kdlens {kdlens.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                 help="Print the kdlens version and exit."),
) -> None:
    """kdlens: distillation you can audit."""


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
def distill(
    config: Path = typer.Argument(..., help="YAML file: run_dir, data, teacher, student, strategy, train."),
) -> None:
    """Distil a teacher into a student as CONFIG describes (run it again to resume)."""
    from kdlens.distill.run import DistillRunConfig, run

    parsed = _load(config, DistillRunConfig)
    teacher = None
    if parsed.teacher is not None and parsed.teacher.lab == "vision":
        from kdlens.lab import vision

        lab_config = vision.VisionLabConfig(shapes=parsed.data.shapes, students=[])
        teacher = vision.build(parsed.teacher.lab_root, lab_config, device=parsed.train.device).teacher()
    result = run(parsed, teacher=teacher)
    _print_metrics(f"student in {result.model_dir}", result.final)


lab_app = typer.Typer(help="Build the lab: tasks that know the right reason, and models kdlens trains itself.",
                      no_args_is_help=True)
app.add_typer(lab_app, name="lab")


@lab_app.command("vision")
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


@lab_app.command("reasons")
def lab_reasons(
    run_dir: Path = typer.Option(Path("runs/lab-reasons"), help="Run directory for the stages' outputs."),
    root: Path = typer.Option(Path("runs/lab"), help="Folder for labs (built first if missing)."),
    config: Path = typer.Option(None, help="YAML recipe (VisionLabConfig) of the lab, instead of the default one."),
    n: int = typer.Option(1000, min=10, help="Examples of the test split to probe."),
    epsilon: float = typer.Option(4 / 255, min=0, help="PGD budget, L-inf, in pixel units of [0, 1] images."),
    device: str = typer.Option("cpu", help="Where to train the lab if it is not built yet."),
) -> None:
    """Does each student look where the teacher looks? Attribution and robustness stages on the vision lab."""
    from kdlens.audit.common import AuditData
    from kdlens.audit.reasons import attribution_stage, robustness_stage
    from kdlens.lab import vision
    from kdlens.tasks.shapes import make_split, other_cues, with_cues

    recipe = _load(config, vision.VisionLabConfig) if config else None
    lab = vision.build(root, recipe, device=device, baseline_teacher=True)
    test = make_split(lab.config.shapes, "test", n)
    edited_to = other_cues(test, seed=1)
    data = AuditData(test.images, test.labels, test.masks, test.difficulty, with_cues(test, edited_to).images,
                     edited_to, name="test")
    students = {name: lab.student(name) for name in lab.student_dirs}
    baselines = {"teacher_reseeded": lab.baseline_teacher(), "untrained_student": lab.untrained_student()}
    layers = dict.fromkeys(["teacher", *students, *baselines], "block3")
    with console.status("attribution maps, comparisons, verdicts"):
        attribution = attribution_stage(run_dir, lab.teacher(), students, data, layers, baselines)
    with console.status("PGD against every model, counterfactual cues"):
        robustness = robustness_stage(run_dir, lab.teacher(), students, data, epsilon=epsilon)
    table = Table(title=escape(f"reasons on {n} test images: {run_dir}/stages"))
    table.add_column("model", no_wrap=True)
    for column in ("Spearman vs teacher", "right for wrong reasons", "PGD agreement", "cue flips"):
        table.add_column(column, justify="right")
    for name in [*students, *baselines]:
        a, r = attribution.get(name, {}), robustness.get(name, {})
        cells = (a.get("spearman"), a.get("right_for_wrong_reasons"), r.get("agree_on_student_attack"),
                 r.get("cue_flips"))
        table.add_row(name, *("-" if v is None else f"{v:.3f}" for v in cells))
    console.print(table)


def _load(path: Path, model):
    """Validate a YAML config, or exit 2 with the error (a typo's suggestion included) and no traceback."""
    from kdlens.config import load_yaml

    try:
        return load_yaml(path, model)
    except (ValueError, FileNotFoundError) as error:
        console.print(f"[red]{escape(str(error))}[/red]")
        raise typer.Exit(2) from None


def _print_metrics(title: str, metrics: dict) -> None:
    table = Table(title=escape(title), show_header=False)
    for key, value in metrics.items():
        table.add_row(escape(str(key)), f"{value:.4f}" if isinstance(value, float) else escape(str(value)))
    console.print(table)


if __name__ == "__main__":
    app()
