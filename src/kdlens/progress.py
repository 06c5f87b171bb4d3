"""One progress bar for every long loop: rich when enabled, silent otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class _Bar:
    def __init__(self, progress: Progress | None, task, console: Console | None) -> None:
        self.progress, self.task, self.console = progress, task, console

    def advance(self, steps: int = 1, **values: float) -> None:
        """Move on ``steps`` and show the latest values (e.g. loss=0.31, acc=0.92)."""
        if self.progress is not None:
            shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
            self.progress.update(self.task, advance=steps, values=shown)

    def log(self, record: dict) -> None:
        """Print one line above the bar (an epoch's evaluation)."""
        if self.console is not None:
            self.console.print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in record.items()))


@contextmanager
def progress_bar(enabled: bool, description: str, total: int, completed: int = 0) -> Iterator[_Bar]:
    """A rich progress bar with elapsed and remaining time and free-form values; a no-op when disabled."""
    if not enabled:
        yield _Bar(None, None, None)
        return
    console = Console(stderr=True)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[values]}")]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=completed, values="")
        yield _Bar(progress, task, console)
