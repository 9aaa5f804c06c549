"""A container is ready when its own health check passes, not when Docker next runs it:
Docker 20.10 checks first one interval (10 s in our stack) after the start, and the restore's
maintenance window waited those seconds twice (issue 14: 32 s of 'start api and gateway')."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from orbisctl import stack
from orbisctl.core import engine
from orbisctl.core.errors import EngineError

pytestmark = pytest.mark.docker

LONG_INTERVAL_NS = 300 * 10**9  # Docker's first check of these comes after the test


@pytest.fixture
def started() -> Iterator[Any]:
    """Start a container whose health check is `command`, checked by Docker in 300 s."""
    try:
        client = engine.connect()
    except EngineError as exc:
        pytest.skip(f"no Docker engine: {exc}")
    image = next((tag for i in client.images.list("orbisvoice/debian") for tag in i.tags), None)
    if image is None:
        pytest.skip("no local orbisvoice/debian image")
    made: list[Any] = []

    def start(command: list[str]) -> Any:
        container = client.containers.run(
            image,
            ["sleep", "120"],
            name=f"orbis-health-now-{secrets.token_hex(3)}",
            healthcheck={"test": command, "interval": LONG_INTERVAL_NS},
            detach=True,
        )
        made.append(container)
        container.reload()
        return container

    yield start
    for container in made:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def test_a_starting_container_whose_check_passes_is_ready_now(started: Any) -> None:
    container = started(["CMD", "true"])
    assert stack.container_status(container).health == "starting"  # Docker has not checked
    row = stack.checked_status(container)
    assert row.health == "healthy"
    assert row.ready


def test_a_starting_container_whose_check_fails_stays_starting(started: Any) -> None:
    container = started(["CMD-SHELL", "exit 1"])
    row = stack.checked_status(container)
    assert row.health == "starting"
    assert not row.ready
