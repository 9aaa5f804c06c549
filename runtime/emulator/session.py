"""One emulated Gemini Live session: the connection, its setup, resumption and the user's input.

The connection is read by `run()`; model answers are produced by `turns.ModelTurns`, one reply
task at a time, so the client can keep streaming (and barge in) while the model speaks. Closing
is done by one dedicated close task, whoever asks first, so a reply task can close the socket
without being cancelled halfway through its own close. Admitting the setup is `admission.admit`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from collections.abc import Coroutine
from typing import Any

from aiohttp import WSMsgType, web

from runtime.emulator import wire
from runtime.emulator.admission import Refused, admit
from runtime.emulator.audio import (
    INPUT_RATE,
    AudioDecodeError,
    EnergyVad,
    decode_base64,
    pcm_duration_ms,
)
from runtime.emulator.closes import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_INVALID_ARGUMENT,
    REASON_DEADLINE,
    REASON_INTERNAL,
    REASON_SHUTDOWN,
)
from runtime.emulator.context import EmulatorContext
from runtime.emulator.scenario import Control, Scenario
from runtime.emulator.state import Lineage, SessionRecord, Snapshot, append_bounded
from runtime.emulator.turns import ModelTurns, audio_tokens

log = logging.getLogger(__name__)

CHARS_PER_TEXT_TOKEN = 4


class LiveSession:
    def __init__(
        self, ws: web.WebSocketResponse, context: EmulatorContext, *, api_version: str
    ) -> None:
        self.ws = ws
        self.context = context
        self.api_version = api_version
        self.record = SessionRecord(id=secrets.token_hex(6))
        self._send_lock = asyncio.Lock()
        self._closing = False
        self._close_task: asyncio.Task[bool] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._admitted = False
        self._last_message_at = time.monotonic()
        # set up by _admit() once setup is accepted
        self.setup: wire.SetupRequest | None = None
        self.scenario_name = "default"
        self.scenario: Scenario = context.scenarios["default"]
        self.control = Control()
        self.lineage = Lineage()
        self.next_turn = 0
        self.vad: EnergyVad | None = None
        self.turn_audio_bytes = 0  # all audio since the last turn began
        self.utterance_bytes = 0  # the part of it that is the user's utterance
        self.turns = ModelTurns(self)

    # --- connection plumbing ------------------------------------------------------------------

    async def send(self, message: wire.JsonObject) -> bool:
        """Send one server message; False (and nothing sent) once the session is closing."""
        if self._closing:
            return False
        return await self.send_encoded(json.dumps(message, separators=(",", ":")).encode())

    async def send_encoded(self, data: bytes) -> bool:
        """`send` for a message already serialised (e.g. by `wire.encoded_audio_chunk`)."""
        if self._closing:
            return False
        async with self._send_lock:
            if self._closing:
                return False
            try:
                await self.ws.send_bytes(data)
            except ConnectionError:
                self._closing = True
                return False
        self.context.stats.messages_out += 1
        return True

    def request_close(self, code: int, reason: str) -> None:
        """Close the socket with this code (once; later requests are ignored)."""
        if self._close_task is not None:
            return
        self._closing = True
        self.record.close_code, self.record.close_reason = code, reason
        self._close_task = asyncio.create_task(self.ws.close(code=code, message=reason.encode()))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    @property
    def task_count(self) -> int:
        """The session's tasks running (replies queued included)."""
        return len(self._tasks)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session task failed", exc_info=task.exception())
            self.request_close(CLOSE_INTERNAL, REASON_INTERNAL)

    async def run(self, *, api_key: str | None) -> None:
        stats = self.context.stats
        stats.sessions_open += 1
        stats.sessions_total += 1
        self.context.session_log.add(self.record)
        try:
            body = await self._first_setup()
            if body is not None and self._admit(body, api_key=api_key):
                await self.send(wire.setup_complete())
                await self.send_resumption_update()
                self.spawn(self._connection_cap())
                await self._read_loop()
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._close_task is not None:
                await asyncio.gather(self._close_task, return_exceptions=True)
            elif not self.ws.closed:
                await self.ws.close()
            self.record.ended_at = time.time()
            self.record.close_code = self.record.close_code or self.ws.close_code
            stats.sessions_open -= 1
            if self._admitted:
                self.lineage.open_sessions -= 1
            stats.closes[str(self.record.close_code)] += 1
            log.info(
                "session ended",
                extra={"fields": {"session": self.record.id, "close_code": self.record.close_code}},
            )

    async def _first_setup(self) -> wire.JsonObject | None:
        try:
            message = await self.ws.receive(timeout=self.context.settings.setup_timeout_seconds)
        except TimeoutError:
            self.request_close(CLOSE_INTERNAL, REASON_DEADLINE)
            return None
        if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return None
        self.context.stats.messages_in += 1
        try:
            kind, body = wire.parse_client_message(message.data)
        except wire.ProtocolError as exc:
            self.request_close(CLOSE_INVALID_ARGUMENT, str(exc))
            return None
        if kind != "setup":
            self.request_close(CLOSE_INVALID_ARGUMENT, "The first message must be a setup message.")
            return None
        return body

    def _admit(self, body: wire.JsonObject, *, api_key: str | None) -> bool:
        """Check key, capacity, setup and resumption handle; False once a refusal is sent."""
        admitted = admit(
            self.context,
            body,
            self.record,
            api_key=api_key,
            api_version=self.api_version,
            open_sessions=len(self.context.sessions),
        )
        if isinstance(admitted, Refused):
            self.request_close(admitted.code, admitted.reason)
            return False
        setup = self.setup = admitted.setup
        self.scenario_name, self.scenario = admitted.scenario_name, admitted.scenario
        self.control, self.lineage, self.next_turn = (
            admitted.control,
            admitted.lineage,
            admitted.next_turn,
        )
        if setup.automatic_activity_detection:
            self.vad = EnergyVad(silence_ms=float(setup.silence_duration_ms or 500))
        record = self.record
        record.model, record.scenario, record.lineage = (
            setup.model,
            self.scenario_name,
            self.lineage.id,
        )
        record.system_instruction = setup.system_instruction
        record.declared_functions = setup.function_names
        self.lineage.open_sessions += 1
        self._admitted = True
        return True

    async def _read_loop(self) -> None:
        self.spawn(self._idle_watchdog())
        while not self._closing:
            message = await self.ws.receive()
            self._last_message_at = time.monotonic()
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                if message.type == WSMsgType.ERROR:
                    log.info("session read error", extra={"fields": {"session": self.record.id}})
                return
            self.context.stats.messages_in += 1
            try:
                await self._dispatch(message.data)
            except (wire.ProtocolError, AudioDecodeError) as exc:
                self.request_close(CLOSE_INVALID_ARGUMENT, str(exc)[:120])
                return

    async def _idle_watchdog(self) -> None:
        """Close a session the client stopped talking to.

        One timer per idle period instead of a timeout around every receive: those timers were
        about a tenth of the emulator's CPU with many sessions streaming 20 ms frames.
        """
        idle = self.context.settings.idle_timeout_seconds
        while not self._closing:
            remaining = self._last_message_at + idle - time.monotonic()
            if remaining <= 0:
                self.request_close(CLOSE_INTERNAL, REASON_DEADLINE)
                return
            await asyncio.sleep(remaining)

    async def _dispatch(self, raw: str | bytes) -> None:
        kind, body = wire.parse_client_message(raw)
        if kind == "realtimeInput":
            await self._on_realtime_input(body)
        elif kind == "clientContent":
            await self._on_client_content(body)
        elif kind == "toolResponse":
            await self.turns.on_tool_response(body)
        else:
            raise wire.ProtocolError("A session accepts only one setup message.")

    async def _connection_cap(self) -> None:
        settings = self.context.settings
        cap = self.control.cap_s or settings.connection_cap_seconds
        lead = min(
            self.control.go_away_s
            if self.control.go_away_s is not None
            else settings.go_away_seconds,
            cap,
        )
        await asyncio.sleep(cap - lead)
        await self.send_resumption_update()
        await self.send(wire.go_away(lead))
        await asyncio.sleep(lead)
        self.request_close(CLOSE_INTERNAL, REASON_DEADLINE)

    async def send_resumption_update(self) -> None:
        """A fresh handle when resumable (no reply or tool call in flight), else resumable=false."""
        assert self.setup is not None
        if not self.setup.resumption_enabled:
            return
        handle = None
        if not self.turns.busy():
            handle = self.context.handles.issue(
                Snapshot(
                    lineage=self.lineage,
                    scenario=self.scenario_name,
                    session_faults=self.control.faults,
                    next_turn=self.next_turn,
                    cap_s=self.control.cap_s,
                    go_away_s=self.control.go_away_s,
                )
            )
        await self.send(wire.session_resumption_update(handle))

    # --- user input ---------------------------------------------------------------------------

    async def _on_realtime_input(self, body: wire.JsonObject) -> None:
        for data in wire.realtime_audio_chunks(body):
            pcm = decode_base64(data)
            self.turn_audio_bytes += len(pcm)
            self.record.audio_bytes_in += len(pcm)
            self.context.stats.audio_bytes_in += len(pcm)
            if self.vad is None:
                self.utterance_bytes += len(pcm)
                continue
            was_speaking = self.vad.in_speech
            events = self.vad.feed(pcm)
            if was_speaking or self.vad.in_speech or events:
                self.utterance_bytes += len(pcm)
            for event in events:
                if event == "speech_start":
                    await self.turns.barge_in()
                else:
                    self._end_user_turn()
        if wire.field_of(body, "activityStart") is not None:
            await self.turns.barge_in()
            self.utterance_bytes = 0
        if wire.field_of(body, "activityEnd") is not None:
            self._end_user_turn()
        if wire.field_of(body, "audioStreamEnd"):
            if self.vad is not None:
                self.vad.reset()
            self._end_user_turn()
        text = wire.field_of(body, "text")
        if isinstance(text, str) and text:
            await self._begin_text_turn(text)

    async def _on_client_content(self, body: wire.JsonObject) -> None:
        text = wire.client_content_text(body)
        if wire.field_of(body, "turnComplete"):
            await self._begin_text_turn(text)
        elif text:
            append_bounded(self.record.text_inputs, text)

    async def _begin_text_turn(self, text: str) -> None:
        await self.turns.barge_in()
        append_bounded(self.record.text_inputs, text)
        tokens = math.ceil(len(text) / CHARS_PER_TEXT_TOKEN)
        self.turns.begin(
            input_ms=len(text) * 60.0, usage=wire.Usage(prompt_text_tokens=tokens), from_audio=False
        )

    def _end_user_turn(self) -> None:
        if self.utterance_bytes == 0:
            return
        # The reply is shaped by the utterance; usage counts all audio streamed since the last
        # turn, silence included, as the real service bills it.
        input_ms = pcm_duration_ms(self.utterance_bytes, INPUT_RATE)
        streamed_ms = pcm_duration_ms(self.turn_audio_bytes, INPUT_RATE)
        self.utterance_bytes = self.turn_audio_bytes = 0
        usage = wire.Usage(prompt_audio_tokens=audio_tokens(streamed_ms))
        self.turns.begin(input_ms=input_ms, usage=usage, from_audio=True)

    async def shutdown(self) -> None:
        self.request_close(CLOSE_GOING_AWAY, REASON_SHUTDOWN)
        if self._close_task is not None:
            await asyncio.gather(self._close_task, return_exceptions=True)
