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


class _Stages:
    def __init__(self, progress: Progress | None, tasks: dict, console: Console | None = None) -> None:
        self.progress, self.tasks, self.console = progress, tasks, console

    @contextmanager
    def stage(self, name: str) -> Iterator[dict]:
        """Show ``name`` as running for the block; the block may set ``status["text"]`` (e.g. "cached")."""
        status: dict = {"text": ""}
        if self.progress is None:
            yield status
            if self.console is not None:  # not a terminal: one plain line per finished stage
                self.console.print(f"{name}: {status['text'] or 'done'}", markup=False, highlight=False)
            return
        task = self.tasks[name]
        self.progress.start_task(task)
        self.progress.update(task, status="running")
        try:
            yield status
        except BaseException:
            self.progress.update(task, status="[red]failed[/red]")
            raise
        self.progress.update(task, completed=1, status=status["text"] or "done")
        self.progress.stop_task(task)

    def say(self, name: str, text: str) -> None:
        """Show ``text`` beside running stage ``name`` (how far it has come)."""
        if self.progress is not None:
            self.progress.update(self.tasks[name], status=text)
        elif self.console is not None:
            self.console.print(f"{name}: {text}", markup=False, highlight=False)


@contextmanager
def stage_display(enabled: bool, names: list[str]) -> Iterator[_Stages]:
    """One line per stage (waiting, running with elapsed time, done or cached); plain lines, one per update, when
    stderr is not a terminal (a log file, CI); a no-op when disabled."""
    if not enabled:
        yield _Stages(None, {})
        return
    from rich.progress import SpinnerColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield _Stages(None, {}, console)
        return
    columns = [SpinnerColumn(finished_text="[green]✓[/green]"), TextColumn("[bold]{task.description:<16}"),
               TimeElapsedColumn(), TextColumn("{task.fields[status]}")]
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {name: progress.add_task(name, total=1, start=False, status="waiting") for name in names}
        yield _Stages(progress, tasks)
