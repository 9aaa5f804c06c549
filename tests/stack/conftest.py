"""Fixtures for the stack tests: installs made by the real `orbisctl init`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from orbisctl.cli import app
from tests.services import free_port


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run orbisctl in-process; core bugs raise instead of hiding in the result."""
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def install(tmp_path: Path) -> Path:
    """An emulator install on free high ports (nothing is started)."""
    root = tmp_path / "orbis"
    result = invoke(
        "init",
        "--dir",
        str(root),
        "--non-interactive",
        "--model",
        "emulator",
        "--image-source",
        "local",
        "--http-port",
        str(free_port()),
        "--https-port",
        str(free_port()),
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def dead_engine(tmp_path: Path) -> dict[str, str]:
    """Environment pointing DOCKER_HOST at a socket nothing listens on."""
    return {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
