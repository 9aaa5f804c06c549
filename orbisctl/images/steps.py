"""What every step of an image build shares: the cache it is kept in, the hash of its inputs
(an image carries it in a label, so an unchanged step only hashes files and inspects an
image), and a tool's output streamed as the step's progress."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from orbisctl.core import engine
from orbisctl.core.progress import Progress

INPUTS_LABEL = "org.orbisvoice.inputs"
# The release an image was built from (`orbisctl version` reads it); part of the inputs, so a
# new release relabels every image it builds.
VERSION_LABEL = "org.opencontainers.image.version"


def cache_dir() -> Path:
    """Where debootstrap tarballs and wheelhouses are kept between builds."""
    configured = os.environ.get("ORBIS_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "orbisvoice"


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def hash_inputs(parts: Iterable[str], trees: Mapping[str, Path] | None = None) -> str:
    """sha256 over text parts and the names and bytes of every file in `trees`."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    for name, root in sorted((trees or {}).items()):
        for path in _files_under(root):
            rel = path.relative_to(root) if root.is_dir() else Path(path.name)
            digest.update(f"{name}/{rel}\0{path.stat().st_mode & 0o111}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def labelled(client: docker.DockerClient, ref: str) -> str | None:
    """The inputs label of a local image, None when the image is absent."""
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error(f"inspecting {ref}", exc) from None
    labels: dict[str, str] = image.labels or {}
    return labels.get(INPUTS_LABEL)


def streamed(
    argv: list[str], progress: Progress, shown: Callable[[str], str | None]
) -> tuple[int, list[str]]:
    """Run `argv`, reporting as details the output lines `shown` picks (it returns the text
    to show, or None); returns the exit code and every non-empty output line."""
    lines: list[str] = []
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip()
            if not line:
                continue
            lines.append(line)
            text = shown(line)
            if text is not None:
                progress.detail(text)
    return process.returncode, lines
