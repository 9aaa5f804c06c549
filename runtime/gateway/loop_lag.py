"""How late the gateway's event loop runs, and whether its own load leaves room for more calls.

Every frame of every call goes through the one event loop, so how late a timer fires is how
long a frame waits: the added latency every caller hears. The monitor sleeps a short interval
and measures the overshoot. Part of it can be another process's doing: on a shared host the
loop's thread waits for a CPU (its run-queue wait, which Linux reports in
/proc/thread-self/schedstat), and refusing calls would not give that time back. The judge
therefore takes the *own lag*: the overshoot less the run-queue wait during the same sample.

- **Late**: the 90th percentile of the last second's own-lag samples is over the limit. New
  call set-ups then wait (they are not refused): a burst of set-ups (a rolling restart moving
  many calls at once) goes through a few at a time, each only after a sample on time, so the
  calls already held keep their latency and the burst is not mistaken for load.
- **Overloaded**: late for `SUSTAINED_SECONDS` without a break, i.e. the calls it holds are
  more than it can carry. New calls, and set-ups still waiting, get `server_busy` (503 +
  Retry-After, which the widget retries, landing elsewhere with several replicas). It takes
  calls again after `RECOVERED_SECONDS` without being late (docs/benchmarks.md, "Overload").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os

from prometheus_client import Gauge, Histogram

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_SECONDS = 0.025
WINDOW_SAMPLES = 40  # one second
# Judged on the 90th percentile: near the tail callers hear, yet a lone stall (a GC pass, a
# batch of lease renewals) is under it.
QUANTILE = 0.9
# Late this long without a break is the gateway's own sustained load, not a burst of set-ups
# (which wait meanwhile, so they cannot keep it late by themselves).
SUSTAINED_SECONDS = 3.0
RECOVERED_SECONDS = 2.0
# Set-ups that may start on one sample on time, and how many may be saved up while idle.
SETUPS_PER_SAMPLE = 2
SETUP_BURST = 4
SCHEDSTAT = "/proc/thread-self/schedstat"


class RunQueueClock:
    """Seconds the calling thread has waited for a CPU since it started (0 where unknown)."""

    def __init__(self) -> None:
        # Opened from the loop's own thread: thread-self is resolved when opened.
        try:
            self._fd: int | None = os.open(SCHEDSTAT, os.O_RDONLY)
            self.read()
        except (OSError, ValueError, IndexError):
            log.info("no run-queue wait (%s): the loop's lag is judged as measured", SCHEDSTAT)
            self._fd = None

    def read(self) -> float:
        if self._fd is None:
            return 0.0
        return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LoopLag:
    def __init__(
        self,
        *,
        limit_seconds: float,
        histogram: Histogram,
        own_histogram: Histogram,
        overloaded: Gauge,
    ) -> None:
        """`limit_seconds` 0 turns the shedding (and the pacing of set-ups) off; the lag is
        still measured."""
        self._limit = limit_seconds
        self._histogram = histogram
        self._own_histogram = own_histogram
        self._overloaded_gauge = overloaded
        self._samples: collections.deque[float] = collections.deque(maxlen=WINDOW_SAMPLES)
        self._setups = SETUP_BURST
        self._waiting: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._since = 0.0  # loop time when `late` last changed
        self.late = False
        self.overloaded = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        run_queue = RunQueueClock()
        self._since = loop.time()
        try:
            while True:
                waited = run_queue.read()
                due = loop.time() + SAMPLE_INTERVAL_SECONDS
                await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)
                now = loop.time()
                lag = max(0.0, now - due)
                self._record(lag, max(0.0, lag - (run_queue.read() - waited)), now)
        finally:
            run_queue.close()
            self._answer_all(admitted=False)

    async def admit(self, *, within: float) -> bool:
        """Wait for a set-up slot: False if the gateway is (or becomes) overloaded, or no slot
        came `within` seconds."""
        if self._limit <= 0:
            return True
        if self.overloaded:
            return False
        if self._setups > 0 and not self._waiting:
            self._setups -= 1
            return True
        slot = asyncio.get_running_loop().create_future()
        self._waiting.append(slot)
        try:
            async with asyncio.timeout(within):
                admitted: bool = await slot
                return admitted
        except TimeoutError:
            return False
        finally:
            # Timed out, or the handshake was cancelled (the caller went away).
            slot.cancel()
            with contextlib.suppress(ValueError):
                self._waiting.remove(slot)

    def _record(self, lag: float, own: float, now: float) -> None:
        self._samples.append(own)
        self._histogram.observe(lag)
        self._own_histogram.observe(own)
        if self._limit <= 0:
            return
        # A whole second of samples first: start-up alone makes a few late ones.
        tail = (
            sorted(self._samples)[int(QUANTILE * WINDOW_SAMPLES)]
            if len(self._samples) == WINDOW_SAMPLES
            else 0.0
        )
        late = tail > self._limit
        if late != self.late:
            self.late, self._since = late, now
        held = now - self._since
        if not self.overloaded and late and held >= SUSTAINED_SECONDS:
            self._set_overloaded(True, tail)
            self._answer_all(admitted=False)
        elif self.overloaded and not late and held >= RECOVERED_SECONDS:
            self._set_overloaded(False, tail)
        if not late and not self.overloaded and own <= self._limit:
            self._setups = min(SETUP_BURST, self._setups + SETUPS_PER_SAMPLE)
            while self._setups > 0 and self._waiting:
                self._setups -= 1
                self._waiting.popleft().set_result(True)

    def _answer_all(self, *, admitted: bool) -> None:
        while self._waiting:
            self._waiting.popleft().set_result(admitted)

    def _set_overloaded(self, overloaded: bool, tail: float) -> None:
        self.overloaded = overloaded
        self._overloaded_gauge.set(int(overloaded))
        fields = {"loop_lag_p90_ms": round(1000 * tail, 1), "limit_ms": 1000 * self._limit}
        if overloaded:
            log.warning("overloaded: refusing new calls", extra={"fields": fields})
        else:
            log.info("taking new calls again", extra={"fields": fields})
