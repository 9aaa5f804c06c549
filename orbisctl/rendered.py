"""Which running service reads which rendered file, and whether it has taken the current one.

`render` rewrites files that running containers read through bind mounts. nginx reads
nginx/nginx.conf (a file mounted on its own) and nginx/snippets/ (a directory). `up` must bring
every change to the service that reads it: nginx reloads (open calls stay on the old
workers); a container that cannot see the new bytes is recreated. What each service last
loaded is kept in STATE_FILE (hashes), written atomically after each `up`.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import docker.errors
import requests.exceptions

from orbisctl.core.fsutil import atomic_write

STATE_FILE = Path(".orbisctl-rendered.json")
NGINX_SERVICE = "nginx"
# Rendered files nginx reads -> where its container sees them (templates/compose nginx volumes).
NGINX_MOUNTS: dict[Path, PurePosixPath] = {
    Path("nginx/nginx.conf"): PurePosixPath("/etc/nginx/nginx.conf"),
    Path("nginx/snippets/tls.conf"): PurePosixPath("/etc/nginx/snippets/tls.conf"),
    Path("nginx/snippets/security_headers.conf"): PurePosixPath(
        "/etc/nginx/snippets/security_headers.conf"
    ),
    Path("nginx/snippets/proxy.conf"): PurePosixPath("/etc/nginx/snippets/proxy.conf"),
    Path("nginx/snippets/websocket.conf"): PurePosixPath("/etc/nginx/snippets/websocket.conf"),
    Path("nginx/snippets/real_ip.conf"): PurePosixPath("/etc/nginx/snippets/real_ip.conf"),
}
# Mounted on their own (not through a mounted directory): the mount holds the file's inode, so
# `render` rewrites them in place; a rename would never reach the running container.
SINGLE_FILE_MOUNTS: frozenset[Path] = frozenset({Path("nginx/nginx.conf")})


def digests(root: Path, files: dict[Path, PurePosixPath] = NGINX_MOUNTS) -> dict[str, str]:
    """sha256 of each rendered file on disk (relative path -> hex); a missing file is ''."""
    found = {}
    for relative in sorted(files):
        path = root / relative
        found[str(relative)] = (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        )
    return found


def load_state(root: Path) -> dict[str, dict[str, str]]:
    """{service: {file: sha256}} as each service last loaded them; {} when never recorded."""
    try:
        data = json.loads((root / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(root: Path, state: dict[str, dict[str, str]]) -> None:
    atomic_write(root / STATE_FILE, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())


def changed_since_loaded(root: Path, service: str = NGINX_SERVICE) -> list[str] | None:
    """Rendered files of `service` that differ from what it last loaded; None when unknown
    (no state recorded yet: an install from before this was kept)."""
    loaded = load_state(root).get(service)
    if loaded is None:
        return None
    return [name for name, digest in digests(root).items() if loaded.get(name) != digest]


def container_view(container: Any, path: PurePosixPath) -> bytes | None:
    """The bytes a container sees at `path` (through its mounts), read with the engine's archive
    API (no shell needed); None when it has no such file or the engine cannot say."""
    try:
        stream, _ = container.get_archive(str(path))
        archive = b"".join(stream)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.next()
        handle = tar.extractfile(member) if member is not None else None
        return handle.read() if handle is not None else None


@dataclass(frozen=True)
class Blind:
    """A container that does not see the rendered file on disk: reloading cannot help."""

    container: str
    file: str


def blind_containers(
    root: Path, containers: list[Any], files: dict[Path, PurePosixPath] = NGINX_MOUNTS
) -> list[Blind]:
    """The running containers (of a service reading `files`) that see another copy of one of
    them than the one on disk: an install rendered before SINGLE_FILE_MOUNTS were rewritten in
    place (the container kept the replaced file's inode), or a file mounted by hand."""
    blind = []
    for container in containers:
        for relative, target in sorted(files.items()):
            on_disk = (root / relative).read_bytes() if (root / relative).is_file() else None
            if on_disk is not None and container_view(container, target) != on_disk:
                blind.append(Blind(container.name, str(relative)))
                break
    return blind
