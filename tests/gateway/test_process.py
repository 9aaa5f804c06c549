"""`python -m runtime.gateway` as its own process: settings from the environment, probes,
metrics, and the SIGTERM drain (reconnect hint, readyz failing, GOING_AWAY at the deadline)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from runtime.emulator.testing import EmulatorHandle
from tests.api.fixtures import ApiHarness
from tests.gateway.support import (
    Agents,
    GatewayAddress,
    eventually,
    speak_one_turn,
    widget_call,
)
from tests.services import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def gateway_env(
    tmp_path: Path, *, api: ApiHarness, redis_url: str, emulator: EmulatorHandle, port: int
) -> dict[str, str]:
    token_file = tmp_path / "internal_token"
    token_file.write_text(api.internal_token + "\n")
    key_file = tmp_path / "gemini_api_key"
    key_file.write_text(emulator.api_key + "\n")
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO_ROOT),
        "ORBIS_GATEWAY_PORT": str(port),
        "ORBIS_INSTANCE_ID": "gw-process",
        "ORBIS_API_URL": api.url,
        "ORBIS_INTERNAL_TOKEN_FILE": str(token_file),
        "ORBIS_REDIS_URL": redis_url,
        "ORBIS_GEMINI_API_KEY_FILE": str(key_file),
        "ORBIS_GEMINI_BASE_URL": emulator.base_url,
        "ORBIS_GEMINI_CA_FILE": str(emulator.cert.cert_file),
        "ORBIS_GEMINI_MODEL": "gemini-live-test",
        "ORBIS_DRAIN_TIMEOUT_SECONDS": "1",
    }


@pytest.fixture
def env(
    tmp_path: Path, api: ApiHarness, redis_url: str, emulator: EmulatorHandle
) -> dict[str, str]:
    """The environment of a gateway process wired to this test's API, Redis and emulator."""
    return gateway_env(tmp_path, api=api, redis_url=redis_url, emulator=emulator, port=free_port())


@asynccontextmanager
async def gateway_process(
    env: dict[str, str], http: aiohttp.ClientSession, log_file: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "runtime.gateway", env=env, cwd=REPO_ROOT, stderr=log
        )
    url = f"http://127.0.0.1:{env['ORBIS_GATEWAY_PORT']}"

    async def healthy() -> bool:
        if process.returncode is not None:
            raise AssertionError(f"the gateway exited; its log is {log_file}")
        try:
            async with http.get(f"{url}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False

    try:
        await eventually(healthy, within=20)
        yield process, url
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


@pytest.mark.integration
async def test_sigterm_drains_calls_with_a_reconnect_hint_then_going_away(
    env: dict[str, str], agents: Agents, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with gateway_process(env, http, tmp_path / "gateway.log") as (process, url):
        async with http.get(f"{url}/readyz") as response:
            assert response.status == 200
        gateway = GatewayAddress(url)
        async with widget_call(http, gateway, await agents.token()) as call:
            started = await speak_one_turn(call)
            process.send_signal(signal.SIGTERM)
            hint = await call.wait_for("reconnect")
            assert hint["reason"] == "draining"
            async with http.get(f"{url}/readyz") as response:
                assert (response.status, (await response.json())["status"]) == (503, "draining")
            assert (await call.wait_for("session.ended"))["reason"] == "drain"
            assert await call.wait_closed() == 1001
        async with asyncio.timeout(20):
            assert await process.wait() == 0
    assert (await agents.call_row(started["call_id"]))["end_reason"] == "drain"
    assert len(await agents.transcript(started["call_id"])) == 2


@pytest.mark.integration
async def test_probes_and_metrics(
    env: dict[str, str], agents: Agents, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with gateway_process(env, http, tmp_path / "gateway.log") as (_, url):
        gateway = GatewayAddress(url)
        async with widget_call(http, gateway, await agents.token()) as call:
            await speak_one_turn(call)
            async with http.get(f"{url}/metrics") as response:
                live = await response.text()
        async with http.get(f"{url}/ws/call") as response:
            assert response.status == 426  # not a WebSocket request: the token stays unused
    assert "orbis_gateway_connections 1.0" in live
    assert "orbis_gateway_connections_peak 1.0" in live
    assert 'orbis_gateway_audio_frames_total{direction="out"}' in live
    # The caller's speech ended, and the model answered: the delay between them is measured.
    assert "orbis_gateway_response_latency_seconds_count 1.0" in live


async def test_missing_setting_is_one_clear_line(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runtime.gateway",
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 2
    assert stderr.decode().strip().splitlines() == [
        "gateway: ORBIS_API_URL is not set; set it in the service's environment"
    ]


async def _probe_key(env: dict[str, str], key: str | None) -> tuple[int, str, str]:
    probe_env = {**env} if key is None else {**env, "ORBIS_PROBE_GEMINI_KEY": key}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runtime.gateway", "probe-key",
        env=probe_env, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.integration
async def test_probe_key_opens_a_session_with_the_gateway_s_own_endpoint_settings(
    env: dict[str, str], emulator: EmulatorHandle
) -> None:
    """What rotate-keys asks a gateway container before any gateway uses a new key."""
    code, stdout, _ = await _probe_key(env, emulator.api_key)
    assert (code, stdout.splitlines()[-1]) == (0, "accepted")
    code, stdout, stderr = await _probe_key(env, "not-a-key-the-endpoint-knows")
    assert code == 0
    assert stdout.splitlines()[-1].startswith("refused: the endpoint refused the key")
    assert "not-a-key-the-endpoint-knows" not in stdout + stderr
    code, _, stderr = await _probe_key(env, None)
    assert code == 2
    assert stderr.strip() == "gateway probe-key: ORBIS_PROBE_GEMINI_KEY is not set"
