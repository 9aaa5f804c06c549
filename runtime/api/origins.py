"""Which web origins may use an agent, and the CORS headers that say so."""

from __future__ import annotations

from collections.abc import Iterable


def normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str | None, *allowed: Iterable[str]) -> bool:
    if not origin:
        return False
    wanted = normalise_origin(origin)
    return any(normalise_origin(item) == wanted for group in allowed for item in group)


def cors_headers(origin: str, *, methods: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }
