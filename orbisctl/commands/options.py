"""Options shared by several verb groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

InstallDirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        "-d",
        envvar="ORBIS_DIR",
        help="The install directory (holds orbis.yaml). Default: the current directory.",
        show_default=False,
    ),
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
