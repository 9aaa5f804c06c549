"""The lean audio paths (runtime/gateway/live_wire.py) against the SDK's own behaviour.

These pin the private google-genai internals the gateway relies on: if an SDK release changes
what `send_realtime_input` writes or how `receive()` parses, a test here fails.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from aiohttp import WSMsgType
from google.genai import errors as genai_errors
from google.genai import live as genai_live
from google.genai import types

from runtime.emulator import wire as emulator_wire
from runtime.emulator.audio import synthetic_speech
from runtime.emulator.testing import EmulatorHandle
from runtime.gateway.live_wire import LiveWire, ModelAudio, ServerMessage, lean_model_audio
from runtime.gateway.metrics import GatewayMetrics
from runtime.gateway.protocol import INPUT_MIME_TYPE
from runtime.gateway.upstream import LiveUpstream
from tests.gateway.support import eventually, speech_then_silence
from tests.gateway.wire_server import MODEL, ScriptedConnection, WireServer, running_wire_server

# Bytes whose base64 uses the characters the two alphabets disagree on (+/ against -_).
PCM_WITH_ODD_ALPHABET = bytes([0xFB, 0xFF, 0xBF, 0xFE, 0x3E, 0x3F]) * 200
SPEECH = synthetic_speech(100, "tone", 300.0, rate=16_000)


@pytest.fixture
async def wire_server(tmp_path: Path) -> AsyncIterator[WireServer]:
    async with running_wire_server(tmp_path / "wire") as server:
        yield server


@contextlib.asynccontextmanager
async def session_on(
    server: WireServer,
) -> AsyncIterator[tuple[genai_live.AsyncSession, ScriptedConnection]]:
    async with server.client().aio.live.connect(model=MODEL) as session:
        yield session, await server.next_connection()


async def sdk_receive(session: genai_live.AsyncSession) -> types.LiveServerMessage:
    """The next message as the SDK's public `receive()` gives it."""
    messages = cast(AsyncGenerator[types.LiveServerMessage, None], session.receive())
    async with contextlib.aclosing(messages):
        return await anext(messages)


@pytest.mark.parametrize("pcm", [SPEECH, PCM_WITH_ODD_ALPHABET, b"\x00\x01"])
async def test_lean_send_writes_the_frame_the_sdk_writes(
    wire_server: WireServer, pcm: bytes
) -> None:
    async with session_on(wire_server) as (session, connection):
        await session.send_realtime_input(audio=types.Blob(data=pcm, mime_type=INPUT_MIME_TYPE))
        await LiveWire(session).send_audio(pcm, INPUT_MIME_TYPE)
        (sdk_type, sdk_frame), (lean_type, lean_frame) = await connection.frames(2)
    assert (lean_type, lean_frame) == (sdk_type, sdk_frame)
    assert lean_type is WSMsgType.TEXT
    assert isinstance(lean_frame, str)
    audio = json.loads(lean_frame)["realtime_input"]["audio"]
    assert base64.urlsafe_b64decode(audio["data"]) == pcm


def audio_part(pcm: bytes, *, encode: str = "standard") -> dict[str, object]:
    data = (base64.b64encode if encode == "standard" else base64.urlsafe_b64encode)(pcm).decode()
    if encode == "unpadded":
        data = data.rstrip("=")
    return {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}


def audio_message(pcm: bytes, *, encode: str = "standard", **extra: object) -> dict[str, object]:
    return {"serverContent": {"modelTurn": {"parts": [audio_part(pcm, encode=encode)]}, **extra}}


ODD_PCM = bytes(range(256)) * 3 + b"\xff\xfe"  # 770 bytes: base64 needs padding
LEAN_FRAMES = {
    "emulator audio chunk": emulator_wire.audio_chunk(ODD_PCM, 24_000),
    "url-safe alphabet": audio_message(PCM_WITH_ODD_ALPHABET, encode="urlsafe"),
    "with a role": {
        "serverContent": {"modelTurn": {"role": "model", "parts": [audio_part(SPEECH)]}}
    },
    "two audio parts": {
        "serverContent": {"modelTurn": {"parts": [audio_part(ODD_PCM), audio_part(SPEECH)]}}
    },
}
SDK_FRAMES = {
    "audio and a transcription": audio_message(ODD_PCM, outputTranscription={"text": "Hi"}),
    "audio and turnComplete": audio_message(ODD_PCM, turnComplete=True),
    "audio and usage": {**audio_message(ODD_PCM), "usageMetadata": {"totalTokenCount": 3}},
    "unpadded base64": audio_message(ODD_PCM, encode="unpadded"),
    "snake-case inline_data": {
        "serverContent": {
            "modelTurn": {"parts": [{"inline_data": {"mime_type": "audio/pcm", "data": "AAEC"}}]}
        }
    },
    "a text part": {"serverContent": {"modelTurn": {"parts": [{"text": "hello"}]}}},
    "an image part": {
        "serverContent": {
            "modelTurn": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "AAEC"}}]}
        }
    },
    "fragmented transcription": emulator_wire.output_transcription("Hi! H"),
    "input transcription": emulator_wire.input_transcription("Hello"),
    "interrupted": emulator_wire.interrupted(),
    "turn complete with usage": emulator_wire.turn_complete(emulator_wire.Usage(3, 4, 5)),
    "tool call": emulator_wire.tool_call([("function-call-1", "get_weather", {"city": "Paris"})]),
    "tool call cancellation": emulator_wire.tool_call_cancellation(["function-call-1"]),
    "resumption update": emulator_wire.session_resumption_update("handle-1"),
    "go away": emulator_wire.go_away(50),
    "empty object": {},
}


