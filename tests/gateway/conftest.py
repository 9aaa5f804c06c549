"""Fixtures of the gateway tests: the emulator, the real API (real PostgreSQL and Redis), a
webhook for tools served by the test, and gateway settings pointing at all of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from runtime.emulator.testing import EmulatorHandle, running_emulator
from runtime.gateway.settings import GatewaySettings
from tests.api.fixtures import ApiHarness, api
from tests.gateway.support import Agents, Webhook, gateway_settings, running_webhook

__all__ = ["agents", "api", "emulator", "http", "settings", "webhook"]


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[EmulatorHandle]:
    async with running_emulator(tmp_path / "emulator") as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    async with running_webhook() as hook:
        yield hook


@pytest.fixture
async def agents(api: ApiHarness, webhook: Webhook, database_url: str) -> Agents:
    return Agents(api=api, tenant=await api.signup(), webhook=webhook, database_url=database_url)


@pytest.fixture
def settings(api: ApiHarness, redis_url: str, emulator: EmulatorHandle) -> GatewaySettings:
    return gateway_settings(
        api_url=api.url, internal_token=api.internal_token, redis_url=redis_url, emulator=emulator
    )
