"""The two per-frame paths of a Live session, written against google-genai's internals.

Connecting, setup, configuration, resumption, tool responses and every message that is not
plain model audio stay on the SDK's public API. Only the hot paths are lean:

- **send**: caller audio is written as the exact JSON `AsyncSession.send_realtime_input(audio=
  Blob(...))` produces (`{"realtime_input":{"audio":{"data":<url-safe base64>,"mime_type":…}}}`),
  without its pydantic validation, converters and dict walks (~150 µs a message in 3.6.1);
- **receive**: a server message that carries nothing but model audio
  (`serverContent.modelTurn.parts[].inlineData` with an `audio/*` type) is decoded with plain
  `json`/`base64` into a `ModelAudio`; every other message goes through the SDK's own
  converter and `LiveServerMessage._from_response`, exactly as `AsyncSession._receive` does,
  including its close → `APIError` mapping and its error-dict case.

This module is the only place that touches private SDK names (`AsyncSession._ws`,
`AsyncSession._api_client`, `google.genai._live_converters`). They are pinned by
tests/gateway/test_live_wire.py, which compares every lean path with the SDK's own behaviour on
the wire, and by the upper bound on google-genai in pyproject.toml: a new SDK release has to
pass those tests before the bound moves.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from dataclasses import dataclass
from typing import Any

import websockets
from google.genai import _live_converters as live_converters
from google.genai import errors as genai_errors
from google.genai import live as genai_live
from google.genai import types
from websockets.asyncio.client import ClientConnection

_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_MODEL_TURN_KEYS = frozenset({"parts", "role"})
_INLINE_DATA_KEYS = {"mimeType", "data"}


@dataclass(frozen=True, slots=True)
class ModelAudio:
    """A server message that was only model audio: its PCM chunks, in order."""

    chunks: tuple[bytes, ...]


ServerMessage = ModelAudio | types.LiveServerMessage


@functools.cache
def _sdk_parse_kwargs() -> dict[str, Any]:
    """What `_receive` passes as kwargs (`LiveServerMessage().model_dump()`), made once."""
    return types.LiveServerMessage().model_dump()


def encode_realtime_audio(pcm: bytes, mime_type: str) -> str:
    """The text frame `send_realtime_input(audio=Blob(data=pcm, mime_type=...))` sends (mldev).

    The SDK's converters turn the Blob into `{"data": bytes, "mime_type": str}` (field order of
    `types.Blob`, `exclude_none`), `encode_unserializable_types` makes the bytes URL-safe base64,
    and `json.dumps` writes it with default separators.
    """
    data = base64.urlsafe_b64encode(pcm).decode("ascii")
    return json.dumps({"realtime_input": {"audio": {"data": data, "mime_type": mime_type}}})


def _decode_base64(data: str) -> bytes | None:
    """Canonical base64 in either alphabet, as pydantic decodes it; None for anything else."""
    try:
        raw = data.encode("ascii")
        return binascii.a2b_base64(raw.translate(_URLSAFE_TO_STANDARD), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        return None


def lean_model_audio(response: object) -> ModelAudio | None:
    """The audio of a message that holds model audio and nothing else; None otherwise.

    Deliberately narrow: one top-level key, one `serverContent` key, parts that are each a single
    `inlineData` with exactly an audio `mimeType` and non-empty, canonical base64 `data`. Any
    other shape (transcriptions, `turnComplete`, `interrupted`, usage, tool calls, `goAway`,
    resumption updates, snake-case keys, unknown fields) returns None and takes the SDK path.
    """
    if type(response) is not dict or len(response) != 1:
        return None
    content = response.get("serverContent")
    if type(content) is not dict or len(content) != 1:
        return None
    turn = content.get("modelTurn")
    if type(turn) is not dict or not turn.keys() <= _MODEL_TURN_KEYS:
        return None
    parts = turn.get("parts")
    if type(parts) is not list or not parts:
        return None
    chunks = []
    for part in parts:
        if type(part) is not dict or len(part) != 1:
            return None
        blob = part.get("inlineData")
        if type(blob) is not dict or blob.keys() != _INLINE_DATA_KEYS:
            return None
        mime_type, data = blob["mimeType"], blob["data"]
        if type(mime_type) is not str or not mime_type.startswith("audio/"):
            return None
        if type(data) is not str or not data:
            return None
        pcm = _decode_base64(data)
        if not pcm:
            return None
        chunks.append(pcm)
    return ModelAudio(tuple(chunks))


def parse_server_frame(raw: str | bytes) -> ServerMessage:
    """One server frame: lean model audio, or what `AsyncSession._receive` makes of it.

    Raises ValueError (not JSON) or `APIError` (an error object) as the SDK does.
    """
    if raw:
        try:
            response: Any = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Failed to parse response: {raw!r}") from exc
    else:
        response = {}
    audio = lean_model_audio(response)
    if audio is not None:
        return audio
    # Everything below is `AsyncSession._receive` (google-genai 3.6.1, mldev), line for line.
    response_dict = live_converters._LiveServerMessage_from_mldev(response)
    if not response_dict and response:
        genai_errors.APIError.raise_error(response.get("code"), response, None)
    return types.LiveServerMessage._from_response(
        response=response_dict, kwargs=_sdk_parse_kwargs()
    )


class LiveWire:
    """The lean send and receive of one connected `AsyncSession` (Gemini API, not Vertex)."""

    def __init__(self, session: genai_live.AsyncSession) -> None:
        if session._api_client.vertexai:
            # The Vertex converters differ (e.g. usage metadata); the gateway never uses Vertex.
            raise ValueError("the lean Live wire supports the Gemini API only, not Vertex AI")
        self._ws: ClientConnection = session._ws

    async def send_audio(self, pcm: bytes, mime_type: str) -> None:
        """Raises websockets' ConnectionClosed after a close, as `send_realtime_input` does."""
        await self._ws.send(encode_realtime_audio(pcm, mime_type))

    async def receive(self) -> ServerMessage:
        """The next server message; a close raises `APIError(code)` as `session.receive()` does."""
        try:
            raw = await self._ws.recv(decode=False)
        except websockets.exceptions.ConnectionClosed as exc:
            if exc.rcvd:
                code, reason = exc.rcvd.code, exc.rcvd.reason
            else:
                code = 1006
                reason = websockets.frames.CLOSE_CODE_EXPLANATIONS.get(code, "Abnormal closure.")
            genai_errors.APIError.raise_error(code, reason, None)
            raise  # raise_error always raises; this keeps the type checker informed
        return parse_server_frame(raw)
