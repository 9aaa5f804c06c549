"""Wire details below the SDK: paths, casing, base64 alphabets, refusals and limits.

A raw aiohttp WebSocket client sends exactly the bytes under test.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.genai import errors

from runtime.emulator.testing import CertPair, EmulatorHandle, running_emulator
from tests.emulator.conftest import MODEL, silence, tone

LIVE_PATH = "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent"
SERVER_TOP_LEVEL_KEYS = {
    "setupComplete",
    "serverContent",
    "toolCall",
    "toolCallCancellation",
    "goAway",
    "sessionResumptionUpdate",
    "usageMetadata",
}
SETUP = {"setup": {"model": f"models/{MODEL}", "inputAudioTranscription": {}}}


@asynccontextmanager
async def raw_socket(
    emulator: EmulatorHandle, path: str = LIVE_PATH, *, api_key: str | None = None
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    connector = aiohttp.TCPConnector(ssl=emulator.ssl_context())
    headers = {"x-goog-api-key": api_key or emulator.api_key}
    async with (
        asyncio.timeout(10),
        aiohttp.ClientSession(connector=connector) as http,
        http.ws_connect(emulator.base_url + path, headers=headers) as ws,
    ):
        yield ws


async def read_until_complete(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Server messages up to and including the next turnComplete."""
    messages: list[dict[str, Any]] = []
    while True:
        frame = await ws.receive()
        assert frame.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), frame
        message = json.loads(frame.data)
        messages.append(message)
        if message.get("serverContent", {}).get("turnComplete"):
            return messages


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """The code and reason of the server's close frame."""
    while True:
        frame = await ws.receive()
        if frame.type == aiohttp.WSMsgType.CLOSE:
            return int(frame.data), str(frame.extra or "")
        if frame.type == aiohttp.WSMsgType.CLOSED:
            return ws.close_code, ""


@pytest.mark.parametrize(
    "path",
    [
        LIVE_PATH,
        "//" + LIVE_PATH.lstrip("/").replace(".v1.", ".v1beta."),
        "////" + LIVE_PATH.lstrip("/").replace(".v1.", ".v1alpha."),
    ],
)
async def test_live_path_variants(emulator: EmulatorHandle, path: str) -> None:
    async with raw_socket(emulator, path) as ws:
        await ws.send_str(json.dumps(SETUP))
        assert json.loads((await ws.receive()).data) == {"setupComplete": {}}


async def test_other_paths_are_not_found(emulator: EmulatorHandle) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with raw_socket(emulator, "/ws/google.ai.generativelanguage.v1.Other"):
            pass
    assert refused.value.status == 404


@pytest.mark.parametrize("alphabet", ["standard", "urlsafe"])
async def test_audio_in_either_base64_alphabet_and_camel_or_snake_keys(
    emulator: EmulatorHandle, alphabet: str
) -> None:
    pcm = tone(400) + silence(600)
    encode = base64.b64encode if alphabet == "standard" else base64.urlsafe_b64encode
    async with raw_socket(emulator) as ws:
        await ws.send_str(json.dumps(SETUP))
        await ws.receive()
        for offset in range(0, len(pcm), 3200):
            data = encode(pcm[offset : offset + 3200]).decode()
            if alphabet == "standard":
                blob = {"data": data, "mimeType": "audio/pcm;rate=16000"}
                await ws.send_str(json.dumps({"realtimeInput": {"audio": blob}}))
            else:
                blob = {"data": data, "mime_type": "audio/pcm;rate=16000"}
                await ws.send_str(json.dumps({"realtime_input": {"media_chunks": [blob]}}))
        messages = await read_until_complete(ws)
    assert {"serverContent": {"inputTranscription": {"text": "Hello there."}}} in messages
    for message in messages:
        assert set(message) <= SERVER_TOP_LEVEL_KEYS
    stats = await emulator.get_json("/stats")
    assert stats["audio_bytes_in"] == len(pcm)


