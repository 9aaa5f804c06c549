"""The probes themselves: plain functions returning a `ProbeResult`, standard library only.

Container HEALTHCHECKs run them through `python -m healthchecks` many times a minute, so this
module imports nothing heavy; `orbisctl doctor` calls the same functions from the host.
"""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass

DEFAULT_TIMEOUT = 3.0
# How much of a failing response body a probe reports: enough for a readiness endpoint's
# reason ("database: connection refused"), short enough for `docker inspect` health logs.
_BODY_EXCERPT = 300


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A health endpoint that redirects is misconfigured; report it instead of following."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def http(url: str, *, timeout: float = DEFAULT_TIMEOUT, ca_file: str | None = None) -> ProbeResult:
    """GET `url`: healthy on a 2xx status. HTTPS is verified, against `ca_file` when given."""
    if not url.startswith(("http://", "https://")):
        return ProbeResult(False, f"{url}: not an http(s) URL")
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") else None
    opener = urllib.request.build_opener(
        _NoRedirect(), urllib.request.HTTPSHandler(context=context)
    )
    # The scheme is checked above: only http(s) reaches urllib.
    request = urllib.request.Request(url, headers={"User-Agent": "orbis-healthcheck"})  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as response:
            # The body too: Docker's health log and `orbisctl doctor` read what it says.
            body = response.read(_BODY_EXCERPT).decode("utf-8", "replace").strip()
            return ProbeResult(True, f"{url}: {response.status}" + (f": {body}" if body else ""))
    except urllib.error.HTTPError as exc:
        body = exc.read(_BODY_EXCERPT).decode("utf-8", "replace").strip()
        return ProbeResult(False, f"{url}: HTTP {exc.code}" + (f": {body}" if body else ""))
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return ProbeResult(False, f"{url}: {reason}")


def tcp(host: str, port: int, *, timeout: float = DEFAULT_TIMEOUT) -> ProbeResult:
    """Healthy when something accepts a TCP connection on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ProbeResult(True, f"{host}:{port}: accepting connections")
    except OSError as exc:
        return ProbeResult(False, f"{host}:{port}: {exc.strerror or exc}")


def _resp_command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def redis_ping(
    host: str,
    port: int,
    *,
    user: str | None = None,
    password: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> ProbeResult:
    """AUTH (when a password is given) then PING, in raw RESP: healthy on +PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            reader = sock.makefile("rb")
            if password is not None:
                auth = ("AUTH", user, password) if user else ("AUTH", password)
                sock.sendall(_resp_command(*auth))
                reply = reader.readline().strip()
                if not reply.startswith(b"+OK"):
                    return ProbeResult(False, f"{host}:{port}: AUTH refused: {_redis_error(reply)}")
            sock.sendall(_resp_command("PING"))
            reply = reader.readline().strip()
    except OSError as exc:
        return ProbeResult(False, f"{host}:{port}: {exc.strerror or exc}")
    if reply == b"+PONG":
        return ProbeResult(True, f"{host}:{port}: PONG")
    return ProbeResult(False, f"{host}:{port}: PING answered {_redis_error(reply)}")


def _redis_error(reply: bytes) -> str:
    return reply.lstrip(b"-+").decode("utf-8", "replace") or "nothing"
