"""One compose project per install (issue 15 item 2: every `init` named its project
`orbisvoice`, so two installs on one host were one: each one's `up`/`down`/`status` acted on
the other's containers, networks and volumes)."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from orbisctl.core import engine
from orbisctl.core.errors import EngineError
from orbisctl.installer import derived_project_name
from tests.stack.conftest import invoke

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*-[0-9a-f]{8}$")


def project_of(root: Path) -> str:
    name: str = yaml.safe_load((root / "orbis.yaml").read_text())["project_name"]
    assert yaml.safe_load((root / "compose.yaml").read_text())["name"] == name
    return name


def init(root: Path, *args: str) -> None:
    result = invoke("init", "--dir", str(root), "--non-interactive", *args)
    assert result.exit_code == 0, result.output


def test_every_install_gets_a_project_name_of_its_own(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "orbis", tmp_path / "b" / "orbis"
    init(first)
    init(second)
    names = project_of(first), project_of(second)
    assert names[0] != names[1]
    assert all(NAME.match(name) and name.startswith("orbis-") for name in names)
    assert names[0] == derived_project_name(first.resolve())
    init(first, "--https-port", "8443")  # a re-run keeps the name
    assert project_of(first) == names[0]


def test_an_install_that_names_its_project_keeps_it(tmp_path: Path) -> None:
    root = tmp_path / "old"
    root.mkdir()
    # An install made before per-install names: its containers and volumes are orbisvoice's.
    (root / "orbis.yaml").write_text(yaml.safe_dump({"project_name": "orbisvoice"}))
    init(root)
    assert project_of(root) == "orbisvoice"


def test_derived_names_are_valid_compose_project_names() -> None:
    assert re.fullmatch(r"my-orbis-[0-9a-f]{8}", derived_project_name(Path("/srv/My Orbis!")))
    assert derived_project_name(Path("/")).startswith("orbisvoice-")
    long = derived_project_name(Path("/x/" + "y" * 100))
    assert len(long) <= 49 and NAME.match(long)  # room for the drill's "-drill-xxxxxx"
    assert derived_project_name(Path("/a/orbis")) != derived_project_name(Path("/b/orbis"))


@pytest.fixture
def foreign(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A container of project P made by "another install" in another directory (created, never
    started: compose lists and removes it all the same)."""
    try:
        client = engine.connect()
    except EngineError as exc:
        pytest.skip(f"no Docker engine: {exc}")
    project = f"orbis-clash-{secrets.token_hex(3)}"
    elsewhere = tmp_path / "elsewhere"
    image = next(
        (tag for i in client.images.list("orbisvoice/debian") for tag in i.tags),
        None,
    )
    if image is None:
        pytest.skip("no local orbisvoice/debian image")
    container = client.containers.create(
        image,
        ["true"],
        name=f"{project}-nginx-1",
        labels={
            engine.PROJECT_LABEL: project,
            engine.SERVICE_LABEL: "nginx",
            engine.WORKING_DIR_LABEL: str(elsewhere),
            "com.docker.compose.oneoff": "False",
        },
    )
    try:
        yield project, elsewhere
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@pytest.mark.docker
def test_no_verb_acts_on_another_install_of_the_same_name(
    install: Path, foreign: tuple[str, Path], tmp_path: Path
) -> None:
    project, elsewhere = foreign
    config = yaml.safe_load((install / "orbis.yaml").read_text())
    config["project_name"] = project
    (install / "orbis.yaml").write_text(yaml.safe_dump(config))
    assert invoke("render", "--dir", str(install)).exit_code == 0

    status = invoke("status", "--dir", str(install), "--json")
    assert status.exit_code == 0, status.output
    assert yaml.safe_load(status.output)["services"] == []

    down = invoke("down", "--dir", str(install))
    assert down.exit_code != 0
    assert f"also used by the install in {elsewhere}" in down.output
    up = invoke("up", "--dir", str(install))
    assert up.exit_code != 0
    assert f"also used by the install in {elsewhere}" in up.output
    assert engine.connect().containers.get(f"{project}-nginx-1")  # untouched

    # A new install is refused a name another install's containers use.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "orbis.yaml").write_text(yaml.safe_dump({"project_name": project}))
    refused = invoke("init", "--dir", str(fresh), "--non-interactive")
    assert refused.exit_code != 0
    assert f"{project} is already used by the install in {elsewhere}" in refused.output
