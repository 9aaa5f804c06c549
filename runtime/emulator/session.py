"""One emulated Gemini Live session: setup, user turns in, scripted model turns out.

The connection is read by `run()`; model answers are produced by one reply task at a time, so
the client can keep streaming (and barge in) while the model speaks. Closing is done by one
dedicated close task, whoever asks first, so a reply task can close the socket without being
cancelled halfway through its own close.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from runtime.emulator import wire
from runtime.emulator.apikeys import ApiKeyFile
from runtime.emulator.audio import (
    INPUT_RATE,
    OUTPUT_RATE,
    AudioDecodeError,
    EnergyVad,
    decode_base64,
    pcm_byte_count,
    pcm_duration_ms,
    synthetic_speech,
)
from runtime.emulator.scenario import (
    Control,
    Faults,
    Reply,
    Scenario,
    ScenarioError,
    Turn,
    parse_control,
)
from runtime.emulator.settings import EmulatorSettings
from runtime.emulator.state import (
    HandleStore,
    Lineage,
    SessionLog,
    SessionRecord,
    Snapshot,
    Stats,
)

log = logging.getLogger(__name__)

# Close codes and reasons as the real service sends them.
CLOSE_INVALID_ARGUMENT = 1007
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_GOING_AWAY = 1001
REASON_INTERNAL = "Internal error encountered."
REASON_DEADLINE = "Deadline expired before operation could complete."
REASON_BAD_KEY = "API key not valid. Please pass a valid API key."
REASON_EXHAUSTED = "Resource has been exhausted (e.g. check quota)."
REASON_BAD_HANDLE = "Session resumption handle is invalid or has expired."
REASON_SHUTDOWN = "The service is shutting down."

AUDIO_TOKENS_PER_SECOND = 32  # Gemini's documented rate for audio in and out
CHARS_PER_TEXT_TOKEN = 4
MAX_RECORDED_ITEMS = 50
# Turns queue behind the reply in progress; a client starting turns faster than they can be
# answered (a flood) is cut off rather than allowed to pile up tasks.
MAX_QUEUED_REPLIES = 16
FRAGMENT_CHARS = 4  # size of the pieces a "fragment_transcriptions" fault cuts text into


@dataclass
class EmulatorContext:
    """Everything sessions share; one per app, stored under an AppKey."""

    settings: EmulatorSettings
    scenarios: dict[str, Scenario]
    api_keys: ApiKeyFile
    handles: HandleStore
    stats: Stats
    session_log: SessionLog
    sessions: set[LiveSession] = field(default_factory=set)


@dataclass
class PendingToolCall:
    turn_index: int
    turn: Turn
    faults: Faults
    input_ms: float
    calls: list[tuple[str | None, str]]  # (id or None, name), one per distinct call
    usage: wire.Usage


def _fragments(texts: list[str], *, split: bool) -> list[str]:
    if not split:
        return texts
    return [
        text[i : i + FRAGMENT_CHARS] for text in texts for i in range(0, len(text), FRAGMENT_CHARS)
    ]


def _audio_tokens(duration_ms: float) -> int:
    return math.ceil(duration_ms / 1000 * AUDIO_TOKENS_PER_SECOND)


def _append_bounded(items: list[Any], item: Any) -> None:
    if len(items) < MAX_RECORDED_ITEMS:
        items.append(item)


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
        self._reply_task: asyncio.Task[None] | None = None
        self._barge_in = False
        self._admitted = False
        self._last_message_at = time.monotonic()
        # set up by _admit() once setup is accepted
        self.setup: wire.SetupRequest | None = None
        self.scenario_name = "default"
        self.scenario: Scenario = context.scenarios["default"]
        self.control = Control()
        self.lineage = Lineage()
        self.next_turn = 0
        self.pending: PendingToolCall | None = None
        self.vad: EnergyVad | None = None
        self.turn_audio_bytes = 0  # all audio since the last turn began
        self.utterance_bytes = 0  # the part of it that is the user's utterance

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

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

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
                await self._send_resumption_update()
                self._spawn(self._connection_cap())
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
        context = self.context
        if not context.api_keys.accepts(api_key):
            context.stats.sessions_refused += 1
            self.request_close(CLOSE_POLICY, REASON_BAD_KEY)
            return False
        if len(context.sessions) > context.settings.max_sessions:
            context.stats.sessions_refused += 1
            self.request_close(CLOSE_INTERNAL, REASON_EXHAUSTED)
            return False
        try:
            setup = wire.SetupRequest.parse(body)
            control = parse_control(setup.system_instruction)
        except (wire.ProtocolError, ScenarioError) as exc:
            self.request_close(CLOSE_INVALID_ARGUMENT, str(exc))
            return False
        model_name = setup.model.removeprefix("models/")
        if context.settings.accepted_models and model_name not in context.settings.accepted_models:
            self.request_close(
                CLOSE_POLICY,
                f"{setup.model} is not found for API version {self.api_version}, or is not "
                "supported for bidiGenerateContent.",
            )
            return False
        if setup.resumption_handle is not None:
            snapshot = context.handles.get(setup.resumption_handle)
            if snapshot is None:
                self.request_close(CLOSE_INVALID_ARGUMENT, REASON_BAD_HANDLE)
                return False
            if snapshot.lineage.open_sessions and self._refuses_resume_while_open(snapshot):
                self.request_close(CLOSE_INTERNAL, REASON_INTERNAL)
                return False
            self._restore(snapshot)
            context.stats.sessions_resumed += 1
        else:
            self.control = control
            self.scenario_name = control.scenario
        scenario = context.scenarios.get(self.scenario_name)
        if scenario is None:
            known = ", ".join(sorted(context.scenarios))
            self.request_close(
                CLOSE_INVALID_ARGUMENT,
                f"emulator control keyword: unknown scenario {self.scenario_name!r} "
                f"(known: {known})"[:120],
            )
            return False
        self.scenario = scenario
        self.setup = setup
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

    def _refuses_resume_while_open(self, snapshot: Snapshot) -> bool:
        """The reported refusal of a resume while the lineage's old socket is still open.

        Unlike the other faults this is a standing condition, not once per turn: it holds for
        as long as the client keeps the old connection open.
        """
        scenario = self.context.scenarios.get(snapshot.scenario)
        base = scenario.faults if scenario is not None else Faults()
        if not base.merged(snapshot.session_faults).refuse_resume_while_open:
            return False
        self.context.stats.faults_fired["refuse_resume_while_open"] += 1
        _append_bounded(self.record.faults_fired, "refuse_resume_while_open")
        return True

    def _restore(self, snapshot: Snapshot) -> None:
        self.lineage = snapshot.lineage
        self.scenario_name = snapshot.scenario
        self.next_turn = snapshot.next_turn
        self.control = Control(
            scenario=snapshot.scenario,
            faults=snapshot.session_faults,
            cap_s=snapshot.cap_s,
            go_away_s=snapshot.go_away_s,
        )
        self.record.resumed = True

    async def _read_loop(self) -> None:
        self._spawn(self._idle_watchdog())
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
            await self._on_tool_response(body)
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
        await self._send_resumption_update()
        await self.send(wire.go_away(lead))
        await asyncio.sleep(lead)
        self.request_close(CLOSE_INTERNAL, REASON_DEADLINE)

    async def _send_resumption_update(self) -> None:
        """A fresh handle when resumable (no reply or tool call in flight), else resumable=false."""
        assert self.setup is not None
        if not self.setup.resumption_enabled:
            return
        busy = self.pending is not None or (
            self._reply_task is not None
            and not self._reply_task.done()
            and self._reply_task is not asyncio.current_task()
        )
        handle = None
        if not busy:
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
                    await self._barge_in_now()
                else:
                    self._end_user_turn()
        if wire.field_of(body, "activityStart") is not None:
            await self._barge_in_now()
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
            _append_bounded(self.record.text_inputs, text)

    async def _begin_text_turn(self, text: str) -> None:
        await self._barge_in_now()
        _append_bounded(self.record.text_inputs, text)
        tokens = math.ceil(len(text) / CHARS_PER_TEXT_TOKEN)
        self._begin_turn(
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
        usage = wire.Usage(prompt_audio_tokens=_audio_tokens(streamed_ms))
        self._begin_turn(input_ms=input_ms, usage=usage, from_audio=True)

    async def _barge_in_now(self) -> None:
        """User speech while the model talks or a tool runs: stop the reply, cancel the call."""
        if self._reply_task is not None and not self._reply_task.done():
            self._barge_in = True
        if self.pending is not None:
            ids = [call_id for call_id, _ in self.pending.calls if call_id is not None]
            self.pending = None
            if ids:
                await self.send(wire.tool_call_cancellation(ids))

    def _begin_turn(self, *, input_ms: float, usage: wire.Usage, from_audio: bool) -> None:
        if len(self._tasks) > MAX_QUEUED_REPLIES:
            self.request_close(CLOSE_INTERNAL, REASON_EXHAUSTED)
            return
        if self._reply_task is not None and not self._reply_task.done():
            self._barge_in = True
        self.pending = None  # superseded; its cancellation went out when the user spoke
        turn_index = self.next_turn
        self.next_turn += 1
        self.record.turns += 1
        self.context.stats.turns += 1
        previous = self._reply_task
        self._reply_task = self._spawn(
            self._play_turn(
                previous, turn_index, input_ms=input_ms, usage=usage, from_audio=from_audio
            )
        )

    async def _on_tool_response(self, body: wire.JsonObject) -> None:
        responses = wire.function_responses(body)
        self.context.stats.tool_responses += len(responses)
        for response in responses:
            if len(self.record.tool_responses) < MAX_RECORDED_ITEMS:
                self.record.add_tool_response(response.id, response.name, response.response)
        pending = self.pending
        if pending is None:
            log.info(
                "tool response with no call pending", extra={"fields": {"session": self.record.id}}
            )
            return
        unanswered = [
            call
            for call in pending.calls
            if not any(
                (response.id is not None and response.id == call[0])
                or (call[0] is None and response.name == call[1])
                for response in responses
            )
        ]
        if unanswered:
            pending.calls = unanswered
            return
        self.pending = None
        if self._fire(pending.faults, pending.turn_index, "silence_after_tool_response"):
            return
        payloads = [response.response for response in responses]
        tool_text = json.dumps(
            payloads[0] if len(payloads) == 1 else payloads, separators=(",", ":")
        )
        self._reply_task = self._spawn(self._after_tool(self._reply_task, pending, tool_text))

    # --- model output -------------------------------------------------------------------------

    def _fire(self, faults: Faults, turn_index: int, name: str) -> bool:
        """Whether a fault set on this turn fires now (once per turn of the lineage)."""
        if not getattr(faults, name) or not self.lineage.fire_once(turn_index, name):
            return False
        self.context.stats.faults_fired[name] += 1
        _append_bounded(self.record.faults_fired, name)
        log.info(
            "fault injected",
            extra={"fields": {"session": self.record.id, "fault": name, "turn": turn_index}},
        )
        return True

    async def _play_turn(
        self,
        previous: asyncio.Task[None] | None,
        turn_index: int,
        *,
        input_ms: float,
        usage: wire.Usage,
        from_audio: bool,
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        self._barge_in = False
        turn = self.scenario.turn(turn_index)
        faults = self.scenario.faults.merged(self.control.faults).merged(turn.faults)
        # Fragmenting is harmless to repeat, so it applies every time; fired once for the record.
        self._fire(faults, turn_index, "fragment_transcriptions")
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        assert self.setup is not None
        if from_audio and self.setup.input_transcription and turn.input_transcription:
            texts = turn.input_transcription
            texts = texts if isinstance(texts, list) else [texts]
            split = faults.fragment_transcriptions
            for text in _fragments([self._fill(t, input_ms, None) for t in texts], split=split):
                await self.send(wire.input_transcription(text))
        call_name = self._tool_name(turn)
        if call_name is None:
            await self._speak(turn, turn_index, faults, input_ms, usage, tool_text=None)
            return
        if not turn.is_empty():
            spoken = await self._speak(
                turn, turn_index, faults, input_ms, usage, tool_text=None, final=False
            )
            if spoken is None:
                return
            usage = spoken
        assert turn.tool_call is not None
        # Unique across resumptions too, shaped like the real ones ("function-call-<digits>").
        call_id = (
            None
            if self._fire(faults, turn_index, "idless_tool_call")
            else f"function-call-{secrets.randbelow(10**19)}"
        )
        message = wire.tool_call([(call_id, call_name, turn.tool_call.args)])
        self.context.stats.tool_calls += 1
        _append_bounded(
            self.record.tool_calls, {"id": call_id, "name": call_name, "args": turn.tool_call.args}
        )
        self.pending = PendingToolCall(
            turn_index, turn, faults, input_ms, [(call_id, call_name)], usage
        )
        await self.send(message)
        if self._fire(faults, turn_index, "duplicate_tool_call"):
            await self.send(message)
        if self._fire(faults, turn_index, "cancel_tool_call"):
            self.pending = None
            await self.send(wire.tool_call_cancellation([call_id] if call_id else []))
            await self._finish_turn(usage)

    def _tool_name(self, turn: Turn) -> str | None:
        """The function this turn calls; None when it calls none (or the session declared none)."""
        assert self.setup is not None
        if turn.tool_call is None:
            return None
        if turn.tool_call.name is not None:
            return turn.tool_call.name
        return self.setup.function_names[0] if self.setup.function_names else None

    async def _after_tool(
        self, previous: asyncio.Task[None] | None, pending: PendingToolCall, tool_text: str
    ) -> None:
        if previous is not None:  # the call's own turn may still be sending (a duplicate call)
            await asyncio.gather(previous, return_exceptions=True)
        if pending.faults.latency_ms:
            await asyncio.sleep(pending.faults.latency_ms / 1000)
        self._barge_in = False
        await self._speak(
            pending.turn.after_tool,
            pending.turn_index,
            pending.faults,
            pending.input_ms,
            pending.usage,
            tool_text=tool_text,
        )

    @staticmethod
    def _fill(text: str, input_ms: float, tool_text: str | None) -> str:
        text = text.replace("{input_seconds}", f"{input_ms / 1000:.1f}")
        if tool_text is not None:
            text = text.replace("{tool_response}", tool_text)
        return text

    async def _speak(
        self,
        reply: Reply,
        turn_index: int,
        faults: Faults,
        input_ms: float,
        usage: wire.Usage,
        *,
        tool_text: str | None,
        final: bool = True,
    ) -> wire.Usage | None:
        """Stream a reply's audio and transcription; on a final reply, complete the turn.

        Returns the usage so far, or None when the turn ended early (closed or interrupted).
        """
        assert self.setup is not None
        duration = reply.duration_ms(input_ms)
        pcm = synthetic_speech(duration, reply.audio_kind, reply.frequency)
        chunk_bytes = pcm_byte_count(self.scenario.chunk_ms, OUTPUT_RATE)
        chunks = [pcm[i : i + chunk_bytes] for i in range(0, len(pcm), chunk_bytes)]
        texts: list[str] = []
        if self.setup.output_transcription:
            filled = [self._fill(t, input_ms, tool_text) for t in reply.text_fragments()]
            texts = _fragments(filled, split=faults.fragment_transcriptions)
        usage = wire.Usage(
            prompt_audio_tokens=usage.prompt_audio_tokens,
            prompt_text_tokens=usage.prompt_text_tokens,
            response_audio_tokens=usage.response_audio_tokens + _audio_tokens(duration),
        )
        midpoint = len(chunks) // 2
        sent_texts = 0
        for index in range(len(chunks) + 1):
            if self._barge_in:
                await self.send(wire.interrupted())
                await self._finish_turn(usage)
                return None
            if index == midpoint and await self._midpoint_faults(faults, turn_index, usage, final):
                return None
            if index == len(chunks):
                break
            chunk = chunks[index]
            if await self.send_encoded(wire.encoded_audio_chunk(chunk, OUTPUT_RATE)):
                self.record.audio_bytes_out += len(chunk)
                self.context.stats.audio_bytes_out += len(chunk)
            # Transcription trails the audio it belongs to, spread over the chunks.
            due = len(texts) * (index + 1) // len(chunks)
            for text in texts[sent_texts:due]:
                await self.send(wire.output_transcription(text))
            sent_texts = max(sent_texts, due)
            if self.scenario.pace:
                await asyncio.sleep(self.scenario.chunk_ms / 1000 / self.scenario.pace)
        for text in texts[sent_texts:]:
            await self.send(wire.output_transcription(text))
        if not final:
            return usage
        await self.send(wire.generation_complete())
        if faults.interrupt == "after_turn_complete" and self._fire(
            faults, turn_index, "interrupt"
        ):
            await self._finish_turn(usage)
            await self.send(wire.interrupted())
            return None
        await self._finish_turn(usage)
        return usage

    async def _midpoint_faults(
        self, faults: Faults, turn_index: int, usage: wire.Usage, final: bool
    ) -> bool:
        """Faults that strike halfway through the audio; True when the reply must stop."""
        if self._fire(faults, turn_index, "close_1011_mid_turn"):
            self.request_close(CLOSE_INTERNAL, REASON_INTERNAL)
            return True
        if (
            final
            and faults.interrupt == "before_turn_complete"
            and self._fire(faults, turn_index, "interrupt")
        ):
            await self.send(wire.interrupted())
            await self._finish_turn(usage)
            return True
        if final and self._fire(faults, turn_index, "premature_turn_complete"):
            # The turn is declared complete while half of its audio is still to come.
            await self.send(wire.turn_complete(None))
        return False

    async def _finish_turn(self, usage: wire.Usage) -> None:
        await self.send(wire.turn_complete(usage))
        await self._send_resumption_update()

    async def shutdown(self) -> None:
        self.request_close(CLOSE_GOING_AWAY, REASON_SHUTDOWN)
        if self._close_task is not None:
            await asyncio.gather(self._close_task, return_exceptions=True)
