"""A failing image build names the build's own error line, on a real engine."""

from __future__ import annotations

import io

import pytest

from orbisctl.core import engine
from orbisctl.core.errors import EngineError
from orbisctl.images.base import ensure_debian_base

pytestmark = pytest.mark.docker


def test_a_failing_build_names_apts_own_error() -> None:
    client = engine.connect()
    base = ensure_debian_base(client)
    dockerfile = (
        f"FROM {base}\nRUN apt-get install -y --no-install-recommends no-such-package-xyz\n"
    )
    chunks = list(
        client.api.build(
            fileobj=io.BytesIO(dockerfile.encode()), rm=True, forcerm=True, decode=True
        )
    )
    with pytest.raises(EngineError) as failed:
        list(engine.stream_json(iter(chunks)))
    assert (
        failed.value.message
        == "image build failed: E: Unable to locate package no-such-package-xyz"
    )
    assert failed.value.hint is not None
