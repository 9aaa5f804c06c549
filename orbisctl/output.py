"""Console output: the one place that knows about rich consoles, --quiet and --json."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Column, Table

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
