"""The Live wire format: reading client messages in either casing, writing server messages.

The SDK mixes snake_case and camelCase in what it sends (docs/emulator.md, "Casing"), so every
structural key is looked up in both spellings. Payloads the model does not interpret (function
`args`, JSON-schema `properties`, tool `response`) are passed through untouched. Server messages
use camelCase top-level keys only: anything else crashes the SDK's parser.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from runtime.common import jsonbound
from runtime.emulator.audio import encode_base64

JsonObject = dict[str, Any]

CLIENT_MESSAGE_KINDS = ("setup", "realtimeInput", "clientContent", "toolResponse")


class ProtocolError(ValueError):
    """A client message the real service would refuse (close 1007, invalid argument)."""


@functools.cache  # a small fixed vocabulary of field names, looked up on every message
def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def field_of(obj: object, camel_name: str) -> Any:
    """obj[camelName] or obj[snake_name]; None when absent or obj is not an object."""
    if not isinstance(obj, dict):
        return None
    if camel_name in obj:
        return obj[camel_name]
    return obj.get(snake(camel_name))


def parse_client_message(raw: str | bytes) -> tuple[str, JsonObject]:
    """Split a client frame into its kind (camelCase) and body; ProtocolError if unusable."""
    try:
        message = jsonbound.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("Invalid JSON payload received.") from exc
    if not isinstance(message, dict) or len(message) != 1:
        raise ProtocolError("Invalid JSON payload received. Expected exactly one message field.")
    (key, body), *_ = message.items()
    for kind in CLIENT_MESSAGE_KINDS:
        if key in (kind, snake(kind)):
            if not isinstance(body, dict):
                raise ProtocolError(f'Invalid value at "{key}": expected an object.')
            return kind, body
    raise ProtocolError(f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')


@dataclass(frozen=True)
class SetupRequest:
    """What the emulator uses from a `setup` message."""

    model: str
    system_instruction: str
    function_names: list[str]
    resumption_enabled: bool
    resumption_handle: str | None
    automatic_activity_detection: bool
    silence_duration_ms: int | None
    input_transcription: bool
    output_transcription: bool

    @classmethod
    def parse(cls, body: JsonObject) -> SetupRequest:
        model = body.get("model")
        if not isinstance(model, str) or not model.startswith("models/") or model == "models/":
            raise ProtocolError(
                'Invalid value at "setup.model": expected "models/{model}", got '
                f"{json.dumps(model)[:80]}."
            )
        instruction = field_of(body, "systemInstruction")
        texts: list[str] = []
        if isinstance(instruction, dict):
            texts = [str(part.get("text", "")) for part in instruction.get("parts") or []]
        elif isinstance(instruction, str):
            texts = [instruction]
        tools = body.get("tools") or []
        names = [
            str(declaration.get("name"))
            for tool in (tools if isinstance(tools, list) else [])
            for declaration in (field_of(tool, "functionDeclarations") or [])
            if isinstance(declaration, dict) and declaration.get("name")
        ]
        resumption = field_of(body, "sessionResumption")
        handle = field_of(resumption, "handle")
        detection = field_of(field_of(body, "realtimeInputConfig"), "automaticActivityDetection")
        silence_ms = field_of(detection, "silenceDurationMs")
        return cls(
            model=model,
            system_instruction="\n".join(texts),
            function_names=names,
            resumption_enabled=isinstance(resumption, dict),
            resumption_handle=handle if isinstance(handle, str) and handle else None,
            automatic_activity_detection=not bool(field_of(detection, "disabled")),
            silence_duration_ms=int(silence_ms) if isinstance(silence_ms, int | float) else None,
            input_transcription=field_of(body, "inputAudioTranscription") is not None,
            output_transcription=field_of(body, "outputAudioTranscription") is not None,
        )


def realtime_audio_chunks(body: JsonObject) -> list[str]:
    """Base64 audio payloads of a realtimeInput message (`audio` or the older `mediaChunks`)."""
    blobs: list[object] = []
    audio = field_of(body, "audio")
    if audio is not None:
        blobs.append(audio)
    blobs.extend(field_of(body, "mediaChunks") or [])
    chunks = []
    for blob in blobs:
        mime = str(field_of(blob, "mimeType") or "")
        data = field_of(blob, "data")
        if isinstance(data, str) and (not mime or mime.startswith("audio/")):
            chunks.append(data)
    return chunks


def client_content_text(body: JsonObject) -> str:
    turns = body.get("turns") or []
    if isinstance(turns, dict):
        turns = [turns]
    return " ".join(
        str(part.get("text", ""))
        for turn in turns
        if isinstance(turn, dict)
        for part in turn.get("parts") or []
        if isinstance(part, dict) and part.get("text")
    )


@dataclass(frozen=True)
class FunctionResponse:
    id: str | None
    name: str | None
    response: Any


def function_responses(body: JsonObject) -> list[FunctionResponse]:
    responses = field_of(body, "functionResponses") or []
    return [
        FunctionResponse(
            id=item.get("id") if isinstance(item.get("id"), str) else None,
            name=item.get("name") if isinstance(item.get("name"), str) else None,
            response=item.get("response"),
        )
        for item in responses
        if isinstance(item, dict)
    ]


# --- server messages (camelCase only) -------------------------------------------------------


def setup_complete() -> JsonObject:
    return {"setupComplete": {}}


def input_transcription(text: str) -> JsonObject:
    return {"serverContent": {"inputTranscription": {"text": text}}}


def output_transcription(text: str) -> JsonObject:
    return {"serverContent": {"outputTranscription": {"text": text}}}


def audio_chunk(pcm: bytes, rate: int) -> JsonObject:
    blob = {"mimeType": f"audio/pcm;rate={rate}", "data": encode_base64(pcm)}
    return {"serverContent": {"modelTurn": {"parts": [{"inlineData": blob}]}}}


@functools.lru_cache(maxsize=512)
def encoded_audio_chunk(pcm: bytes, rate: int) -> bytes:
    """`audio_chunk` serialised as `LiveSession.send` does, cached by content.

    Every session speaks the same synthetic audio (cut from one cached second per voice), so the
    same chunks are encoded over and over; caching them saves a base64 and a JSON dump per
    chunk per session. Bounded: 512 chunks of 40 ms is about 1 MB.
    """
    return json.dumps(audio_chunk(pcm, rate), separators=(",", ":")).encode()


def generation_complete() -> JsonObject:
    return {"serverContent": {"generationComplete": True}}


def interrupted() -> JsonObject:
    return {"serverContent": {"interrupted": True}}


@dataclass(frozen=True)
class Usage:
    prompt_audio_tokens: int = 0
    prompt_text_tokens: int = 0
    response_audio_tokens: int = 0

    def as_wire(self) -> JsonObject:
        prompt = self.prompt_audio_tokens + self.prompt_text_tokens
        return {
            "promptTokenCount": prompt,
            "responseTokenCount": self.response_audio_tokens,
            "totalTokenCount": prompt + self.response_audio_tokens,
            "promptTokensDetails": [
                {"modality": "AUDIO", "tokenCount": self.prompt_audio_tokens},
                {"modality": "TEXT", "tokenCount": self.prompt_text_tokens},
            ],
            "responseTokensDetails": [
                {"modality": "AUDIO", "tokenCount": self.response_audio_tokens}
            ],
        }


def turn_complete(usage: Usage | None) -> JsonObject:
    message: JsonObject = {"serverContent": {"turnComplete": True}}
    if usage is not None:
        message["usageMetadata"] = usage.as_wire()
    return message


def tool_call(calls: list[tuple[str | None, str, Any]]) -> JsonObject:
    function_calls = []
    for call_id, name, args in calls:
        call: JsonObject = {"name": name, "args": args}
        if call_id is not None:
            call = {"id": call_id, **call}
        function_calls.append(call)
    return {"toolCall": {"functionCalls": function_calls}}


def tool_call_cancellation(ids: list[str]) -> JsonObject:
    return {"toolCallCancellation": {"ids": ids}}


def session_resumption_update(handle: str | None) -> JsonObject:
    if handle is None:
        return {"sessionResumptionUpdate": {"resumable": False}}
    return {"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}}


def go_away(seconds: float) -> JsonObject:
    # google.protobuf.Duration in JSON: seconds with an "s" suffix, fractional if needed.
    return {"goAway": {"timeLeft": f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"}}
