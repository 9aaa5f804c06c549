"""One call's Gemini Live session through google-genai, resumed transparently when it drops.

What the SDK does on the wire, and how real sessions fail, is written down in docs/emulator.md
("What the SDK sends and accepts"): any close surfaces as `APIError(code)` from `receive()`,
1007/1008 are fatal, other closes (1011 "internal error", 1006 abnormal, the ~10-minute cap
announced by `goAway`) are resumed with the latest resumable handle after closing the old socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import websockets
from google import genai
from google.genai import errors as genai_errors
from google.genai import live as genai_live
from google.genai import types

from runtime.gateway.internal_api import AgentRuntime
from runtime.gateway.live_wire import LiveWire, ModelAudio, ServerMessage
from runtime.gateway.metrics import GatewayMetrics
from runtime.gateway.protocol import INPUT_MIME_TYPE, ErrorCode

log = logging.getLogger(__name__)

# Close codes after which the same session cannot go on (docs/emulator.md: invalid argument,
# policy/wrong model). Every other close is worth a resumption.
FATAL_CLOSE_CODES = frozenset({1007, 1008})


class UpstreamFailed(Exception):
    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail


def make_client(
    *, api_key: str, base_url: str, ca_file: str | None, ssl_context: ssl.SSLContext | None = None
) -> genai.Client:
    """The process's google-genai client; pointed at the emulator when `base_url` is set."""
    if not base_url:
        return genai.Client(api_key=api_key)
    context = ssl_context or ssl.create_default_context(cafile=ca_file)
    return genai.Client(
        api_key=api_key,
        http_options=types.HttpOptions(
            base_url=base_url,
            # Gemini's pongs can take 8-30 s, so websockets' default keepalive (20 s timeout)
            # kills healthy sessions; dead sockets surface through receive() instead.
            # No permessage-deflate: base64 audio barely compresses, and deflating every
            # frame on both ends cost more latency under load than it saved (bench/gateway.py).
            async_client_args={"ssl": context, "ping_interval": None, "compression": None},
        ),
    )


def live_config(agent: AgentRuntime) -> types.LiveConnectConfig:
    instructions = agent.instructions
    if agent.greeting:
        # A greeting as an instruction rather than a scripted first turn: the model speaks it
        # in its own voice when the caller first speaks, and no fake user turn is recorded.
        instructions = f"{instructions}\n\nOpen the conversation with: {agent.greeting}".strip()
    speech = types.SpeechConfig(
        voice_config=(
            types.VoiceConfig(
                prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=agent.voice)
            )
            if agent.voice
            else None
        ),
        language_code=agent.language or None,
    )
    tools = (
        [
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name=tool.name,
                        description=tool.description,
                        parameters_json_schema=tool.parameters or {"type": "object"},
                    )
                    for tool in agent.tools
                ]
            )
        ]
        if agent.tools
        else None
    )
    return types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        system_instruction=instructions or None,
        speech_config=speech,
        tools=tools,
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        session_resumption=types.SessionResumptionConfig(),
        context_window_compression=types.ContextWindowCompressionConfig(
            trigger_tokens=25_600,
            sliding_window=types.SlidingWindow(target_tokens=12_800),
        ),
    )


def _seconds(time_left: str | None) -> float:
    """Parse a protobuf Duration such as "50s" or "0.5s"."""
    if not time_left:
        return 0.0
    try:
        return max(0.0, float(time_left.rstrip("s")))
    except ValueError:
        return 0.0


@dataclass
class _Connection:
    session: genai_live.AsyncSession
    wire: LiveWire  # the lean audio paths of `session` (live_wire.py)
    stack: contextlib.AsyncExitStack


