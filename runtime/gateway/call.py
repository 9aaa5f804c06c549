"""One widget call: the browser's WebSocket relayed to its Gemini Live session.

A call runs a handful of tasks that meet only through bounded queues:

    browser --reader--> inbound queue --sender--> Gemini
    browser <--writer-- outbound queue <--upstream-- Gemini (audio, transcripts, tools)

plus a watchdog (idle timeout, maximum length) and the transcript flusher. Whatever ends the
call first (hang-up, a client error, an upstream failure, a remote end request, drain) calls
`end()` once; `run()` then tears everything down in one place and reports the call's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from google import genai
from google.genai import types

from runtime.gateway.internal_api import ApiRejected, ApiUnavailable, CallGrant, InternalApi
from runtime.gateway.live_wire import ModelAudio, ServerMessage
from runtime.gateway.metrics import GatewayMetrics
from runtime.gateway.protocol import (
    INPUT_RATE,
    OUTPUT_RATE,
    ClientEvent,
    ClientFrameError,
    CloseCode,
    EndReason,
    ErrorCode,
    error_event,
    event,
    parse_text_frame,
)
from runtime.gateway.redis_state import (
    REDIS_ERRORS,
    CallRecord,
    CallState,
    handoff_pending,
    offer_handoff,
    withdraw_handoff,
)
from runtime.gateway.settings import GatewaySettings
from runtime.gateway.transcript import AGENT, USER, TranscriptUploader, TurnStitcher
from runtime.gateway.upstream import LiveUpstream, UpstreamFailed, live_config

log = logging.getLogger(__name__)

# How often a draining instance looks whether its offered call was taken over.
HANDOFF_POLL_SECONDS = 0.1
# Queued caller frames are coalesced up to this (100 ms: the top of the range Gemini advises).
MAX_UPSTREAM_CHUNK_BYTES = 2 * INPUT_RATE // 10
INBOUND_QUEUE_FRAMES = 256  # about 5 s of 20 ms frames: enough to ride out a resumption
OUTBOUND_QUEUE_ITEMS = 512
# Caller audio louder than this peak (of 32767) counts as speech for the latency metric.
SPEECH_PEAK = 1500
# Real time is 16 000 samples/s = 32 000 bytes/s (50 frames/s of 20 ms). A network stall
# makes the browser's frames arrive in a burst afterwards: up to 5 s of backlog is allowed.
AUDIO_BYTES_PER_SECOND = 2 * INPUT_RATE
MAX_FRAMES_PER_SECOND = 60.0
BURST_SECONDS = 5.0


class TokenBucket:
    def __init__(self, rate: float, capacity: float) -> None:
        self._rate = rate
        self._capacity = capacity
        self._tokens = capacity
        self._updated = time.monotonic()

    def take(self, amount: float) -> bool:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens < amount:
            return False
        self._tokens -= amount
        return True


def peak_amplitude(pcm: bytes) -> int:
    """A cheap loudness estimate: the peak of every 8th sample."""
    samples = memoryview(pcm).cast("h")[::8]
    if not samples:
        return 0
    return max(max(samples), -min(samples))


@dataclass
class CallDeps:
    """What every call of the process shares."""

    settings: GatewaySettings
    api: InternalApi
    genai_client: genai.Client
    metrics: GatewayMetrics
    state: CallState


@dataclass
class _Ending:
    reason: str
    error: ErrorCode | None
    close_code: CloseCode
    message: str | None = None


@dataclass
class _Usage:
    prompt_tokens: int = 0
    response_tokens: int = 0
    total_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "response_tokens": self.response_tokens,
            "total_tokens": self.total_tokens,
        }

    def add(self, usage: types.UsageMetadata) -> None:
        self.prompt_tokens += usage.prompt_token_count or 0
        self.response_tokens += usage.response_token_count or 0
        self.total_tokens += usage.total_token_count or 0


@dataclass(frozen=True)
class Resumption:
    """Where a call moved from another (draining) instance stands (see `Call.hand_off`)."""

    handle: str | None
    next_seq: int
    started_at: float  # wall clock
    usage: dict[str, int]


@dataclass
class _ToolRun:
    name: str
    task: asyncio.Task[None] | None = None
    done: bool = False
    ids: set[str] = field(default_factory=set)


class Call:
    def __init__(
        self,
        *,
        ws: web.WebSocketResponse,
        grant: CallGrant,
        record: CallRecord,
        deps: CallDeps,
        origin: str,
        resumption: Resumption | None = None,
    ) -> None:
        self.call_id = grant.call_id
        self.record = record
        self._ws = ws
        self._grant = grant
        self._deps = deps
        self._settings = deps.settings
        self._metrics = deps.metrics
        self._inbound: asyncio.Queue[bytes] = asyncio.Queue(INBOUND_QUEUE_FRAMES)
        self._outbound: asyncio.Queue[bytes | str] = asyncio.Queue(OUTBOUND_QUEUE_ITEMS)
        self._ending: _Ending | None = None
        self._ended = asyncio.Event()
        self._ready = False
        self._not_ready_reported = False
        self._origin = origin
        self._resumed = resumption is not None
        self._started_at = resumption.started_at if resumption else time.time()
        # The call's length counts from its start, on whichever instance that was.
        self._started = time.monotonic() - (time.time() - self._started_at)
        self._last_client_frame = time.monotonic()
        self._handoff_token: str | None = None
        self._handoff_deadline = 0.0
        self.owns_slot = True
        self._frames = TokenBucket(MAX_FRAMES_PER_SECOND, BURST_SECONDS * MAX_FRAMES_PER_SECOND)
        self._audio_bytes = TokenBucket(
            1.5 * AUDIO_BYTES_PER_SECOND, BURST_SECONDS * AUDIO_BYTES_PER_SECOND
        )
        self._last_speech_at: float | None = None
        self._model_speaking = False
        self._usage = _Usage(**resumption.usage) if resumption else _Usage()
        self._tools: dict[str, _ToolRun] = {}
        self._stitcher = TurnStitcher()
        self._uploader = TranscriptUploader(
            deps.api,
            self.call_id,
            deps.metrics,
            next_seq=resumption.next_seq if resumption else 1,
        )
        agent = grant.agent
        self._max_seconds = min(
            self._settings.max_call_seconds,
            agent.max_session_seconds or self._settings.max_call_seconds,
        )
        self._upstream = LiveUpstream(
            client=deps.genai_client,
            model=agent.model or self._settings.gemini_model,
            config=live_config(agent),
            connect_timeout=self._settings.upstream_connect_timeout_seconds,
            resume_attempts=self._settings.resume_attempts,
            metrics=deps.metrics,
            call_id=self.call_id,
            handle=resumption.handle if resumption else None,
        )

    # -- ending -------------------------------------------------------------------------------

    def end(
        self,
        reason: str,
        *,
        error: ErrorCode | None = None,
        close_code: CloseCode = CloseCode.NORMAL,
        message: str | None = None,
    ) -> None:
        """Ask the call to end; the first reason wins."""
        if self._ending is not None:
            return
        if error is not None and error.spec.close_code is not None:
            close_code = error.spec.close_code
        self._ending = _Ending(reason, error, close_code, message)
        self._ended.set()

    def fail(self, code: ErrorCode, message: str | None = None) -> None:
        self.end(code.value, error=code, message=message)

    def send_event(self, text: str) -> None:
        """Queue a small event for the widget; dropped only if the widget is hopelessly behind."""
        with contextlib.suppress(asyncio.QueueFull):
            self._outbound.put_nowait(text)

    def hint_reconnect(self, reason: str, retry_after_ms: int) -> None:
        self.send_event(event("reconnect", reason=reason, retry_after_ms=retry_after_ms))

    @property
    def ended(self) -> bool:
        return self._ending is not None

    @property
    def handing_off(self) -> bool:
        return self._handoff_token is not None

    async def hand_off(self, *, wait_seconds: float) -> bool:
        """Prepare the call to continue on another instance, and tell the widget how.

        The model connection is closed first (a resumption can be refused while the old socket
        is open), the transcript so far is flushed, and everything the next instance needs
        (agent, origin, resumption handle, next transcript number, usage) goes to Redis under
        a single-use token sent in the `reconnect` event; the call is waited for on another
        instance for `wait_seconds` (the drain's grace). False when the call has not started
        (nothing to move): the caller then sends a plain reconnect hint.
        """
        if self.ended or not self._ready or self._handoff_token is not None:
            return False
        await self._upstream.close()
        for role, text in self._stitcher.finish():
            self._uploader.add(role, text)
        await self._uploader.flush_final(attempts=3)
        offer = {
            "call_id": self.call_id,
            "origin": self._origin,
            "grant": self._grant.model_dump(mode="json"),
            "handle": self._upstream.resumption_handle,
            "next_seq": self._uploader.next_seq,
            "started_at": self._started_at,
            "usage": self._usage.as_dict(),
        }
        try:
            self._handoff_token = await offer_handoff(
                self._deps.state.client, offer, wait_seconds=wait_seconds
            )
            self._handoff_deadline = time.monotonic() + wait_seconds
        except REDIS_ERRORS:
            # The model session is already closed: the widget moves to a fresh call instead.
            self._deps.metrics.redis_errors.labels(operation="handoff").inc()
            self.hint_reconnect("draining", retry_after_ms=0)
            self.end(EndReason.DRAIN.value, close_code=CloseCode.GOING_AWAY)
            return True
        self.send_event(
            event(
                "reconnect",
                reason="draining",
                retry_after_ms=0,
                resume_token=self._handoff_token,
            )
        )
        return True

    async def _handoff_taken(self) -> bool:
        """Wait for another instance to take the call over, until the drain time is up; then
        withdraw the offer. The widget may well close this socket before it resumes (the
        protocol lets it): the call is still this instance's until the offer is taken, so its
        end is not recorded here while a move is under way."""
        assert self._handoff_token is not None
        client = self._deps.state.client
        try:
            while time.monotonic() < self._handoff_deadline:
                if not await handoff_pending(client, self._handoff_token):
                    return True
                await asyncio.sleep(HANDOFF_POLL_SECONDS)
            return not await withdraw_handoff(client, self._handoff_token)
        except REDIS_ERRORS:
            return False

    # -- main ---------------------------------------------------------------------------------

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._read_client(), name=f"reader-{self.call_id}"),
            asyncio.create_task(self._write_client(), name=f"writer-{self.call_id}"),
            asyncio.create_task(self._run_upstream(), name=f"upstream-{self.call_id}"),
            asyncio.create_task(self._watchdog(), name=f"watchdog-{self.call_id}"),
            asyncio.create_task(self._flush_transcripts(), name=f"flusher-{self.call_id}"),
        ]
        for task in tasks:
            task.add_done_callback(self._task_done)
        try:
            await self._ended.wait()
        finally:
            # Covers cancellation of run() itself (process shutdown) as well.
            self.end(EndReason.DRAIN.value, close_code=CloseCode.GOING_AWAY)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._teardown()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A call task that dies of a bug ends its call (and only its call), logged."""
        if task.cancelled() or task.exception() is None:
            return
        log.error(
            "call task failed",
            exc_info=task.exception(),
            extra={"fields": {"call_id": self.call_id, "task": task.get_name()}},
        )
        self.fail(ErrorCode.INTERNAL)

    async def _teardown(self) -> None:
        ending = self._ending
        assert ending is not None  # set by end() before run() gets here
        for run in self._tools.values():
            if run.task is not None:
                run.task.cancel()
        await self._upstream.close()
        await self._close_client(ending)
        if self._handoff_token is not None and await self._handoff_taken():
            # Another instance continues this call: its end, transcript and slot are theirs.
            self.owns_slot = False
            self._metrics.calls.labels(reason="handed_off").inc()
            log.info("call handed off", extra={"fields": {"call_id": self.call_id}})
            return
        for role, text in self._stitcher.finish():
            self._uploader.add(role, text)
        duration = time.monotonic() - self._started
        if not await self._uploader.flush_final(attempts=4):
            log.error(
                "transcript segments lost",
                extra={"fields": {"call_id": self.call_id, "segments": self._uploader.pending}},
            )
        try:
            await self._deps.api.end_call(
                self.call_id,
                duration_ms=int(duration * 1000),
                end_reason=ending.reason,
                usage=self._usage.as_dict(),
            )
        except (ApiUnavailable, ApiRejected) as exc:
            log.error(
                "call end not recorded",
                extra={"fields": {"call_id": self.call_id, "error": str(exc)}},
            )
        self._metrics.calls.labels(reason=ending.reason).inc()
        self._metrics.call_duration.observe(duration)
        log.info(
            "call ended",
            extra={
                "fields": {
                    "call_id": self.call_id,
                    "reason": ending.reason,
                    "duration_s": round(duration, 3),
                }
            },
        )

    async def _close_client(self, ending: _Ending) -> None:
        if ending.error is not None:
            self._metrics.client_errors.labels(code=ending.error.value).inc()
        if self._ws.closed:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                if ending.error is not None:
                    await self._ws.send_str(error_event(ending.error, ending.message))
                await self._ws.send_str(event("session.ended", reason=ending.reason))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._ws.close(code=ending.close_code, message=ending.reason.encode())

    # -- browser side -------------------------------------------------------------------------

    async def _read_client(self) -> None:
        max_frame = self._settings.max_frame_bytes
        while True:
            message = await self._ws.receive()
            self._last_client_frame = time.monotonic()
            if message.type is WSMsgType.BINARY:
                data: bytes = message.data
                if len(data) > max_frame:
                    return self.fail(ErrorCode.FRAME_TOO_LARGE)
                if len(data) % 2:
                    return self.fail(ErrorCode.BAD_FRAME)
                if not (self._frames.take(1) and self._audio_bytes.take(len(data))):
                    return self.fail(ErrorCode.RATE_LIMITED)
                self._on_client_audio(data)
            elif message.type is WSMsgType.TEXT:
                text: str = message.data
                if len(text) > max_frame:
                    return self.fail(ErrorCode.FRAME_TOO_LARGE)
                if not self._frames.take(1):
                    return self.fail(ErrorCode.RATE_LIMITED)
                try:
                    client_event = parse_text_frame(text)
                except ClientFrameError as exc:
                    if exc.code.spec.close_code is not None:
                        return self.fail(exc.code)
                    self._report(exc.code)
                    continue
                if client_event == ClientEvent.END:
                    return self.end(self._leaving_reason(EndReason.HANGUP))
                if client_event == ClientEvent.PING:
                    self.send_event(event("pong"))
            elif message.type is WSMsgType.ERROR:
                if self._ws.close_code == CloseCode.MESSAGE_TOO_BIG:
                    # Far over the limit: aiohttp closed the socket (1009) before we saw it.
                    return self.fail(ErrorCode.FRAME_TOO_LARGE)
                return self.end(self._leaving_reason(EndReason.CLIENT_GONE))
            else:  # CLOSE, CLOSING, CLOSED
                return self.end(self._leaving_reason(EndReason.CLIENT_GONE))

    def _leaving_reason(self, reason: EndReason) -> str:
        """A widget that leaves after a handoff offer is moving, not hanging up."""
        return (EndReason.DRAIN if self._handoff_token is not None else reason).value

    def _report(self, code: ErrorCode) -> None:
        self._metrics.client_errors.labels(code=code.value).inc()
        self.send_event(error_event(code))

    def _on_client_audio(self, data: bytes) -> None:
        if self._handoff_token is not None:
            return  # the model session has moved on; the widget is about to follow it
        if not self._ready:
            if not self._not_ready_reported:
                self._not_ready_reported = True
                self._report(ErrorCode.NOT_READY)
            return
        if data and peak_amplitude(data) >= SPEECH_PEAK:
            self._last_speech_at = time.monotonic()
        if self._inbound.full():
            # The model side is behind (resuming, or slow): real-time audio keeps the newest.
            self._inbound.get_nowait()
            self._metrics.dropped_frames.inc()
        self._inbound.put_nowait(data)

    async def _write_client(self) -> None:
        try:
            while True:
                item = await self._outbound.get()
                if isinstance(item, bytes):
                    await self._ws.send_bytes(item)
                else:
                    await self._ws.send_str(item)
        except (ConnectionError, RuntimeError):
            self.end(EndReason.CLIENT_GONE.value)

    async def _to_client_audio(self, pcm: bytes) -> None:
        if self._outbound.full():
            try:
                async with asyncio.timeout(self._settings.slow_client_seconds):
                    await self._outbound.put(pcm)
            except TimeoutError:
                self.fail(ErrorCode.CLIENT_TOO_SLOW)
                return
        else:
            self._outbound.put_nowait(pcm)
        self._metrics.audio_frames_out.inc()

    def _flush_client_audio(self) -> None:
        """Drop model audio not yet sent (barge-in); keep queued events in order."""
        kept = []
        while not self._outbound.empty():
            item = self._outbound.get_nowait()
            if isinstance(item, str):
                kept.append(item)
        for item in kept:
            self._outbound.put_nowait(item)

    async def _watchdog(self) -> None:
        idle_limit = self._settings.idle_timeout_seconds
        while True:
            now = time.monotonic()
            if now - self._started >= self._max_seconds:
                return self.fail(ErrorCode.MAX_DURATION)
            if now - self._last_client_frame >= idle_limit:
                return self.fail(ErrorCode.IDLE_TIMEOUT)
            next_check = min(
                self._started + self._max_seconds, self._last_client_frame + idle_limit
            )
            await asyncio.sleep(max(0.05, min(1.0, next_check - now)))

    async def _flush_transcripts(self) -> None:
        while True:
            await asyncio.sleep(self._settings.transcript_flush_seconds)
            await self._uploader.flush()

    # -- model side ---------------------------------------------------------------------------

    async def _run_upstream(self) -> None:
        sender: asyncio.Task[None] | None = None
        try:
            await self._upstream.connect()
            self._ready = True
            self.send_event(
                event(
                    "session.started",
                    call_id=self.call_id,
                    input_rate=INPUT_RATE,
                    output_rate=OUTPUT_RATE,
                    resumed=self._resumed,
                )
            )
            sender = asyncio.create_task(self._send_upstream())
            async for message in self._upstream.messages():
                await self._on_model_message(message)
                if self.ended:
                    return
        except UpstreamFailed as exc:
            log.warning(
                "gemini session failed",
                extra={"fields": {"call_id": self.call_id, "error": str(exc)}},
            )
            self.fail(exc.code)
        except Exception:
            log.exception("call failed", extra={"fields": {"call_id": self.call_id}})
            self.fail(ErrorCode.INTERNAL)
        finally:
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, UpstreamFailed):
                    await sender

    async def _send_upstream(self) -> None:
        try:
            while True:
                frames = [await self._inbound.get()]
                # Frames that piled up while the last send ran go as one message: no delay
                # when the gateway keeps up, far fewer (costly) SDK messages when it does not.
                size = len(frames[0])
                while size < MAX_UPSTREAM_CHUNK_BYTES and not self._inbound.empty():
                    frames.append(self._inbound.get_nowait())
                    size += len(frames[-1])
                await self._upstream.send_audio(frames[0] if len(frames) == 1 else b"".join(frames))
                self._metrics.audio_frames_in.inc(len(frames))
        except UpstreamFailed as exc:
            self.fail(exc.code)

    async def _on_model_message(self, message: ServerMessage) -> None:
        if isinstance(message, ModelAudio):
            for pcm in message.chunks:
                await self._on_model_audio(pcm)
            return
        if message.usage_metadata is not None:
            self._usage.add(message.usage_metadata)
        content = message.server_content
        if content is not None:
            await self._on_server_content(content)
        if message.tool_call is not None:
            for call in message.tool_call.function_calls or []:
                self._start_tool(call)
        if message.tool_call_cancellation is not None:
            for tool_id in message.tool_call_cancellation.ids or []:
                self._cancel_tool(tool_id)

    async def _on_model_audio(self, pcm: bytes) -> None:
        if not self._model_speaking:
            self._model_speaking = True
            if self._last_speech_at is not None:
                self._metrics.response_latency.observe(time.monotonic() - self._last_speech_at)
                self._last_speech_at = None
        await self._to_client_audio(pcm)

    async def _on_server_content(self, content: types.LiveServerContent) -> None:
        if content.input_transcription is not None and content.input_transcription.text:
            text = self._stitcher.add(USER, content.input_transcription.text)
            self.send_event(event("transcript", role=USER, text=text, final=False))
        if content.model_turn is not None:
            for part in content.model_turn.parts or []:
                if part.inline_data is not None and part.inline_data.data:
                    await self._on_model_audio(part.inline_data.data)
        if content.output_transcription is not None and content.output_transcription.text:
            text = self._stitcher.add(AGENT, content.output_transcription.text)
            self.send_event(event("transcript", role=AGENT, text=text, final=False))
        if content.interrupted:
            # Barge-in: the caller talks over the model; stop its playback at once.
            self._flush_client_audio()
            self.send_event(event("interrupted"))
            self._model_speaking = False
        if content.turn_complete:
            for role, text in self._stitcher.finish():
                self._uploader.add(role, text)
                self.send_event(event("transcript", role=role, text=text, final=True))
            self.send_event(event("turn.complete"))
            self._model_speaking = False

    # -- tools --------------------------------------------------------------------------------

    def _start_tool(self, call: types.FunctionCall) -> None:
        name = call.name or ""
        args = dict(call.args or {})
        # Id-less calls are de-duplicated on their content.
        key = call.id or "noid:" + name + ":" + json.dumps(args, sort_keys=True, default=str)
        if key in self._tools:
            self._metrics.tool_calls.labels(outcome="duplicate").inc()
            return
        tool_id = call.id or f"gw-{uuid.uuid4().hex[:16]}"
        run = _ToolRun(name=name, ids={tool_id, key})
        self._tools[key] = run
        if tool_id != key:
            self._tools[tool_id] = run
        self.send_event(event("tool", name=name, status="started"))
        run.task = asyncio.create_task(self._run_tool(run, tool_id, name, args))

    def _cancel_tool(self, tool_id: str) -> None:
        run = self._tools.get(tool_id)
        if run is None or run.done or run.task is None:
            return
        run.task.cancel()
        run.done = True
        self._metrics.tool_calls.labels(outcome="cancelled").inc()
        self.send_event(event("tool", name=run.name, status="cancelled"))

    async def _run_tool(self, run: _ToolRun, tool_id: str, name: str, args: dict[str, Any]) -> None:
        outcome = await self._deps.api.execute_tool(
            call_id=self.call_id,
            name=name,
            arguments=args,
            timeout_seconds=self._settings.tool_timeout_seconds,
        )
        if run.done:  # cancelled while the request finished
            return
        run.done = True
        if outcome.get("ok"):
            response: dict[str, Any] = {"output": outcome.get("result")}
            status, metric = "succeeded", "succeeded"
        else:
            error = outcome.get("error") or {}
            response = {"error": error}
            status = "failed"
            metric = "timeout" if error.get("code") == "tool_timeout" else "failed"
        self._metrics.tool_calls.labels(outcome=metric).inc()
        self.send_event(event("tool", name=name, status=status))
        try:
            await self._upstream.send_tool_response(
                types.FunctionResponse(id=tool_id, name=name, response=response)
            )
        except UpstreamFailed as exc:
            self.fail(exc.code)
