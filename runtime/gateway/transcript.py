"""Transcripts: fragments stitched per turn, and batches uploaded to the API in order."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from runtime.gateway.internal_api import ApiRejected, ApiUnavailable, InternalApi
from runtime.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

USER = "user"
AGENT = "agent"


class TurnStitcher:
    """Joins a turn's transcription fragments (they arrive split, and out of step with audio)."""

    def __init__(self) -> None:
        self._text: dict[str, str] = {USER: "", AGENT: ""}

    def add(self, role: str, fragment: str) -> str:
        """Append a fragment; returns the turn's text so far."""
        # Fragments carry their own spacing (" there.", "How"), so they are joined as they are.
        self._text[role] += fragment
        return self._text[role].strip()

    def finish(self) -> list[tuple[str, str]]:
        """The turn's final (role, text) pairs, user first; resets for the next turn."""
        done = [(role, self._text[role].strip()) for role in (USER, AGENT)]
        self._text = {USER: "", AGENT: ""}
        return [(role, text) for role, text in done if text]


class TranscriptUploader:
    """Numbered segments sent in batches; kept until the API has them (idempotent on seq)."""

    def __init__(
        self, api: InternalApi, call_id: str, metrics: GatewayMetrics, *, next_seq: int = 1
    ) -> None:
        self._api = api
        self._call_id = call_id
        self._metrics = metrics
        self._pending: list[dict[str, Any]] = []
        self._next_seq = next_seq

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def add(self, role: str, text: str) -> None:
        self._pending.append(
            {
                "seq": self._next_seq,
                "role": role,
                "text": text,
                "at": datetime.now(UTC).isoformat(),
            }
        )
        self._next_seq += 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> bool:
        """Send what is pending; True when nothing is left. Failures keep segments for later."""
        if not self._pending:
            return True
        batch = list(self._pending)
        try:
            await self._api.post_transcript(self._call_id, batch)
        except ApiRejected as exc:
            # The API will not take this batch however often it is sent: drop it, say so.
            log.error(
                "transcript batch rejected",
                extra={
                    "fields": {"call_id": self._call_id, "status": exc.status, "code": exc.code}
                },
            )
        except ApiUnavailable as exc:
            self._metrics.transcript_upload_failures.inc()
            log.warning(
                "transcript upload failed; will retry",
                extra={"fields": {"call_id": self._call_id, "error": str(exc)}},
            )
            return False
        sent = {segment["seq"] for segment in batch}
        self._pending = [segment for segment in self._pending if segment["seq"] not in sent]
        return not self._pending

    async def flush_final(self, attempts: int) -> bool:
        """Last flush at call end, a few tries with backoff."""
        delay = 0.2
        for attempt in range(attempts):
            if await self.flush():
                return True
            if attempt + 1 < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 3, 3.0)
        return False
