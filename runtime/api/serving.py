"""`ApiRunner`: aiohttp's AppRunner, except that requests too malformed to reach the
application (a NUL in a header, an 8 KB request line) are answered with the API's JSON error
shape and logged as one line, not with aiohttp's plain text and an error-level traceback.

aiohttp answers those from its connection handler (`RequestHandler.handle_error`), before
any middleware runs, so the one error middleware cannot see them. The runner makes its
server build connection handlers that answer in the JSON shape; everything else is aiohttp's.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong

from runtime.common.http_errors import error_response

log = logging.getLogger("runtime.api")


def _malformed_message(exc: BaseException | None) -> str:
    if isinstance(exc, LineTooLong):
        return "the HTTP request is malformed: its request line or a header is too long"
    if isinstance(exc, BadHttpMethod):
        return "the HTTP request is malformed: unknown method"
    return "the HTTP request is malformed"


class _JsonErrorRequestHandler(web_protocol.RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            # Not the client's doing (the error middleware answers every handler failure;
            # this is a failure outside it, or aiohttp's own 504): a bug worth a traceback.
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            response = error_response(
                status, "internal_error", "internal error; quote the request id when reporting it"
            )
        else:
            # The client's doing, and a client can send many: one line, no traceback.
            log.info(
                "malformed HTTP request",
                extra={
                    "fields": {
                        "peer": request.remote,
                        "status": status,
                        "error": type(exc).__name__ if exc is not None else None,
                        "detail": exc.message[:200]
                        if isinstance(exc, HttpProcessingError)
                        else None,
                    }
                },
            )
            response = error_response(status, "bad_request", _malformed_message(exc))
        if request.writer.output_size > 0:
            # As aiohttp's own: part of a response is out, the connection is unusable.
            raise ConnectionError("a response was already being sent; cannot send the error")
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        # web.Server.__call__ builds aiohttp's RequestHandler from these same attributes.
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """Run the API app with `ApiRunner(app, ...)` wherever `web.AppRunner(app, ...)` would do."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        kwargs: dict[str, Any] = dict(server._kwargs)
        return _JsonErrorServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **kwargs,
        )
