"""Prometheus metrics with a registry per application (no process-wide default registry).

`HttpMetrics` holds the request metrics every service exposes; services add their own
collectors to the same registry.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry, *, prefix: str) -> None:
        self.registry = registry
        self.request_seconds = Histogram(
            f"{prefix}_http_request_duration_seconds",
            "HTTP request latency by route pattern",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.responses = Counter(
            f"{prefix}_http_responses_total",
            "HTTP responses by route pattern and status class (2xx, 4xx, 5xx)",
            ["method", "route", "status_class"],
            registry=registry,
        )

    def middleware(self) -> Middleware:
        @web.middleware
        async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                route = route_label(request)
                self.request_seconds.labels(request.method, route).observe(
                    time.perf_counter() - started
                )
                self.responses.labels(request.method, route, f"{status // 100}xx").inc()

        return measure


def route_label(request: web.Request) -> str:
    """The route's pattern (`/api/v1/agents/{agent_id}`), so label values stay bounded."""
    info = request.match_info.route.resource
    if info is None:
        return "unmatched"
    return info.canonical


def metrics_response(registry: CollectorRegistry) -> web.Response:
    body = generate_latest(registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
