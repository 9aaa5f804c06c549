"""Fixtures for the emulator's tests: one certificate per run, an emulator per test."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.genai import errors, live, types

from runtime.emulator.testing import (
    CertPair,
    EmulatorHandle,
    generate_self_signed_cert,
    running_emulator,
)

MODEL = "gemini-2.5-flash-native-audio-preview-09-2025"
CHUNK_BYTES = 3200  # 100 ms of 16 kHz PCM16


@pytest.fixture(scope="session")
def emulator_cert(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    return generate_self_signed_cert(tmp_path_factory.mktemp("emulator-cert"))


@pytest.fixture
async def emulator(tmp_path: Path, emulator_cert: CertPair) -> AsyncIterator[EmulatorHandle]:
    async with running_emulator(tmp_path, cert=emulator_cert) as handle:
        yield handle


def tone(duration_ms: int, rate: int = 16_000, amplitude: int = 8000) -> bytes:
    count = rate * duration_ms // 1000
    return b"".join(
        struct.pack("<h", int(amplitude * math.sin(2 * math.pi * 300 * i / rate)))
        for i in range(count)
    )


def silence(duration_ms: int, rate: int = 16_000) -> bytes:
    return bytes(rate * duration_ms // 1000 * 2)


async def stream_pcm(session: live.AsyncSession, pcm: bytes) -> None:
    """Send PCM the way a caller does: 100 ms chunks of 16 kHz audio (faster than real time)."""
    for offset in range(0, len(pcm), CHUNK_BYTES):
        blob = types.Blob(data=pcm[offset : offset + CHUNK_BYTES], mime_type="audio/pcm;rate=16000")
        await session.send_realtime_input(audio=blob)


@dataclass
class TurnSummary:
    """What one `session.receive()` pass yielded, stitched the way a gateway would."""

    messages: list[types.LiveServerMessage] = field(default_factory=list)
    audio: bytes = b""
    audio_mime_types: set[str] = field(default_factory=set)
    input_text: list[str] = field(default_factory=list)
    output_text: list[str] = field(default_factory=list)
    tool_calls: list[types.FunctionCall] = field(default_factory=list)
    cancelled_ids: list[str] = field(default_factory=list)
    interrupted: bool = False
    turn_complete: bool = False
    usage: types.UsageMetadata | None = None
    handles: list[str] = field(default_factory=list)
    go_away: str | None = None
    order: list[str] = field(default_factory=list)

    def add(self, message: types.LiveServerMessage) -> None:
        self.messages.append(message)
        content = message.server_content
        if content is not None:
            for part in (content.model_turn.parts or []) if content.model_turn else []:
                if part.inline_data is not None and part.inline_data.data is not None:
                    self.audio += part.inline_data.data
                    self.audio_mime_types.add(part.inline_data.mime_type or "")
                    self.order.append("audio")
            if content.input_transcription and content.input_transcription.text:
                self.input_text.append(content.input_transcription.text)
            if content.output_transcription and content.output_transcription.text:
                self.output_text.append(content.output_transcription.text)
            if content.interrupted:
                self.interrupted = True
                self.order.append("interrupted")
            if content.turn_complete:
                self.turn_complete = True
                self.order.append("turn_complete")
        if message.usage_metadata is not None:
            self.usage = message.usage_metadata
        if message.tool_call is not None:
            self.tool_calls.extend(message.tool_call.function_calls or [])
            self.order.append("tool_call")
        if message.tool_call_cancellation is not None:
            self.cancelled_ids.extend(message.tool_call_cancellation.ids or [])
            self.order.append("tool_call_cancellation")
        update = message.session_resumption_update
        if update is not None and update.resumable and update.new_handle:
            self.handles.append(update.new_handle)
        if message.go_away is not None:
            self.go_away = message.go_away.time_left
            self.order.append("go_away")


async def receive_turn(session: live.AsyncSession, *, limit_s: float = 10.0) -> TurnSummary:
    """One pass of `session.receive()` (it ends at turnComplete), bounded in time."""
    summary = TurnSummary()
    async with asyncio.timeout(limit_s):
        async for message in session.receive():
            summary.add(message)
    return summary


async def receive_until(
    session: live.AsyncSession,
    stop: Any,
    *,
    limit_s: float = 10.0,
    into: TurnSummary | None = None,
) -> TurnSummary:
    """Receive across turn boundaries until `stop(summary)` is true.

    `into` collects the messages, so a caller still has them when the time limit strikes.
    """
    summary = into if into is not None else TurnSummary()
    async with asyncio.timeout(limit_s):
        while not stop(summary):
            async for message in session.receive():
                summary.add(message)
                if stop(summary):
                    break
    return summary


async def receive_until_closed(
    session: live.AsyncSession, *, limit_s: float = 10.0
) -> tuple[TurnSummary, errors.APIError]:
    """Everything received until the server closes, and the error the close surfaced as."""
    summary = TurnSummary()
    async with asyncio.timeout(limit_s):
        try:
            while True:
                async for message in session.receive():
                    summary.add(message)
        except errors.APIError as closed:
            return summary, closed


def text(words: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=words)])