async def test_server_messages_use_camel_case_top_level_keys_only(
    tmp_path: Path, emulator_cert: CertPair
) -> None:
    scenario = {"turns": [{"tool_call": {"name": "lookup", "args": {"some_key": 1}}}]}
    async with (
        running_emulator(tmp_path, cert=emulator_cert, scenario=scenario) as emulator,
        raw_socket(emulator) as ws,
    ):
        setup = {
            "setup": {
                "model": f"models/{MODEL}",
                "session_resumption": {},
                "output_audio_transcription": {},
            }
        }
        await ws.send_str(json.dumps(setup))
        await ws.send_str(
            json.dumps(
                {"client_content": {"turns": [{"parts": [{"text": "x"}]}], "turn_complete": True}}
            )
        )
        seen = [json.loads((await ws.receive()).data) for _ in range(3)]
        call_id = seen[2]["toolCall"]["functionCalls"][0]["id"]
        response = {"id": call_id, "name": "lookup", "response": {"snake_case": {"camelCase": 1}}}
        await ws.send_str(json.dumps({"toolResponse": {"functionResponses": [response]}}))
        seen += await read_until_complete(ws)
    assert [next(iter(message)) for message in seen[:3]] == [
        "setupComplete",
        "sessionResumptionUpdate",
        "toolCall",
    ]
    assert seen[2]["toolCall"]["functionCalls"][0]["args"] == {"some_key": 1}
    for message in seen:
        assert set(message) <= SERVER_TOP_LEVEL_KEYS
    transcript = [
        m["serverContent"].get("outputTranscription") for m in seen if "serverContent" in m
    ]
    assert {"text": "Done."} in transcript


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        ("not json", None, "Invalid JSON payload"),
        # Nested past the parser's recursion limit: refused as bad JSON, not a crash (1011).
        ("[" * 60_000, None, "Invalid JSON payload"),
        (json.dumps(SETUP), "[" * 30_000 + "]" * 30_000, "Invalid JSON payload"),
        (json.dumps({"realtimeInput": {}}), None, "first message must be a setup"),
        (json.dumps(SETUP), json.dumps({"bogusField": {}}), 'Unknown name "bogusField"'),
        (json.dumps(SETUP), json.dumps(SETUP), "only one setup"),
        (
            json.dumps(SETUP),
            json.dumps({"realtimeInput": {"audio": {"data": "%%%", "mimeType": "audio/pcm"}}}),
            "Base64 decoding failed",
        ),
        (json.dumps({"setup": {"model": "gemini"}}), None, "models/"),
        (
            json.dumps(
                {
                    "setup": {
                        "model": "models/x",
                        "systemInstruction": {"parts": [{"text": "[[emulator scenario=nope]]"}]},
                    }
                }
            ),
            None,
            "unknown scenario",
        ),
        (
            json.dumps(
                {
                    "setup": {
                        "model": "models/x",
                        "systemInstruction": {"parts": [{"text": "[[emulator explode]]"}]},
                    }
                }
            ),
            None,
            "explode",
        ),
    ],
)
async def test_invalid_messages_close_with_1007(
    emulator: EmulatorHandle, first: str, second: str | None, reason: str
) -> None:
    async with raw_socket(emulator) as ws:
        await ws.send_str(first)
        if second is not None:
            assert "setupComplete" in json.loads((await ws.receive()).data)
            await ws.send_str(second)
        code, text = await closed_with(ws)
    assert code == 1007
    assert reason in text


async def test_oversize_message_is_refused(tmp_path: Path, emulator_cert: CertPair) -> None:
    async with (
        running_emulator(tmp_path, cert=emulator_cert, max_message_bytes=4096) as emulator,
        raw_socket(emulator) as ws,
    ):
        await ws.send_str(json.dumps(SETUP))
        await ws.receive()
        big = base64.b64encode(bytes(8000)).decode()
        await ws.send_str(json.dumps({"realtimeInput": {"audio": {"data": big}}}))
        code, _ = await closed_with(ws)
    assert code == 1009


async def test_idle_session_is_closed(tmp_path: Path, emulator_cert: CertPair) -> None:
    async with (
        running_emulator(tmp_path, cert=emulator_cert, idle_timeout_seconds=0.3) as emulator,
        raw_socket(emulator) as ws,
    ):
        await ws.send_str(json.dumps(SETUP))
        await ws.receive()
        code, reason = await closed_with(ws)
    assert code == 1011
    assert "Deadline expired" in reason


async def test_session_count_is_bounded(tmp_path: Path, emulator_cert: CertPair) -> None:
    async with running_emulator(tmp_path, cert=emulator_cert, max_sessions=1) as emulator:
        client = emulator.client()
        async with asyncio.timeout(10), client.aio.live.connect(model=MODEL):
            with pytest.raises(errors.APIError) as refused:
                async with client.aio.live.connect(model=MODEL):
                    pass
        assert refused.value.code == 1011
        assert "exhausted" in str(refused.value)
        # The slot is free again once the first session ended.
        async with asyncio.timeout(10), client.aio.live.connect(model=MODEL):
            stats = await emulator.get_json("/stats")
    assert stats["sessions_open"] == 1
    assert stats["sessions_refused"] == 1


async def test_admin_surface(emulator: EmulatorHandle) -> None:
    assert await emulator.get_json("/healthz") == {"status": "ok"}
    stats = await emulator.get_json("/stats")
    assert stats["sessions_open"] == 0
    assert await emulator.get_json("/sessions") == []


async def test_a_flood_of_turns_is_cut_off(emulator: EmulatorHandle) -> None:
    setup = {
        "setup": {
            "model": f"models/{MODEL}",
            "systemInstruction": {"parts": [{"text": "[[emulator latency_ms=5000]]"}]},
        }
    }
    turn = {"clientContent": {"turns": [{"parts": [{"text": "again"}]}], "turnComplete": True}}
    async with raw_socket(emulator) as ws:
        await ws.send_str(json.dumps(setup))
        await ws.receive()
        for _ in range(40):
            await ws.send_str(json.dumps(turn))
        code, reason = await closed_with(ws)
    assert code == 1011
    assert "exhausted" in reason
    stats = await emulator.get_json("/stats")
    assert stats["turns"] <= 17
