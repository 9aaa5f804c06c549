"""`python -m runtime.emulator` as its own process: start-up, a crash mid-call, shutdown."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from google.genai import errors

from runtime.emulator.testing import REPO_ROOT, CertPair, emulator_process
from tests.emulator.conftest import (
    MODEL,
    receive_turn,
    receive_until,
    receive_until_closed,
    text,
)


async def test_killed_mid_call_surfaces_as_abnormal_closure(
    tmp_path: Path, emulator_cert: CertPair
) -> None:
    scenario = {"pace": 1.0, "turns": [{"output_transcription": "long", "audio_ms": 10_000}]}
    async with emulator_process(tmp_path, cert=emulator_cert, scenario=scenario) as emulator:
        async with (
            asyncio.timeout(15),
            emulator.client().aio.live.connect(model=MODEL) as session,
        ):
            await session.send_client_content(turns=text("talk"))
            await receive_until(session, lambda s: bool(s.audio))
            emulator.kill()
            _, closed = await receive_until_closed(session)
        assert closed.code == 1006
        assert emulator.process is not None
        assert await emulator.process.wait() == -9


async def test_sigterm_closes_live_sessions_with_going_away(
    tmp_path: Path, emulator_cert: CertPair
) -> None:
    async with (
        emulator_process(
            tmp_path, cert=emulator_cert, settings={"connection_cap_seconds": 60}
        ) as emulator,
        asyncio.timeout(15),
        emulator.client().aio.live.connect(model=MODEL) as session,
    ):
        assert (await emulator.get_json("/stats"))["sessions_open"] == 1
        stopping = asyncio.create_task(emulator.stop())
        _, closed = await receive_until_closed(session)
        assert await stopping == 0
    assert closed.code == 1001
    assert isinstance(closed, errors.APIError)


async def test_several_processes_share_one_port_with_reuse_port(
    tmp_path: Path, emulator_cert: CertPair
) -> None:
    """The load rig's `--emulators N`: a second process on the first one's port serves alone
    once the first has stopped."""
    shared = {"reuse_port": "true"}
    async with emulator_process(tmp_path / "a", cert=emulator_cert, settings=shared) as first:
        second_settings = {**shared, "port": first.port}
        async with emulator_process(
            tmp_path / "b", cert=emulator_cert, settings=second_settings
        ) as second:
            assert second.port == first.port
            assert await first.stop() == 0
            async with (
                asyncio.timeout(15),
                second.client().aio.live.connect(model=MODEL) as session,
            ):
                await session.send_client_content(turns=text("hello"))
                summary = await receive_turn(session)
            assert summary.audio and summary.turn_complete
            assert (await second.get_json("/stats"))["sessions_total"] == 1


def _run_emulator(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m runtime.emulator` with `env`, for settings it refuses before listening."""
    return subprocess.run(
        [sys.executable, "-m", "runtime.emulator"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_missing_settings_are_one_clear_line() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORBIS_")}
    result = _run_emulator(env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "emulator: invalid or missing settings: ORBIS_EMULATOR_CERT_FILE, ORBIS_EMULATOR_KEY_FILE"
    )


def test_bad_scenario_file_is_one_clear_line(tmp_path: Path, emulator_cert: CertPair) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("turns: []\n")
    env = {
        **os.environ,
        "ORBIS_EMULATOR_PORT": "0",
        "ORBIS_EMULATOR_CERT_FILE": str(emulator_cert.cert_file),
        "ORBIS_EMULATOR_KEY_FILE": str(emulator_cert.key_file),
        "ORBIS_EMULATOR_SCENARIO_FILE": str(scenario),
    }
    result = _run_emulator(env)
    assert result.returncode == 1
    assert result.stderr.startswith(f"emulator: {scenario}: turns:")
    assert "Traceback" not in result.stderr
