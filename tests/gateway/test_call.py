"""A whole call through the gateway: widget WebSocket -> gateway -> google-genai -> emulator."""

from __future__ import annotations

import aiohttp

from runtime.emulator.testing import EmulatorHandle
from runtime.gateway.settings import GatewaySettings
from tests.gateway.stub_api import StubApi
from tests.gateway.support import running_gateway, speech_then_silence, widget_call

OUTPUT_BYTES_PER_MS = 48  # 24 kHz PCM16


async def test_call_relays_audio_transcripts_and_reports_the_end(
    settings: GatewaySettings, emulator: EmulatorHandle, stub_api: StubApi, http: aiohttp.ClientSession
) -> None:
    async with running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw:
        token = stub_api.issue(stub_api.agent())
        async with widget_call(http, gw, token) as call:
            started = await call.wait_for("session.started")
            assert (started["input_rate"], started["output_rate"]) == (16_000, 24_000)
            await call.send_frames(speech_then_silence())
            await call.wait_for("turn.complete")
            # The default scenario answers 1200 ms of audio.
            assert len(call.audio) == 1200 * OUTPUT_BYTES_PER_MS
            finals = [(e["role"], e["text"]) for e in call.of_type("transcript") if e["final"]]
            assert finals == [("user", "Hello there."), ("agent", "Hi! How can I help?")]
            await call.ws.send_str('{"type": "end"}')
            assert (await call.wait_for("session.ended"))["reason"] == "hangup"
            assert await call.wait_closed() == 1000
    call_id = started["call_id"]
    assert stub_api.ended[call_id]["end_reason"] == "hangup"
    assert stub_api.ended[call_id]["duration_ms"] > 0
    stored = stub_api.transcripts[call_id]
    assert [(s["seq"], s["role"], s["text"]) for s in stored.values()] == [
        (1, "user", "Hello there."),
        (2, "agent", "Hi! How can I help?"),
    ]
