"""The ``kdlens`` command line: a thin layer over the Python API (later issues add distill, audit, report)."""

from __future__ import annotations

import platform

import typer
from rich.console import Console
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


if __name__ == "__main__":
    app()
