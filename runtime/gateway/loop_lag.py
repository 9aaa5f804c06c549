"""How late the gateway's event loop runs, and whether it is too late to take more calls.

Every frame of every call goes through the one event loop, so how late a timer fires is how
long a frame waits: the added latency every caller hears. The monitor sleeps a short interval
and measures the overshoot; while the 90th percentile of the last second's samples is over the
limit, the process is overloaded and new calls get `server_busy` (503 + Retry-After, which the
widget retries, landing elsewhere with several replicas). The calls it has keep their quality
instead of every call degrading together (docs/benchmarks.md, "Overload").
"""

from __future__ import annotations

import asyncio
import collections
import logging

from prometheus_client import Gauge, Histogram

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_SECONDS = 0.025
WINDOW_SAMPLES = 40  # one second
# Judged on the 90th percentile: near the tail callers hear, yet a lone stall (a GC pass, a
# batch of lease renewals) is under it.
QUANTILE = 0.9


class LoopLag:
    def __init__(self, *, limit_seconds: float, histogram: Histogram, overloaded: Gauge) -> None:
        """`limit_seconds` 0 turns the shedding off; the lag is still measured."""
        self._limit = limit_seconds
        self._histogram = histogram
        self._overloaded_gauge = overloaded
        self._samples: collections.deque[float] = collections.deque(maxlen=WINDOW_SAMPLES)
        self.overloaded = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + SAMPLE_INTERVAL_SECONDS
            await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)
            self._record(max(0.0, loop.time() - due))

    def _record(self, lag: float) -> None:
        self._samples.append(lag)
        self._histogram.observe(lag)
        # A whole second of samples first: start-up alone makes a few late ones.
        if self._limit <= 0 or len(self._samples) < WINDOW_SAMPLES:
            return
        tail = sorted(self._samples)[int(QUANTILE * WINDOW_SAMPLES)]
        overloaded = tail > self._limit
        if overloaded != self.overloaded:
            self.overloaded = overloaded
            self._overloaded_gauge.set(int(overloaded))
            fields = {"loop_lag_p90_ms": round(1000 * tail, 1), "limit_ms": 1000 * self._limit}
            if overloaded:
                log.warning("overloaded: refusing new calls", extra={"fields": fields})
            else:
                log.info("taking new calls again", extra={"fields": fields})
