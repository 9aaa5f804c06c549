"""The model's side of one emulated session: scripted replies and the tool calls they make.

One reply task at a time: a new turn queues behind the one in progress, which barge-in stops at
its next chunk. A turn may call a function; the reply after the tool response is its own task.
Faults of the scenario strike here, each at most once per turn of the session's lineage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from runtime.emulator import wire
from runtime.emulator.audio import OUTPUT_RATE, pcm_byte_count, synthetic_speech
from runtime.emulator.closes import CLOSE_INTERNAL, REASON_EXHAUSTED, REASON_INTERNAL
from runtime.emulator.context import EmulatorContext
from runtime.emulator.scenario import Control, Faults, Reply, Scenario, Turn
from runtime.emulator.state import Lineage, SessionRecord, append_bounded

log = logging.getLogger(__name__)

AUDIO_TOKENS_PER_SECOND = 32  # Gemini's documented rate for audio in and out
# Turns queue behind the reply in progress; a client starting turns faster than they can be
# answered (a flood) is cut off rather than allowed to pile up tasks.
MAX_QUEUED_REPLIES = 16
FRAGMENT_CHARS = 4  # size of the pieces a "fragment_transcriptions" fault cuts text into


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


def audio_tokens(duration_ms: float) -> int:
    return math.ceil(duration_ms / 1000 * AUDIO_TOKENS_PER_SECOND)


class SessionPort(Protocol):
    """What the turns need of their session (`session.LiveSession`, which owns them): what it
    was admitted with, its connection, and its resumption handle once a turn is complete."""

    context: EmulatorContext
    record: SessionRecord
    setup: wire.SetupRequest | None
    scenario: Scenario
    control: Control
    lineage: Lineage
    next_turn: int

    async def send(self, message: wire.JsonObject) -> bool: ...

    async def send_encoded(self, data: bytes) -> bool: ...

    async def send_resumption_update(self) -> None: ...

    def request_close(self, code: int, reason: str) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    @property
    def task_count(self) -> int: ...


class ModelTurns:
    """The replies and the pending tool call of one session."""

    def __init__(self, session: SessionPort) -> None:
        self._session = session
        self._reply_task: asyncio.Task[None] | None = None
        self._stop_reply = False  # set by barge-in: the reply in progress stops at its next chunk
        self.pending: PendingToolCall | None = None

    def busy(self) -> bool:
        """A reply or tool call in flight (a reply completing its own turn does not count)."""
        return self.pending is not None or (
            self._reply_task is not None
            and not self._reply_task.done()
            and self._reply_task is not asyncio.current_task()
        )

    async def barge_in(self) -> None:
        """User speech while the model talks or a tool runs: stop the reply, cancel the call."""
        if self._reply_task is not None and not self._reply_task.done():
            self._stop_reply = True
        if self.pending is not None:
            ids = [call_id for call_id, _ in self.pending.calls if call_id is not None]
            self.pending = None
            if ids:
                await self._session.send(wire.tool_call_cancellation(ids))

    def begin(self, *, input_ms: float, usage: wire.Usage, from_audio: bool) -> None:
        if self._session.task_count > MAX_QUEUED_REPLIES:
            self._session.request_close(CLOSE_INTERNAL, REASON_EXHAUSTED)
            return
        if self._reply_task is not None and not self._reply_task.done():
            self._stop_reply = True
        self.pending = None  # superseded; its cancellation went out when the user spoke
        turn_index = self._session.next_turn
        self._session.next_turn += 1
        self._session.record.turns += 1
        self._session.context.stats.turns += 1
        previous = self._reply_task
        self._reply_task = self._session.spawn(
            self._play_turn(
                previous, turn_index, input_ms=input_ms, usage=usage, from_audio=from_audio
            )
        )

    async def on_tool_response(self, body: wire.JsonObject) -> None:
        responses = wire.function_responses(body)
        self._session.context.stats.tool_responses += len(responses)
        for response in responses:
            self._session.record.add_tool_response(response.id, response.name, response.response)
        pending = self.pending
        if pending is None:
            log.info(
                "tool response with no call pending",
                extra={"fields": {"session": self._session.record.id}},
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
        self._reply_task = self._session.spawn(
            self._after_tool(self._reply_task, pending, tool_text)
        )

    def _fire(self, faults: Faults, turn_index: int, name: str) -> bool:
        """Whether a fault set on this turn fires now (once per turn of the lineage)."""
        if not getattr(faults, name) or not self._session.lineage.fire_once(turn_index, name):
            return False
        self._session.context.stats.faults_fired[name] += 1
        append_bounded(self._session.record.faults_fired, name)
        log.info(
            "fault injected",
            extra={
                "fields": {"session": self._session.record.id, "fault": name, "turn": turn_index}
            },
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
        self._stop_reply = False
        turn = self._session.scenario.turn(turn_index)
        faults = self._session.scenario.faults.merged(self._session.control.faults).merged(
            turn.faults
        )
        # Fragmenting is harmless to repeat, so it applies every time; fired once for the record.
        self._fire(faults, turn_index, "fragment_transcriptions")
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        assert self._session.setup is not None
        if from_audio and self._session.setup.input_transcription and turn.input_transcription:
            texts = turn.input_transcription
            texts = texts if isinstance(texts, list) else [texts]
            split = faults.fragment_transcriptions
            for text in _fragments([self._fill(t, input_ms, None) for t in texts], split=split):
                await self._session.send(wire.input_transcription(text))
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
        self._session.context.stats.tool_calls += 1
        append_bounded(
            self._session.record.tool_calls,
            {"id": call_id, "name": call_name, "args": turn.tool_call.args},
        )
        self.pending = PendingToolCall(
            turn_index, turn, faults, input_ms, [(call_id, call_name)], usage
        )
        await self._session.send(message)
        if self._fire(faults, turn_index, "duplicate_tool_call"):
            await self._session.send(message)
        if self._fire(faults, turn_index, "cancel_tool_call"):
            self.pending = None
            await self._session.send(wire.tool_call_cancellation([call_id] if call_id else []))
            await self._finish_turn(usage)

    def _tool_name(self, turn: Turn) -> str | None:
        """The function this turn calls; None when it calls none (or the session declared none)."""
        assert self._session.setup is not None
        if turn.tool_call is None:
            return None
        if turn.tool_call.name is not None:
            return turn.tool_call.name
        return self._session.setup.function_names[0] if self._session.setup.function_names else None

    async def _after_tool(
        self, previous: asyncio.Task[None] | None, pending: PendingToolCall, tool_text: str
    ) -> None:
        if previous is not None:  # the call's own turn may still be sending (a duplicate call)
            await asyncio.gather(previous, return_exceptions=True)
        if pending.faults.latency_ms:
            await asyncio.sleep(pending.faults.latency_ms / 1000)
        self._stop_reply = False
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
        assert self._session.setup is not None
        duration = reply.duration_ms(input_ms)
        pcm = synthetic_speech(duration, reply.audio_kind, reply.frequency)
        chunk_bytes = pcm_byte_count(self._session.scenario.chunk_ms, OUTPUT_RATE)
        chunks = [pcm[i : i + chunk_bytes] for i in range(0, len(pcm), chunk_bytes)]
        texts: list[str] = []
        if self._session.setup.output_transcription:
            filled = [self._fill(t, input_ms, tool_text) for t in reply.text_fragments()]
            texts = _fragments(filled, split=faults.fragment_transcriptions)
        usage = wire.Usage(
            prompt_audio_tokens=usage.prompt_audio_tokens,
            prompt_text_tokens=usage.prompt_text_tokens,
            response_audio_tokens=usage.response_audio_tokens + audio_tokens(duration),
        )
        midpoint = len(chunks) // 2
        sent_texts = 0
        for index in range(len(chunks) + 1):
            if self._stop_reply:
                await self._session.send(wire.interrupted())
                await self._finish_turn(usage)
                return None
            if index == midpoint and await self._midpoint_faults(faults, turn_index, usage, final):
                return None
            if index == len(chunks):
                break
            chunk = chunks[index]
            if await self._session.send_encoded(wire.encoded_audio_chunk(chunk, OUTPUT_RATE)):
                self._session.record.audio_bytes_out += len(chunk)
                self._session.context.stats.audio_bytes_out += len(chunk)
            # Transcription trails the audio it belongs to, spread over the chunks.
            due = len(texts) * (index + 1) // len(chunks)
            for text in texts[sent_texts:due]:
                await self._session.send(wire.output_transcription(text))
            sent_texts = max(sent_texts, due)
            if self._session.scenario.pace:
                await asyncio.sleep(
                    self._session.scenario.chunk_ms / 1000 / self._session.scenario.pace
                )
        for text in texts[sent_texts:]:
            await self._session.send(wire.output_transcription(text))
        if not final:
            return usage
        await self._session.send(wire.generation_complete())
        if faults.interrupt == "after_turn_complete" and self._fire(
            faults, turn_index, "interrupt"
        ):
            await self._finish_turn(usage)
            await self._session.send(wire.interrupted())
            return None
        await self._finish_turn(usage)
        return usage

    async def _midpoint_faults(
        self, faults: Faults, turn_index: int, usage: wire.Usage, final: bool
    ) -> bool:
        """Faults that strike halfway through the audio; True when the reply must stop."""
        if self._fire(faults, turn_index, "close_1011_mid_turn"):
            self._session.request_close(CLOSE_INTERNAL, REASON_INTERNAL)
            return True
        if (
            final
            and faults.interrupt == "before_turn_complete"
            and self._fire(faults, turn_index, "interrupt")
        ):
            await self._session.send(wire.interrupted())
            await self._finish_turn(usage)
            return True
        if final and self._fire(faults, turn_index, "premature_turn_complete"):
            # The turn is declared complete while half of its audio is still to come.
            await self._session.send(wire.turn_complete(None))
        return False

    async def _finish_turn(self, usage: wire.Usage) -> None:
        await self._session.send(wire.turn_complete(usage))
        await self._session.send_resumption_update()