def assert_same_message(lean: ServerMessage, sdk: types.LiveServerMessage) -> None:
    if isinstance(lean, ModelAudio):
        assert sdk.server_content is not None and sdk.server_content.model_turn is not None
        parts = sdk.server_content.model_turn.parts or []
        assert list(lean.chunks) == [part.inline_data.data for part in parts if part.inline_data]
    else:
        assert lean == sdk


async def test_lean_receive_parses_as_the_sdk_does(wire_server: WireServer) -> None:
    frames: list[tuple[str, object, bool]] = [
        (name, message, True) for name, message in LEAN_FRAMES.items()
    ]
    frames += [(name, message, False) for name, message in SDK_FRAMES.items()]
    async with session_on(wire_server) as (session, connection):
        lean_wire = LiveWire(session)
        for name, message, lean in frames:
            for frame in (json.dumps(message).encode(), json.dumps(message)):  # binary, text
                connection.send(frame)
                connection.send(frame)
                sdk_message = await sdk_receive(session)
                lean_message = await lean_wire.receive()
                assert isinstance(lean_message, ModelAudio) is lean, name
                assert (lean_model_audio(message) is not None) is lean, name
                assert_same_message(lean_message, sdk_message)


@pytest.mark.parametrize(
    "frame",
    [
        json.dumps({"code": 429, "message": "quota"}),
        "not json",
        # Only unknown keys and no code: the SDK itself fails (TypeError comparing None).
        json.dumps({"someFutureField": {}}),
    ],
    ids=["error object", "not json", "only unknown keys"],
)
async def test_lean_receive_fails_as_the_sdk_does(wire_server: WireServer, frame: str) -> None:
    async with session_on(wire_server) as (session, connection):
        connection.send(frame)
        connection.send(frame)
        # Whatever the SDK raises (ValueError, ClientError, even TypeError), the lean path must too.
        with pytest.raises(Exception) as sdk_error:
            await sdk_receive(session)
        with pytest.raises(type(sdk_error.value)) as lean_error:
            await LiveWire(session).receive()
    assert str(lean_error.value) == str(sdk_error.value)


@pytest.mark.parametrize(("code", "reason"), [(1011, "Internal error encountered."), (1000, "")])
async def test_a_close_is_the_same_api_error_as_the_sdks(
    wire_server: WireServer, code: int, reason: str
) -> None:
    raised: list[genai_errors.APIError] = []
    for read in ("sdk", "lean"):
        async with session_on(wire_server) as (session, connection):
            connection.close(code, reason)
            with pytest.raises(genai_errors.APIError) as error:
                if read == "sdk":
                    await sdk_receive(session)
                else:
                    await LiveWire(session).receive()
            raised.append(error.value)
    sdk_error, lean_error = raised
    assert type(lean_error) is type(sdk_error)
    assert lean_error.code == sdk_error.code == code
    assert str(lean_error) == str(sdk_error)
    assert reason in str(lean_error)


async def test_audio_and_resumption_go_on_across_a_go_away(emulator: EmulatorHandle) -> None:
    """The lean paths on a real emulator session that is resumed after goAway."""
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        # Each connection lives 3 s and announces its end 1 s ahead.
        system_instruction="[[emulator cap_s=3 go_away_s=1]]",
        session_resumption=types.SessionResumptionConfig(),
    )
    metrics = GatewayMetrics()
    upstream = LiveUpstream(
        client=emulator.client(),
        model="gemini-live-test",
        config=config,
        connect_timeout=10,
        resume_attempts=3,
        metrics=metrics,
        call_id="wire-test",
    )
    # Bytes of model audio per completed turn, as the call reads them.
    turns: asyncio.Queue[int] = asyncio.Queue()

    async def read() -> None:
        audio = 0
        async for message in upstream.messages():
            if isinstance(message, ModelAudio):
                audio += sum(map(len, message.chunks))
            elif message.server_content is not None and message.server_content.turn_complete:
                turns.put_nowait(audio)
                audio = 0

    async def resumed() -> bool:
        stats = await emulator.get_json("/stats")
        return bool(stats["sessions_resumed"] >= 1)

    await upstream.connect()
    reader = asyncio.create_task(read())
    try:
        for frame in speech_then_silence():
            await upstream.send_audio(frame)
        async with asyncio.timeout(10):
            first_turn_audio = await turns.get()
        await eventually(resumed)
        for frame in speech_then_silence():
            await upstream.send_audio(frame)
        async with asyncio.timeout(10):
            second_turn_audio = await turns.get()
    finally:
        await upstream.close()
        reader.cancel()
    assert first_turn_audio > 0
    assert second_turn_audio > 0
    assert upstream.resumption_handle is not None
    resumed_count = metrics.registry.get_sample_value(
        "orbis_gateway_resumptions_total", {"cause": "go_away", "outcome": "resumed"}
    )
    assert resumed_count is not None and resumed_count >= 1
