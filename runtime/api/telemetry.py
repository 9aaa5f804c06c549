"""The API's Prometheus collectors, all in one registry owned by the application."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from runtime.common.metrics import LATENCY_BUCKETS, HttpMetrics


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http = HttpMetrics(self.registry, prefix="orbis_api")
        self.db_query_seconds = Histogram(
            "orbis_api_db_query_duration_seconds",
            "PostgreSQL query latency",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rate_limit_hits = Counter(
            "orbis_api_rate_limit_hits_total",
            "Requests refused by the rate limiter",
            ["scope"],
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "orbis_api_tool_calls_total",
            "Tool webhook calls by outcome",
            ["outcome"],
            registry=self.registry,
        )
