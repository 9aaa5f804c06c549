"""`orbisctl version`: what the rows say about images and schemas, and the command without a
running stack (no install; no engine). The running stack's versions are checked end to end in
tests/e2e/test_stack.py."""

from __future__ import annotations

import json
from pathlib import Path

from backups.schema import code_schema_version
from orbisctl import __version__
from orbisctl.images.steps import VERSION_LABEL
from orbisctl.versions import (
    DatabaseVersion,
    ImageRecord,
    ImageVersion,
    Versions,
    mismatches,
    running_images,
)
from tests.stack.conftest import invoke

RUNTIME = f"orbisvoice/runtime:{__version__}"
CURRENT = ImageRecord("sha256:" + "a" * 64, (), {VERSION_LABEL: __version__})
OLDER = ImageRecord("sha256:" + "b" * 64, (), {VERSION_LABEL: "0.0.9"})
REDIS = ImageRecord("sha256:" + "c" * 64, ("redis@sha256:" + "d" * 64,), {})


def _image(
    service: str,
    ref: str,
    version: str | None,
    image_id: str | None = "sha256:e",
    containers: int = 1,
) -> ImageVersion:
    return ImageVersion(service, ref, image_id, None, version, containers)


def test_replicas_on_one_image_are_one_row_and_a_roll_cut_short_shows_two() -> None:
    rows = running_images(
        [
            ("api", RUNTIME, CURRENT),
            ("api", RUNTIME, CURRENT),
            ("gateway", RUNTIME, CURRENT),
            ("gateway", RUNTIME, OLDER),
            ("redis", "redis:7.4-alpine", REDIS),
        ]
    )
    assert [(r.service, r.version, r.containers) for r in rows] == [
        ("api", __version__, 2),
        ("gateway", __version__, 1),
        ("gateway", "0.0.9", 1),
        ("redis", None, 1),
    ]
    assert rows[-1].digest == "sha256:" + "d" * 64  # the digest alone, without the repository
    assert rows[-1].ours is False and rows[0].ours is True


def test_versions_that_match_say_nothing() -> None:
    versions = Versions(
        __version__,
        4,
        [_image("api", RUNTIME, __version__), _image("redis", "redis:7.4-alpine", None)],
        DatabaseVersion(4, "15.10", 15),
    )
    assert mismatches(versions) == []


def test_an_image_of_another_release_and_a_split_service_are_named() -> None:
    versions = Versions(
        __version__,
        4,
        [_image("gateway", RUNTIME, __version__), _image("gateway", RUNTIME, "0.0.9")],
    )
    found = mismatches(versions)
    assert len(found) == 2
    assert found[0].startswith("gateway runs 2 different images")
    assert f"gateway runs 0.0.9, this orbisctl is {__version__}" in found[1]
    assert "`orbisctl upgrade`" in found[1]


def test_an_absent_image_and_an_unlabelled_own_image_are_named() -> None:
    versions = Versions(
        __version__,
        4,
        [_image("runtime", RUNTIME, None, image_id=None), _image("nginx", "orbisvoice/n:1", None)],
    )
    assert mismatches(versions) == [
        f"{RUNTIME} is not on this engine: `orbisctl images build` makes it",
        (
            f"nginx runs an unversioned image, this orbisctl is {__version__}: "
            "`orbisctl upgrade` moves the install to this checkout's release"
        ),
    ]
    # With the stack down, the rows are the configured images.
    stopped = Versions(__version__, 4, [_image("runtime", RUNTIME, "0.0.9", containers=0)])
    assert mismatches(stopped)[0].startswith(f"{RUNTIME} is 0.0.9, this orbisctl is")


def test_a_database_ahead_of_the_code_and_one_behind_it_are_named() -> None:
    ahead = Versions(__version__, 4, [], DatabaseVersion(5, "15.10", 15))
    assert mismatches(ahead) == [
        (
            "the database's schema (5) is newer than this code knows (4): this orbisctl is "
            "older than the install's release"
        )
    ]
    behind = Versions(__version__, 4, [], DatabaseVersion(None, "15.10", 15))
    assert mismatches(behind) == [
        "the database's schema is empty, this code's is 4: `orbisctl up` applies the new migrations"
    ]


def test_without_an_install_it_shows_this_orbisctl(tmp_path: Path) -> None:
    result = invoke("version", "--json", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["cli"] == __version__
    assert shown["code_schema"] == code_schema_version() > 0
    assert shown["images"] == [] and shown["database"] is None
    assert shown["notes"][0].startswith("no install here")


def test_with_the_engine_unreachable_it_says_so_and_still_shows_this_orbisctl(
    install: Path, dead_engine: dict[str, str]
) -> None:
    result = invoke("version", "--dir", str(install), env=dead_engine)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"orbisctl {__version__} (schema {code_schema_version()})")
    assert "cannot reach the Docker engine" in result.stderr
