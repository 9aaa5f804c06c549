"""Options shared by several verb groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _check_target(ctx: typer.Context, value: Path) -> Path:
    """A verb that does not run on target swarm yet is refused here, in one line, before it
    touches anything: every verb that reads an install directory takes this option."""
    from orbisctl import swarm  # imported here: `--help` needs none of it

    swarm.refuse_unless_ready(" ".join(ctx.command_path.split()[1:]), value)
    return value


InstallDirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        "-d",
        envvar="ORBIS_DIR",
        help="The install directory (holds orbis.yaml). Default: the current directory.",
        show_default=False,
        callback=_check_target,
    ),
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
