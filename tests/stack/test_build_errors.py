"""A failing image build names the build's own error line, on a real engine."""

from __future__ import annotations

import io

import pytest

from orbisctl import images
from orbisctl.core import engine
from orbisctl.core.errors import EngineError

pytestmark = pytest.mark.docker

# The classic builder can end a failed step before relaying its last output line (seen on a
# busy host: 3 builds in a row). The step holds on for a second after apt fails, with apt's
# exit code, and a few attempts are still allowed: the claim is about builds whose output
# carried apt's error.
ATTEMPTS = 3


def test_a_failing_build_names_apts_own_error() -> None:
    client = engine.connect()
    base = images.ensure_debian_base(client)
    dockerfile = (
        f"FROM {base}\n"
        "RUN apt-get install -y --no-install-recommends no-such-package-xyz"
        " || { status=$?; sleep 1; exit $status; }\n"
    )
    for _ in range(ATTEMPTS):
        chunks = list(
            client.api.build(
                fileobj=io.BytesIO(dockerfile.encode()), rm=True, forcerm=True, decode=True
            )
        )
        if any("E: Unable to locate package" in str(c.get("stream", "")) for c in chunks):
            break
    else:
        pytest.fail(f"apt's error never reached the build output in {ATTEMPTS} builds")
    with pytest.raises(EngineError) as failed:
        list(engine.stream_json(iter(chunks)))
    assert (
        failed.value.message
        == "image build failed: E: Unable to locate package no-such-package-xyz"
    )
    assert failed.value.hint is not None
