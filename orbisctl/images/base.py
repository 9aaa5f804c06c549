"""The local source's Debian base image: a `debootstrap` tree (a tarball in the cache) made an
image with `docker import`; nothing is pulled from a registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from orbisctl.core import engine
from orbisctl.core.errors import EngineError, UserError
from orbisctl.core.progress import NO_PROGRESS, Progress
from orbisctl.images.steps import INPUTS_LABEL, cache_dir, hash_inputs, labelled, streamed

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("ORBIS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY_MIRROR = os.environ.get(
    "ORBIS_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
# Files written into the debootstrap tree before `docker import`; part of the base's cache key.
_BASE_FILES: dict[str, tuple[str, int]] = {
    "etc/apt/sources.list": (
        (
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n"
            f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main\n"
            f"deb {DEBIAN_SECURITY_MIRROR} {DEBIAN_SUITE}-security main\n"
        ),
        0o644,
    ),
    # Small images: no recommends, no docs or man pages, no translations.
    "etc/apt/apt.conf.d/90orbis": (
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Languages "none";\n',
        0o644,
    ),
    "etc/dpkg/dpkg.cfg.d/90orbis-nodoc": (
        (
            "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n"
            "path-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\n"
            "path-exclude=/usr/share/locale/*\n"
        ),
        0o644,
    ),
    # Package installs inside image builds must not try to start services.
    "usr/sbin/policy-rc.d": ("#!/bin/sh\nexit 101\n", 0o755),
}
_BASE_CHANGES = ["ENV LANG=C.UTF-8", 'CMD ["bash"]']


class _PhaseFilter:
    """debootstrap prints a line per package per phase (`I: Retrieving adduser`, …
    `I: Validating adduser`, …): the first line of each phase is shown."""

    def __init__(self) -> None:
        self._phase = ""

    def __call__(self, line: str) -> str | None:
        if not line.startswith(("I: ", "W: ", "E: ")):
            return None
        phase = line.split(" ", 2)[1]
        if phase == self._phase and line.startswith("I: "):
            return None
        self._phase = phase
        return line


def _debootstrap(tarball: Path, progress: Progress) -> None:
    progress.step(f"debootstrap {DEBIAN_SUITE} from {DEBIAN_MIRROR}")
    if shutil.which("debootstrap") is None:
        raise UserError(
            "debootstrap is not installed (needed for images.source: local)",
            hint="apt-get install debootstrap",
        )
    if os.geteuid() != 0:
        raise UserError("debootstrap needs root", hint="run `orbisctl images build` as root")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="debootstrap-") as work:
        root = Path(work) / "root"
        returncode, lines = streamed(
            ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(root), DEBIAN_MIRROR],
            progress,
            _PhaseFilter(),
        )
        if returncode != 0:
            lines = lines or ["no output"]
            raise EngineError(
                f"debootstrap failed: {lines[-1]}",
                hint=f"check that {DEBIAN_MIRROR} is reachable (ORBIS_DEBIAN_MIRROR picks another)",
            )
        for rel, (text, mode) in _BASE_FILES.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            target.chmod(mode)
        for junk in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
            for path in (root / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = Path(work) / "base.tar"
        progress.detail("tar of the base tree")
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
            check=True,
            capture_output=True,
        )
        partial.replace(tarball)


def ensure_debian_base(client: docker.DockerClient, *, progress: Progress = NO_PROGRESS) -> str:
    """The local Debian base image (from a cached debootstrap tarball); returns its ref."""
    key = hash_inputs(
        [DEBIAN_SUITE, DEBIAN_MIRROR, "minbase", *_BASE_CHANGES]
        + [f"{rel}\0{text}\0{mode}" for rel, (text, mode) in sorted(_BASE_FILES.items())]
    )
    ref = f"orbisvoice/debian:{DEBIAN_SUITE}-{key[:12]}"
    if labelled(client, ref) == key:
        progress.note(f"{ref}: cached")
        return ref
    tarball = cache_dir() / "debian" / f"{DEBIAN_SUITE}-{key[:16]}.tar"
    if not tarball.is_file():
        _debootstrap(tarball, progress)
    progress.step(f"{ref}: docker import")
    repository, tag = ref.split(":")
    try:
        client.api.import_image_from_file(
            str(tarball),
            repository=repository,
            tag=tag,
            changes=[*_BASE_CHANGES, f"LABEL {INPUTS_LABEL}={key}"],
        )
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error(f"docker import of {tarball}", exc) from None
    return ref
