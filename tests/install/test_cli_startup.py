"""`orbisctl --help` lists every command without importing any command module, and lists each
with the help line the command itself has."""

from __future__ import annotations

import subprocess
import sys

import typer.main

from orbisctl.cli import VERBS, DeferredCommand, app

# Prints the command modules and heavy libraries `orbisctl --help` imported.
HELP_THEN_LIST_IMPORTS = """
import sys
from orbisctl.cli import main
try:
    main()
except SystemExit:
    pass
print(sorted(m for m in sys.modules if m.startswith("orbisctl.commands.") or m == "docker"))
"""


def test_help_imports_no_command_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", HELP_THEN_LIST_IMPORTS, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "rotate-keys" in result.stdout
    assert result.stdout.splitlines()[-1] == "[]"


def test_each_listed_help_line_is_the_command_s_own() -> None:
    root = typer.main.get_group(app)
    assert list(root.commands) == list(VERBS)
    for name, listed in root.commands.items():
        assert isinstance(listed, DeferredCommand)
        loaded = listed.load()
        assert loaded.help is not None, name
        assert listed.help == loaded.help.split("\n\n")[0], name
