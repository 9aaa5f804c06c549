"""Would the model endpoint accept this Gemini API key? One Live session opened and closed.

`rotate-keys` asks before any gateway uses a new key: from inside a gateway container
(`python -m runtime.gateway probe-key`, so the probe has the gateway's own SDK, trust store,
endpoint settings and network path), or from the operator's host in direct mode. Both open
the session with the client the gateway itself uses (`upstream.make_client`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path

from google.genai import errors as genai_errors
from google.genai import types

from runtime.common.settings import SettingsError
from runtime.gateway.settings import GatewaySettings
from runtime.gateway.upstream import make_client

# The key to probe, set by `docker exec --env` for this one process: never an argument, which
# the host's process list would show.
PROBE_KEY_VARIABLE = "ORBIS_PROBE_GEMINI_KEY"
ACCEPTED = "accepted"
DEFAULT_TIMEOUT_SECONDS = 15.0


async def probe_key(
    api_key: str,
    *,
    model: str,
    base_url: str = "",
    ca_file: Path | None = None,
    within_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> str | None:
    """None when the endpoint opens a session with `api_key`, else why not (never the key)."""
    client = make_client(
        api_key=api_key, base_url=base_url, ca_file=str(ca_file) if ca_file else None
    )
    config = types.LiveConnectConfig(response_modalities=[types.Modality.AUDIO])
    try:
        # connect() waits for setupComplete without a timeout of its own.
        async with asyncio.timeout(within_seconds):
            async with client.aio.live.connect(model=model, config=config):
                return None
    except genai_errors.APIError as exc:
        return f"the endpoint refused the key (close code {exc.code})"
    except TimeoutError:
        return f"no session within {within_seconds:.0f}s"
    except OSError as exc:
        return f"cannot reach the endpoint: {exc.strerror or type(exc).__name__}"


def main(environ: Mapping[str, str]) -> int:
    """Print `accepted`, or `refused: <why>`, as the last line; 2 for a setting missing."""
    api_key = environ.get(PROBE_KEY_VARIABLE, "")
    if not api_key:
        print(f"gateway probe-key: {PROBE_KEY_VARIABLE} is not set", file=sys.stderr)
        return 2
    try:
        settings = GatewaySettings.from_env(environ)
    except SettingsError as exc:
        print(f"gateway probe-key: {exc}", file=sys.stderr)
        return 2
    refusal = asyncio.run(
        probe_key(
            api_key,
            model=settings.gemini_model,
            base_url=settings.gemini_base_url,
            ca_file=settings.gemini_ca_file,
        )
    )
    print(ACCEPTED if refusal is None else f"refused: {refusal}")
    return 0
