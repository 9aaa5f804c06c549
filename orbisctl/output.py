"""Console output: the one place that knows about rich consoles, --quiet and --json."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from rich import filesize
from rich.console import Console, RenderableType
from rich.logging import RichHandler
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Column, Table
from rich.text import Text

console = Console(highlight=False, soft_wrap=True)
# Wider than any table we print: what a table measures within this is its natural width.
_UNBOUNDED_WIDTH = 100_000
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class OutputOptions:
    quiet: bool = False
    verbose: bool = False


options = OutputOptions()


def setup_logging(*, quiet: bool, verbose: bool) -> None:
    options.quiet = quiet
    options.verbose = verbose
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )


def info(message: str) -> None:
    """A progress or result line for humans; silenced by --quiet."""
    if not options.quiet:
        console.print(message)


def aside(message: str) -> None:
    """A result line about something done on the way (an interrupted restore finished), on
    stderr: stdout stays the command's own output, its JSON for instance."""
    if not options.quiet:
        err_console.print(message)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}")


def error(message: str, hint: str | None = None) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    if hint:
        err_console.print(f"  [dim]hint:[/] {escape(hint)}")


def id_column(header: str) -> Column:
    """A table column of ids: never cut with "…" (folded on a narrow terminal)."""
    return Column(header, overflow="fold")


def print_table(table: Table) -> None:
    """A table on stdout. On a terminal rich fits it to the width; otherwise (a pipe, a file,
    a scheduled run's log) it is printed at its natural width, so no cell is folded or cut
    with "…" and a script reading an id gets all of it."""
    if console.is_terminal:
        console.print(table)
        return
    unbounded = console.options.update_width(_UNBOUNDED_WIDTH)
    natural = Measurement.get(console, unbounded, table).maximum
    # `console.print(width=…)` never goes past the console's width: a console of that width.
    wide = Console(file=console.file, width=max(natural, console.width), highlight=False)
    wide.print(table)


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


# --- steps of long verbs ------------------------------------------------------------------

STEP_MARK = "·"  # begins every line a StepReporter writes to a log (and its notes)


class _IfBytes(ProgressColumn):
    """`column`, for a step that moves bytes; nothing for the others."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self._column = column

    def render(self, task: Task) -> RenderableType:
        return self._column.render(task) if task.fields.get("bytes") else Text("")


@dataclass
class _Step:
    description: str
    started: float
    task: TaskID | None = None
    nbytes: int = 0
    moves_bytes: bool = False
    line_open: bool = False  # log mode: "· description…" is written, its end not yet


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


class StepReporter:
    """Shows a verb's steps as they happen, on stderr (stdout stays for results and --json).

    On a terminal: a rich line with the current step, its own progress (pip's current
    package, bytes moved) and its elapsed time; each finished step stays above it with its
    duration. Anywhere else (CI, cron, a pipe): one plain line per step, begun when it starts
    and ended when it ends, `· dump redis… done in 3.2 s`; a step's detail lines go on
    lines of their own, and the step's end is then a line of its own. Nothing with --quiet.

    It is an `orbisctl.core.progress.Progress`; `step` also serves
    as an `on_step` callback. A step ends when the next step or a note begins, or when the
    reporter closes: as failed when an exception leaves the `with` block.
    """

    def __init__(self) -> None:
        self._quiet = options.quiet
        self._live = err_console.is_terminal and not self._quiet
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("[dim]{task.fields[detail]}[/]"),
            _IfBytes(BarColumn()),
            _IfBytes(DownloadColumn()),
            _IfBytes(TransferSpeedColumn()),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not self._live,
        )
        self._current: _Step | None = None

    def __enter__(self) -> Self:
        if self._live:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._end("done in")
        elif issubclass(exc_type, KeyboardInterrupt):
            self._end("interrupted after")
        else:
            self._end("failed after")
        if self._live:
            self._bar.stop()

    # -- the Progress protocol

    def step(self, description: str, total_bytes: int | None = None) -> None:
        self._end("done in")
        if self._quiet:
            return
        current = _Step(description, time.monotonic(), moves_bytes=total_bytes is not None)
        if self._live:
            current.task = self._bar.add_task(
                escape(description), total=total_bytes, detail="", bytes=current.moves_bytes
            )
        else:
            self._write(f"{STEP_MARK} {description}…", end="")
            current.line_open = True
        self._current = current

    def __call__(self, description: str) -> None:
        self.step(description)

    def advance(self, nbytes: int) -> None:
        current = self._current
        if current is None:
            return
        current.nbytes += nbytes
        if current.task is not None:
            if not current.moves_bytes:
                current.moves_bytes = True
                self._bar.update(current.task, bytes=True)
            self._bar.advance(current.task, nbytes)

    def detail(self, message: str) -> None:
        current = self._current
        if self._quiet or current is None:
            return
        if current.task is not None:
            self._bar.update(current.task, detail=escape(message))
            return
        if current.line_open:
            self._write("")
            current.line_open = False
        self._write(f"    {message}")

    def note(self, message: str) -> None:
        self._end("done in")
        if self._quiet:
            return
        if self._live:
            self._bar.console.print(f"[dim]{STEP_MARK}[/] {escape(message)}")
        else:
            self._write(f"{STEP_MARK} {message}")

    # -- internals

    def _end(self, how: str) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        took = f"{how} {_seconds(time.monotonic() - current.started)}"
        if current.nbytes:
            took += f", {filesize.decimal(current.nbytes)}"
        if current.task is not None:
            self._bar.remove_task(current.task)
            mark = "[green]✓[/]" if how == "done in" else "[red]✗[/]"
            self._bar.console.print(f"{mark} {escape(current.description)} [dim]{took}[/]")
        elif current.line_open:
            self._write(f" {took}")
        else:
            self._write(f"{STEP_MARK} {current.description}… {took}")

    @staticmethod
    def _write(text: str, *, end: str = "\n") -> None:
        err_console.print(text, end=end, markup=False, highlight=False)
