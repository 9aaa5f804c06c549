"""The gateway process's shared state: live calls, and the loops that keep Redis in step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from runtime.gateway.call import Call, CallDeps
from runtime.gateway.loop_lag import LoopLag
from runtime.gateway.protocol import CloseCode, EndReason
from runtime.gateway.redis_state import END_CHANNEL, REDIS_ERRORS, CallState, parse_end_message

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    deps: CallDeps
    loop_lag: LoopLag
    calls: dict[str, Call] = field(default_factory=dict)
    # Handshakes past the capacity check but not yet registered as calls.
    opening: int = 0
    # Calls turned away since start because the instance was full or overloaded.
    refused_calls: int = 0
    draining: bool = False
    no_calls: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.no_calls.set()

    @property
    def state(self) -> CallState:
        return self.deps.state

    @property
    def busy(self) -> bool:
        """New calls are refused: draining, full, or the calls it has would suffer."""
        return (
            self.draining
            or len(self.calls) + self.opening >= self.deps.settings.max_calls
            or self.loop_lag.overloaded
        )

    def add(self, call: Call) -> None:
        self.calls[call.call_id] = call
        self.no_calls.clear()
        self.deps.metrics.connection_opened()
        if self.draining:
            # Its handshake passed the capacity check before the drain began, so the drain
            # did not see it: it has nothing to move yet, and starts afresh elsewhere.
            call.hint_reconnect("draining", retry_after_ms=0)

    def remove(self, call: Call) -> None:
        if self.calls.pop(call.call_id, None) is not None:
            self.deps.metrics.connection_closed()
        if not self.calls:
            self.no_calls.set()

    def end_call(self, call_id: str) -> bool:
        call = self.calls.get(call_id)
        if call is None:
            return False
        call.end(EndReason.ENDED_REMOTELY.value)
        return True

    async def heartbeat(self) -> None:
        """Renew every local call's lease; end those another instance asked to end."""
        interval = self.deps.settings.heartbeat_seconds
        while True:
            await asyncio.sleep(interval)
            # A call being handed off is renewed by the instance that takes it.
            records = [call.record for call in self.calls.values() if not call.handing_off]
            try:
                to_end = await self.state.renew(records)
            except REDIS_ERRORS as exc:
                self.deps.metrics.redis_errors.labels(operation="renew").inc()
                log.warning("call lease renewal failed", extra={"fields": {"error": str(exc)}})
                continue
            for call_id in to_end:
                self.end_call(call_id)

    async def listen_for_end_requests(self) -> None:
        """React at once to `request_call_end` (the heartbeat's flag check is the fallback)."""
        delay = 0.5
        while True:
            try:
                async with self.state.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(END_CHANNEL)
                    delay = 0.5
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and message.get("type") == "message":
                            call_id = parse_end_message(message.get("data"))
                            if call_id is not None:
                                self.end_call(call_id)
            except REDIS_ERRORS as exc:
                self.deps.metrics.redis_errors.labels(operation="subscribe").inc()
                log.warning("end-request subscription lost", extra={"fields": {"error": str(exc)}})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def drain(self, *, grace_seconds: float) -> None:
        """Stop taking calls, hint widgets to reconnect elsewhere, wait, then close the rest."""
        self.draining = True
        log.info("draining", extra={"fields": {"calls": len(self.calls), "grace_s": grace_seconds}})
        calls = list(self.calls.values())
        if grace_seconds > 0 and calls:
            # Each call moves to another instance with its model session (resumption handle)
            # and transcript numbering; a call that cannot is just told to reconnect.
            moved = await asyncio.gather(
                *(call.hand_off(wait_seconds=grace_seconds) for call in calls),
                return_exceptions=True,
            )
            for call, outcome in zip(calls, moved, strict=True):
                if outcome is not True:
                    call.hint_reconnect("draining", retry_after_ms=0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_seconds):
                await self.no_calls.wait()
        for call in list(self.calls.values()):
            call.end(EndReason.DRAIN.value, close_code=CloseCode.GOING_AWAY)
        with contextlib.suppress(TimeoutError):
            # Each call closes its sockets and reports its end; bounded so a stuck API cannot
            # hold the process forever.
            async with asyncio.timeout(30.0):
                await self.no_calls.wait()