class LiveUpstream:
    """The Live session of one call: connect, send, and a message stream that survives drops."""

    def __init__(
        self,
        *,
        client: genai.Client,
        model: str,
        config: types.LiveConnectConfig,
        connect_timeout: float,
        resume_attempts: int,
        metrics: GatewayMetrics,
        call_id: str,
        handle: str | None = None,
    ) -> None:
        self._client = client
        self._model = model
        self._config = config
        self._connect_timeout = connect_timeout
        self._resume_attempts = resume_attempts
        self._metrics = metrics
        self._call_id = call_id
        self._connection: _Connection | None = None
        self._ready = asyncio.Event()
        # Set when the call continues a session begun on another instance.
        self._handle = handle
        self._resume_after_turn = False
        self._go_away_timer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def resumption_handle(self) -> str | None:
        return self._handle

    async def connect(self) -> None:
        """Open the first session; raises UpstreamFailed."""
        await self._open(cause="start", attempts=2)

    async def _open(self, *, cause: str, attempts: int) -> None:
        delay = 0.25
        last_error = ""
        for attempt in range(1, attempts + 1):
            config = self._config
            if self._handle:
                config = config.model_copy(
                    update={
                        "session_resumption": types.SessionResumptionConfig(handle=self._handle)
                    }
                )
            stack = contextlib.AsyncExitStack()
            try:
                async with asyncio.timeout(self._connect_timeout):
                    session = await stack.enter_async_context(
                        self._client.aio.live.connect(model=self._model, config=config)
                    )
            except genai_errors.APIError as exc:
                await stack.aclose()
                self._metrics.gemini_errors.labels(code=str(exc.code)).inc()
                if exc.code in FATAL_CLOSE_CODES:
                    if self._handle is None:
                        raise UpstreamFailed(ErrorCode.UPSTREAM_REJECTED, str(exc)) from exc
                    # The handle is unknown or expired (e.g. the service restarted): go on with a
                    # fresh session. The model loses the conversation so far; the caller does not
                    # lose the call.
                    self._metrics.resumptions.labels(cause=cause, outcome="handle_refused").inc()
                    self._handle = None
                    last_error = str(exc)
                    continue
                last_error = str(exc)
            except websockets.exceptions.InvalidStatus as exc:
                await stack.aclose()
                status = exc.response.status_code
                self._metrics.gemini_errors.labels(code=f"http_{status}").inc()
                if status in (400, 401, 403, 404):
                    raise UpstreamFailed(ErrorCode.UPSTREAM_REJECTED, str(exc)) from exc
                last_error = str(exc)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                await stack.aclose()
                kind = "timeout" if isinstance(exc, TimeoutError) else "connect"
                self._metrics.gemini_errors.labels(code=kind).inc()
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                self._connection = _Connection(session=session, wire=LiveWire(session), stack=stack)
                self._resume_after_turn = False
                if self._go_away_timer is not None:
                    self._go_away_timer.cancel()
                self._ready.set()
                if cause != "start":
                    self._metrics.resumptions.labels(cause=cause, outcome="resumed").inc()
                return
            log.warning(
                "gemini connect failed",
                extra={
                    "fields": {"call_id": self._call_id, "attempt": attempt, "error": last_error}
                },
            )
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if cause != "start":
            self._metrics.resumptions.labels(cause=cause, outcome="failed").inc()
        raise UpstreamFailed(ErrorCode.UPSTREAM_UNAVAILABLE, last_error)

    async def _drop_connection(self) -> None:
        self._ready.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            # Close the old socket before resuming: a resume can be refused while it is open.
            with contextlib.suppress(Exception):
                await connection.stack.aclose()

    async def _resume(self, cause: str) -> None:
        await self._drop_connection()
        if self._closed:
            return
        log.info(
            "resuming gemini session",
            extra={
                "fields": {
                    "call_id": self._call_id,
                    "cause": cause,
                    "resumable": bool(self._handle),
                }
            },
        )
        await self._open(cause=cause, attempts=self._resume_attempts)

    async def messages(self) -> AsyncIterator[ServerMessage]:
        """Every server message of the call, across resumptions; raises UpstreamFailed.

        Plain model audio comes as `ModelAudio` (the lean path), everything else as the SDK's
        `LiveServerMessage`.
        """
        while not self._closed:
            connection = self._connection
            if connection is None:
                await self._resume("dropped")
                continue
            try:
                while True:
                    message = await connection.wire.receive()
                    if isinstance(message, ModelAudio):
                        yield message
                        continue
                    self._track(message)
                    yield message
                    if self._resume_after_turn and _turn_complete(message):
                        break
                await self._resume("go_away")
            except genai_errors.APIError as exc:
                if self._closed:
                    return
                self._metrics.gemini_errors.labels(code=str(exc.code)).inc()
                if exc.code in FATAL_CLOSE_CODES:
                    raise UpstreamFailed(ErrorCode.UPSTREAM_REJECTED, str(exc)) from exc
                await self._resume("go_away" if self._resume_after_turn else f"closed_{exc.code}")
            except (ValueError, websockets.exceptions.WebSocketException) as exc:
                # An unparsable message or a transport failure: the socket is not trustworthy.
                if self._closed:
                    return
                self._metrics.gemini_errors.labels(code="protocol").inc()
                log.warning(
                    "gemini stream error",
                    extra={"fields": {"call_id": self._call_id, "error": str(exc)}},
                )
                await self._resume("protocol_error")

    def _track(self, message: types.LiveServerMessage) -> None:
        update = message.session_resumption_update
        if update is not None and update.resumable and update.new_handle:
            self._handle = update.new_handle
        if message.go_away is not None:
            self._resume_after_turn = True
            # Resume at the next turn boundary so the model's answer is not cut; if no turn
            # ends in time, resume shortly before the server closes the connection anyway.
            time_left = _seconds(message.go_away.time_left)
            if self._go_away_timer is None or self._go_away_timer.done():
                self._go_away_timer = asyncio.create_task(
                    self._resume_by_deadline(max(0.0, min(time_left - 3.0, time_left * 0.8)))
                )

    async def _resume_by_deadline(self, delay: float) -> None:
        await asyncio.sleep(delay)
        connection = self._connection
        if self._resume_after_turn and connection is not None:
            # Closing the socket makes receive() raise, which resumes in messages().
            with contextlib.suppress(Exception):
                await connection.session.close()

    async def _send(self, send: Callable[[_Connection], Awaitable[None]]) -> None:
        """Send on the current session, waiting through a resumption instead of losing data."""
        for _ in range(self._resume_attempts + 2):
            await self._ready.wait()
            connection = self._connection
            if connection is None:
                continue
            try:
                await send(connection)
                return
            except websockets.exceptions.ConnectionClosed:
                # The receive side sees the same close and resumes; wait for the new session.
                if self._connection is connection:
                    self._ready.clear()
        raise UpstreamFailed(ErrorCode.UPSTREAM_UNAVAILABLE, "could not send to gemini")

    async def send_audio(self, pcm: bytes) -> None:
        await self._send(lambda connection: connection.wire.send_audio(pcm, INPUT_MIME_TYPE))

    async def send_tool_response(self, response: types.FunctionResponse) -> None:
        await self._send(
            lambda connection: connection.session.send_tool_response(function_responses=[response])
        )

    async def close(self) -> None:
        self._closed = True
        if self._go_away_timer is not None:
            self._go_away_timer.cancel()
        await self._drop_connection()


def _turn_complete(message: types.LiveServerMessage) -> bool:
    content = message.server_content
    return bool(content is not None and content.turn_complete)
