"""The two installable parts, each from the built wheel (not editable) in a fresh virtualenv.

`orbisvoice[cli]` is what an operator's host installs: orbisctl without the runtime's
dependencies. `orbisvoice[runtime]` is what the runtime image installs: the services without
typer, rich, jinja2 or the docker SDK. pip fetches the dependencies as for any install (its
cache makes a second run quick).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


# Distributions only the runtime part may carry, only the CLI part, and both (the PostgreSQL
# and Redis clients: orbisctl reaches both itself, pyproject.toml says where).
RUNTIME_ONLY = {
    "aiohttp",
    "google-genai",
    "uvloop",
    "psycopg-pool",
    "prometheus-client",
    "pyjwt",
}
CLI_ONLY = {"typer", "rich", "jinja2", "docker", "boto3"}
SHARED = {"psycopg", "redis", "pydantic", "pydantic-settings", "cryptography", "pyyaml"}

# The installed distributions' names, normalized as PEP 503 says (prometheus_client ->
# prometheus-client).
LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, re; "
    "print('\\n'.join(sorted({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower() "
    "for d in m.distributions()})))"
)

# Every module of the packages orbisctl runs from, imported one by one; prints the failures.
IMPORT_EVERY_MODULE = """
import importlib, pkgutil
import orbisctl, backups, healthchecks
for package in (orbisctl, backups, healthchecks):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            importlib.import_module(module.name)
        except ImportError as exc:
            print(f"{module.name}: {exc}")
"""


def _venv_with(wheel: Path, extra: str, root: Path) -> Path:
    """A fresh virtualenv holding `wheel[extra]`; returns its bin directory. The venv gets no
    pip of its own: this interpreter's pip installs into it (`pip --python`)."""
    venv = root / extra
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{wheel}[{extra}]",
        ],
        check=True,
        timeout=300,
    )
    return venv / "bin"


@pytest.fixture(scope="module")
def cli_bin(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv_with(built_wheel, "cli", tmp_path_factory.mktemp("venvs"))


@pytest.fixture(scope="module")
def runtime_bin(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv_with(built_wheel, "runtime", tmp_path_factory.mktemp("venvs"))


def _run(argv: list[str | Path], cwd: Path) -> str:
    """Run outside the checkout (cwd), so only the installed wheel can be imported."""
    result = subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _distributions(bin_dir: Path) -> set[str]:
    return set(_run([bin_dir / "python", "-c", LIST_DISTRIBUTIONS], bin_dir).split())


def test_the_cli_part_carries_none_of_the_runtime_dependencies(cli_bin: Path) -> None:
    installed = _distributions(cli_bin)
    assert "orbisvoice" in installed
    assert installed >= CLI_ONLY | SHARED
    assert installed.isdisjoint(RUNTIME_ONLY), installed & RUNTIME_ONLY


def test_orbisctl_help_runs_from_the_cli_part(cli_bin: Path) -> None:
    shown = _run([cli_bin / "orbisctl", "--help"], cli_bin)
    for command in ("init", "up", "backup", "restore", "drill", "images", "rotate-keys", "tls"):
        assert command in shown


def test_every_cli_module_imports_in_the_cli_part(cli_bin: Path) -> None:
    assert _run([cli_bin / "python", "-c", IMPORT_EVERY_MODULE], cli_bin) == ""


def test_the_runtime_part_carries_none_of_the_cli_dependencies(runtime_bin: Path) -> None:
    installed = _distributions(runtime_bin)
    assert "orbisvoice" in installed
    assert installed >= RUNTIME_ONLY | SHARED
    assert installed.isdisjoint(CLI_ONLY), installed & CLI_ONLY


def test_the_services_import_from_the_runtime_part(runtime_bin: Path) -> None:
    python = runtime_bin / "python"
    _run(
        [python, "-c", "import runtime.api.app, runtime.gateway.app, runtime.emulator"], runtime_bin
    )
    assert "usage: python -m healthchecks" in _run(
        [python, "-m", "healthchecks", "--help"], runtime_bin
    )
