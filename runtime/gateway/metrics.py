"""Prometheus metrics of one gateway process, in their own registry (no module globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "orbis_gateway_connections", "Widget calls connected now", registry=self.registry
        )
        self.connections_peak = Gauge(
            "orbis_gateway_connections_peak",
            "Most widget calls connected at once since start",
            registry=self.registry,
        )
        self.calls = Counter(
            "orbis_gateway_calls", "Calls ended, by end reason", ["reason"], registry=self.registry
        )
        self.call_duration = Histogram(
            "orbis_gateway_call_duration_seconds",
            "Length of ended calls",
            buckets=(5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600),
            registry=self.registry,
        )
        self.response_latency = Histogram(
            "orbis_gateway_response_latency_seconds",
            "Time from the end of the caller's speech to the model's first audio of the turn",
            buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
            registry=self.registry,
        )
        self.gemini_errors = Counter(
            "orbis_gateway_gemini_errors",
            "Gemini Live errors, by WebSocket close code or error kind",
            ["code"],
            registry=self.registry,
        )
        self.resumptions = Counter(
            "orbis_gateway_resumptions",
            "Upstream session resumptions, by cause and outcome",
            ["cause", "outcome"],
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "orbis_gateway_tool_calls",
            "Tool calls, by outcome (succeeded, failed, timeout, cancelled, duplicate)",
            ["outcome"],
            registry=self.registry,
        )
        self.client_errors = Counter(
            "orbis_gateway_client_errors",
            "Errors reported to widgets, by code",
            ["code"],
            registry=self.registry,
        )
        self.audio_frames = Counter(
            "orbis_gateway_audio_frames",
            "Audio frames relayed, by direction (in: caller to model, out: model to caller)",
            ["direction"],
            registry=self.registry,
        )
        # Counted for every frame of every call: the label lookup is done once, not per frame.
        self.audio_frames_in = self.audio_frames.labels(direction="in")
        self.audio_frames_out = self.audio_frames.labels(direction="out")
        self.dropped_frames = Counter(
            "orbis_gateway_dropped_audio_frames",
            "Caller audio frames dropped because the upstream queue was full",
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "orbis_gateway_redis_errors",
            "Failed Redis operations, by operation",
            ["operation"],
            registry=self.registry,
        )
        self.transcript_upload_failures = Counter(
            "orbis_gateway_transcript_upload_failures",
            "Transcript batches the API did not accept on a try (retried later)",
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "orbis_gateway_event_loop_lag_seconds",
            "How late the event loop ran a 25 ms timer: what every relayed frame waits",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.own_loop_lag = Histogram(
            "orbis_gateway_event_loop_own_lag_seconds",
            "The event loop's lag less the time its thread waited for a CPU (another "
            "process's use): the gateway's own load, which new calls are judged on",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.overloaded = Gauge(
            "orbis_gateway_overloaded",
            "1 while the event loop's own lag has been over ORBIS_MAX_LOOP_LAG_MS for seconds and new "
            "calls are refused",
            registry=self.registry,
        )

        self._current = 0
        self._peak = 0

    def connection_opened(self) -> None:
        self._current += 1
        self._peak = max(self._peak, self._current)
        self.connections.set(self._current)
        self.connections_peak.set(self._peak)

    def connection_closed(self) -> None:
        self._current -= 1
        self.connections.set(self._current)
