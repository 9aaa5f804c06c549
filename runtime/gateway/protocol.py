"""The widget <-> gateway wire protocol: events, error codes and close codes (docs/protocol.md).

Binary frames carry PCM16 little-endian mono audio; text frames carry one JSON object with a
`type`. Every error a client can meet has a stable `code` listed in `ErrorCode`.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from runtime.common import jsonbound

INPUT_RATE = 16_000
OUTPUT_RATE = 24_000
INPUT_MIME_TYPE = f"audio/pcm;rate={INPUT_RATE}"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the gateway uses (RFC 6455 section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


@dataclass(frozen=True)
class ErrorSpec:
    message: str
    # None: the error is reported and the call goes on.
    close_code: CloseCode | None
    # The HTTP status when the error rejects the WebSocket handshake itself.
    http_status: int | None = None


class ErrorCode(enum.StrEnum):
    TOKEN_INVALID = "token_invalid"  # noqa: S105 - an error code, not a secret
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    SERVER_BUSY = "server_busy"
    SERVICE_UNAVAILABLE = "service_unavailable"
    CALL_LIMIT_REACHED = "call_limit_reached"
    FRAME_TOO_LARGE = "frame_too_large"
    BAD_FRAME = "bad_frame"
    BAD_JSON = "bad_json"
    UNKNOWN_EVENT = "unknown_event"
    NOT_READY = "not_ready"
    RATE_LIMITED = "rate_limited"
    CLIENT_TOO_SLOW = "client_too_slow"
    IDLE_TIMEOUT = "idle_timeout"
    MAX_DURATION = "max_duration"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_REJECTED = "upstream_rejected"
    INTERNAL = "internal"

    @property
    def spec(self) -> ErrorSpec:
        return ERRORS[self]


ERRORS: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.TOKEN_INVALID: ErrorSpec(
        "the call token is missing, unknown, already used or expired; request a new session",
        None,
        401,
    ),
    ErrorCode.ORIGIN_NOT_ALLOWED: ErrorSpec(
        "this page's origin is not allowed to call this agent", None, 403
    ),
    ErrorCode.SERVER_BUSY: ErrorSpec(
        "this gateway is full, overloaded or shutting down; retry shortly",
        CloseCode.TRY_AGAIN_LATER,
        503,
    ),
    ErrorCode.SERVICE_UNAVAILABLE: ErrorSpec(
        "a backing service is unavailable; retry shortly", CloseCode.TRY_AGAIN_LATER, 503
    ),
    ErrorCode.CALL_LIMIT_REACHED: ErrorSpec(
        "too many calls are in progress for this agent or organisation; retry later",
        CloseCode.TRY_AGAIN_LATER,
    ),
    ErrorCode.FRAME_TOO_LARGE: ErrorSpec(
        "a frame exceeded the maximum frame size", CloseCode.MESSAGE_TOO_BIG
    ),
    ErrorCode.BAD_FRAME: ErrorSpec(
        "binary frames must hold whole PCM16 samples (an even number of bytes)",
        CloseCode.INVALID_PAYLOAD,
    ),
    ErrorCode.BAD_JSON: ErrorSpec(
        'text frames must be a JSON object with a string "type"', CloseCode.INVALID_PAYLOAD
    ),
    ErrorCode.UNKNOWN_EVENT: ErrorSpec("unknown event type; the event was ignored", None),
    ErrorCode.NOT_READY: ErrorSpec(
        "audio sent before session.started was dropped; wait for session.started", None
    ),
    ErrorCode.RATE_LIMITED: ErrorSpec(
        "frames or audio arrive faster than real time", CloseCode.POLICY_VIOLATION
    ),
    ErrorCode.CLIENT_TOO_SLOW: ErrorSpec(
        "the client stopped reading the model's audio", CloseCode.POLICY_VIOLATION
    ),
    ErrorCode.IDLE_TIMEOUT: ErrorSpec("no frames from the client for too long", CloseCode.NORMAL),
    ErrorCode.MAX_DURATION: ErrorSpec("the call reached its maximum length", CloseCode.NORMAL),
    ErrorCode.UPSTREAM_UNAVAILABLE: ErrorSpec(
        "the voice model could not be reached", CloseCode.INTERNAL_ERROR
    ),
    ErrorCode.UPSTREAM_REJECTED: ErrorSpec(
        "the voice model refused the session", CloseCode.INTERNAL_ERROR
    ),
    ErrorCode.INTERNAL: ErrorSpec("internal gateway error", CloseCode.INTERNAL_ERROR),
}


class ClientEvent(enum.StrEnum):
    END = "end"
    PING = "ping"


class EndReason(enum.StrEnum):
    """Why a call ended, as sent in `session.ended` and to the API's call end."""

    HANGUP = "hangup"
    CLIENT_GONE = "client_gone"
    ENDED_REMOTELY = "ended_remotely"
    DRAIN = "drain"


def event(event_type: str, **fields: Any) -> str:
    return json.dumps({"type": event_type, **fields}, separators=(",", ":"))


def error_event(code: ErrorCode, message: str | None = None) -> str:
    return event("error", code=code.value, message=message or code.spec.message)


class ClientFrameError(Exception):
    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code.value)
        self.code = code


def parse_text_frame(data: str) -> str:
    """The event type of a client text frame; raises ClientFrameError when malformed."""
    try:
        message = jsonbound.loads(data)
    except ValueError:  # not JSON, or nested too deep (JsonTooDeepError)
        raise ClientFrameError(ErrorCode.BAD_JSON) from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ClientFrameError(ErrorCode.BAD_JSON)
    event_type: str = message["type"]
    if event_type not in ClientEvent.__members__.values():
        raise ClientFrameError(ErrorCode.UNKNOWN_EVENT)
    return event_type
