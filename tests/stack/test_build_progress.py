"""`images build` shows its steps as they happen: one line per step off a terminal, with the
long sub-steps (debootstrap's phases, pip's requirements, each build step) as they stream.

In-process with a stand-in engine (no Docker) and stand-in debootstrap and pip executables
that print what the real ones print, so the lines are checked in order and the build fails
or finishes in a second.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from typer.testing import CliRunner, Result

from orbisctl.cli import app
from orbisctl.core import engine
from orbisctl.core.config import ImageSource, OrbisConfig
from orbisctl.core.errors import ExitCode
from orbisctl.images.base import DEBIAN_MIRROR, DEBIAN_SUITE
from orbisctl.images.build import REGISTRY_NGINX, REGISTRY_POSTGRES, REGISTRY_PYTHON
from orbisctl.output import STEP_MARK
from orbisctl.render import image_refs

DURATION = r"\d+\.\d s"


@dataclass
class _Image:
    id: str
    labels: dict[str, str] = field(default_factory=dict)


class _Images:
    def __init__(self, present: set[str]) -> None:
        self.present = present

    def get(self, ref: str) -> _Image:
        if ref not in self.present:
            raise docker.errors.ImageNotFound(ref)
        return _Image(f"sha256:{abs(hash(ref)):x}")


class _Api:
    def __init__(self, built: list[str]) -> None:
        self.built = built

    def build(self, *, tag: str, **_: Any) -> Iterator[dict[str, Any]]:
        self.built.append(tag)
        yield {"stream": "Step 1/2 : FROM base\n"}
        yield {"stream": " ---> 1234\n"}
        yield {"stream": "Step 2/2 : RUN apt-get install -y nginx\n"}
        yield {"stream": "Successfully built 5678\n"}


class _Containers:
    def run(self, image: str, command: list[str], **_: Any) -> bytes:
        return b"3.11.2\n"


class FakeEngine:
    """The few calls `build_all` makes, answered at once: `present` images exist."""

    def __init__(self, present: set[str]) -> None:
        self.built: list[str] = []
        self.images = _Images(present)
        self.api = _Api(self.built)
        self.containers = _Containers()


def _executable(path: Path, script: str) -> None:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


@pytest.fixture
def build_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty build cache and a bin/ directory for stand-in executables, first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("ORBIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def _build(*args: str) -> Result:
    return CliRunner().invoke(app, ["images", "build", *args], catch_exceptions=False)


def test_images_build_shows_debootstrap_as_it_runs_and_where_it_failed(
    build_host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _executable(
        build_host / "debootstrap",
        "echo 'I: Retrieving InRelease'\n"
        "echo 'I: Checking Release signature'\n"
        "echo 'I: Retrieving adduser 3.134'\n"
        "echo 'I: Retrieving apt 2.6.1'\n"
        "echo 'E: Failed getting release file http://mirror.invalid/dists/bookworm/Release'\n"
        "exit 1\n",
    )
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(engine, "connect", lambda: FakeEngine(present=set()))
    result = _build("--source", "local")
    assert result.exit_code == ExitCode.ENGINE, result.output
    debootstrap = f"{STEP_MARK} debootstrap {DEBIAN_SUITE} from {DEBIAN_MIRROR}…"
    failure = "E: Failed getting release file http://mirror.invalid/dists/bookworm/Release"
    hint = f"check that {DEBIAN_MIRROR} is reachable (ORBIS_DEBIAN_MIRROR picks another)"
    lines = result.stderr.splitlines()
    assert re.fullmatch(re.escape(f"{debootstrap} failed after ") + DURATION, lines[5]), lines
    assert lines[:5] + lines[6:] == [
        debootstrap,
        "    I: Retrieving InRelease",
        "    I: Checking Release signature",
        "    I: Retrieving adduser 3.134",  # one line per phase, not one per package
        f"    {failure}",
        f"error: debootstrap failed: {failure}",
        f"  hint: {hint}",
    ]
    assert result.stdout == ""
    quiet = CliRunner().invoke(
        app, ["--quiet", "images", "build", "--source", "local"], catch_exceptions=False
    )
    assert quiet.exit_code == ExitCode.ENGINE
    assert quiet.stderr.splitlines()[0].startswith("error: debootstrap failed: ")


def test_images_build_shows_each_stage_in_order(
    build_host: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `python -m pip wheel …` is this stand-in: it prints as pip does and makes no wheel.
    fake_python = build_host / "python-for-pip"
    _executable(
        fake_python,
        "echo 'Collecting aiohttp>=3.9'\n"
        "echo '  Downloading aiohttp-3.9.5-cp311-cp311-manylinux.whl (1.3 MB)'\n"
        "echo 'Collecting yarl<2.0,>=1.0'\n"
        "echo 'Building wheel for orbisvoice (pyproject.toml): started'\n"
        "echo 'Saved ./orbisvoice-0.1.0-py3-none-any.whl'\n",
    )
    monkeypatch.setattr(sys, "executable", str(fake_python))
    refs = image_refs(OrbisConfig.model_validate({"images": {"source": "registry"}}))
    pulled = [REGISTRY_POSTGRES, refs.redis, REGISTRY_PYTHON, REGISTRY_NGINX]
    fake = FakeEngine(present=set(pulled))
    monkeypatch.setattr(engine, "connect", lambda: fake)
    result = _build("--source", ImageSource.REGISTRY.value)
    assert result.exit_code == 0, result.output
    step = STEP_MARK
    expected = [
        *(re.escape(f"{step} {ref}: present") for ref in pulled),
        re.escape(f"{step} dependency wheels: pip wheel…"),
        "    Collecting aiohttp>=3.9",
        "    Collecting yarl<2.0,>=1.0",
        re.escape("    Building wheel for orbisvoice (pyproject.toml): started"),
        re.escape(f"{step} dependency wheels: pip wheel… done in ") + DURATION,
        re.escape(f"{step} orbisvoice wheel: pip wheel --no-deps…"),
        "    Collecting aiohttp>=3.9",
        "    Collecting yarl<2.0,>=1.0",
        re.escape("    Building wheel for orbisvoice (pyproject.toml): started"),
        re.escape(f"{step} orbisvoice wheel: pip wheel --no-deps… done in ") + DURATION,
    ]
    for ref in (refs.postgres, refs.nginx, refs.runtime):
        expected += [
            re.escape(f"{step} {ref}: building…"),
            re.escape("    Step 1/2 : FROM base"),
            re.escape("    Step 2/2 : RUN apt-get install -y nginx"),
            re.escape(f"{step} {ref}: building… done in ") + DURATION,
        ]
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected), result.stderr
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)
    assert fake.built == [refs.postgres, refs.nginx, refs.runtime]
    assert "images ready" in result.stdout
