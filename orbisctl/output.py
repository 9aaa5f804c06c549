"""Console output: the one place that knows about rich consoles, --quiet and --json."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

console = Console(highlight=False, soft_wrap=True)
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


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))
