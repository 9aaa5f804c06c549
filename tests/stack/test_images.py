"""Image build inputs: cache keys and the wheelhouse completion for the image's Python."""

from __future__ import annotations

import zipfile
from pathlib import Path

from orbisctl.images import build, steps, wheelhouse


def _wheel(directory: Path, name: str, version: str, requires: list[str]) -> None:
    dist = f"{name.replace('-', '_')}-{version}"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {requirement}" for requirement in requires]
    with zipfile.ZipFile(directory / f"{dist}-py3-none-any.whl", "w") as archive:
        archive.writestr(f"{dist}.dist-info/METADATA", "\n".join(metadata) + "\n")


def test_conditional_requirements_follow_the_target_python(tmp_path: Path) -> None:
    # redis-py needs async-timeout only before Python 3.11.3; Debian bookworm has 3.11.2.
    _wheel(tmp_path, "redis", "8.1.0", ['async-timeout>=4.0.3; python_full_version < "3.11.3"'])
    _wheel(tmp_path, "aiohttp", "3.14.0", ["multidict<7,>=4.5", 'uvloop; extra == "speedups"'])
    _wheel(tmp_path, "multidict", "6.0.5", [])
    debian = wheelhouse._target_environment("3.11.2")
    slim = wheelhouse._target_environment("3.11.14")
    assert wheelhouse._missing_requirements(tmp_path, debian) == ["async-timeout>=4.0.3"]
    assert wheelhouse._missing_requirements(tmp_path, slim) == []
    _wheel(tmp_path, "async-timeout", "5.0.1", [])
    assert wheelhouse._missing_requirements(tmp_path, debian) == []


def test_a_wrong_version_counts_as_missing(tmp_path: Path) -> None:
    _wheel(tmp_path, "aiohttp", "3.14.0", ["multidict<7,>=4.5"])
    _wheel(tmp_path, "multidict", "7.2.1", [])
    assert wheelhouse._missing_requirements(tmp_path, wheelhouse._target_environment("3.11.2")) == [
        "multidict<7,>=4.5"
    ]


def test_cache_key_follows_content_and_mode_not_time(tmp_path: Path) -> None:
    tree = tmp_path / "context"
    tree.mkdir()
    script = tree / "entrypoint.sh"
    script.write_text('#!/bin/sh\nexec "$@"\n')
    first = steps.hash_inputs(["ref"], {"ctx": tree})
    script.touch()
    assert steps.hash_inputs(["ref"], {"ctx": tree}) == first
    script.chmod(0o755)
    executable = steps.hash_inputs(["ref"], {"ctx": tree})
    assert executable != first
    script.write_text('#!/bin/sh\nexec env "$@"\n')
    assert steps.hash_inputs(["ref"], {"ctx": tree}) != executable
    assert steps.hash_inputs(["other ref"], {"ctx": tree}) != steps.hash_inputs(
        ["ref"], {"ctx": tree}
    )


def test_every_service_image_runs_as_a_non_root_user() -> None:
    root = build.templates_dir() / "images"
    assert (root / "local" / "python.Dockerfile").is_file()  # a base, never run as a service
    for name in ("runtime", "nginx", "local/postgres", "local/redis", "local/nginx"):
        text = (root / f"{name}.Dockerfile").read_text()
        user = [line for line in text.splitlines() if line.startswith("USER ")]
        assert user, f"{name} must not run as root"
        assert not user[-1].startswith(("USER 0", "USER root")), name
    assert (root / "local" / "postgres-entrypoint.sh").stat().st_mode & 0o111
