"""Fixtures of the gateway tests: the emulator in-process, an API, a gateway on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from runtime.emulator.testing import EmulatorHandle, running_emulator
from runtime.gateway.settings import GatewaySettings
from tests.gateway.stub_api import INTERNAL_TOKEN, StubApi, running_stub_api


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[EmulatorHandle]:
    async with running_emulator(tmp_path / "emulator") as handle:
        yield handle


@pytest.fixture
async def stub_api() -> AsyncIterator[StubApi]:
    async with running_stub_api() as stub:
        yield stub


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def gateway_settings(
    *,
    api_url: str,
    internal_token: str,
    redis_url: str,
    emulator: EmulatorHandle,
    **overrides: object,
) -> GatewaySettings:
    values: dict[str, object] = {
        "instance_id": "gw-test",
        "api_url": api_url,
        "internal_token": internal_token,
        "redis_url": redis_url,
        "gemini_api_key": emulator.api_key,
        "gemini_model": "gemini-live-test",
        "gemini_base_url": emulator.base_url,
        "heartbeat_seconds": 0.5,
        "transcript_flush_seconds": 0.3,
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(redis_url: str, emulator: EmulatorHandle, stub_api: StubApi) -> GatewaySettings:
    return gateway_settings(
        api_url=stub_api.url, internal_token=INTERNAL_TOKEN, redis_url=redis_url, emulator=emulator
    )
