"""Close codes and reasons, as the real service sends them."""

from __future__ import annotations

CLOSE_INVALID_ARGUMENT = 1007
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_GOING_AWAY = 1001
REASON_INTERNAL = "Internal error encountered."
REASON_DEADLINE = "Deadline expired before operation could complete."
REASON_BAD_KEY = "API key not valid. Please pass a valid API key."
REASON_EXHAUSTED = "Resource has been exhausted (e.g. check quota)."
REASON_BAD_HANDLE = "Session resumption handle is invalid or has expired."
REASON_SHUTDOWN = "The service is shutting down."
