"""nginx in front of several gateways during a roll: a draining gateway answers 503 before
using the call's token, and nginx gives the handshake to another gateway instead of passing
the 503 on (issue 15, item 12: 3 of 6 resumes got 503 from the gateway being drained)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.install.helpers import run_probe

pytestmark = pytest.mark.integration

HANDSHAKES = 12


def test_handshakes_skip_a_draining_gateway(default_install: Path, tmp_path: Path) -> None:
    found = run_probe(
        "tests.install.nginx_gateways_probe", str(default_install), str(tmp_path), str(HANDSHAKES)
    )
    assert found["statuses"] == [101] * HANDSHAKES, found
    assert found["seen"]["live"] == HANDSHAKES
    # The draining gateway was asked (nginx cannot know before), and each answer moved on.
    assert found["seen"].get("draining", 0) >= 1, found
