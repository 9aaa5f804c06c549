"""Gateway settings, read once from the environment (docs/architecture.md, "Runtime settings")."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.common import settings as env_settings


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    port: int = 4001
    host: str = "0.0.0.0"  # noqa: S104 - the gateway listens on its container network
    instance_id: str
    api_url: str
    # The first is sent to the API; all are accepted on the gateway's admin routes (a second
    # line in the token file is the next token during a rotation).
    internal_tokens: tuple[str, ...]
    redis_url: str
    redis_password: str | None = None
    log_level: str = "info"
    gemini_api_key: str
    gemini_model: str = "gemini-2.0-flash"
    gemini_base_url: str = ""
    gemini_ca_file: Path | None = None
    max_calls: int = 1000
    max_call_seconds: int = 1800
    idle_timeout_seconds: float = 60.0
    drain_timeout_seconds: float = 120.0
    # New calls are refused while the event loop runs later than this (0: never).
    max_loop_lag_seconds: float = 0.01
    # Tuning knobs with safe defaults; not part of the documented environment contract.
    max_frame_bytes: int = 64 * 1024
    upstream_connect_timeout_seconds: float = 15.0
    tool_timeout_seconds: float = 20.0
    api_timeout_seconds: float = 10.0
    slot_lease_seconds: int = 30
    heartbeat_seconds: float = 5.0
    transcript_flush_seconds: float = 2.0
    resume_attempts: int = 4
    slow_client_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewaySettings:
        ca_file = env_settings.optional(env, "ORBIS_GEMINI_CA_FILE", "")
        return cls(
            port=env_settings.integer(env, "ORBIS_GATEWAY_PORT", 4001, minimum=1),
            instance_id=env_settings.optional(env, "ORBIS_INSTANCE_ID", socket.gethostname()),
            api_url=env_settings.required(env, "ORBIS_API_URL").rstrip("/"),
            internal_tokens=tuple(env_settings.secret_lines(env, "ORBIS_INTERNAL_TOKEN_FILE")),
            redis_url=env_settings.required(env, "ORBIS_REDIS_URL"),
            redis_password=env_settings.secret(
                env, "ORBIS_REDIS_PASSWORD_FILE", required_file=False
            ),
            log_level=env_settings.optional(env, "ORBIS_LOG_LEVEL", "info"),
            gemini_api_key=_required_secret(env, "ORBIS_GEMINI_API_KEY_FILE"),
            gemini_model=env_settings.optional(env, "ORBIS_GEMINI_MODEL", "gemini-2.0-flash"),
            gemini_base_url=env_settings.optional(env, "ORBIS_GEMINI_BASE_URL", "").rstrip("/"),
            gemini_ca_file=Path(ca_file) if ca_file else None,
            max_calls=env_settings.integer(env, "ORBIS_MAX_CALLS", 1000, minimum=1),
            max_call_seconds=env_settings.integer(env, "ORBIS_MAX_CALL_SECONDS", 1800, minimum=1),
            idle_timeout_seconds=env_settings.integer(
                env, "ORBIS_IDLE_TIMEOUT_SECONDS", 60, minimum=1
            ),
            drain_timeout_seconds=env_settings.integer(
                env, "ORBIS_DRAIN_TIMEOUT_SECONDS", 120, minimum=0
            ),
            max_loop_lag_seconds=env_settings.integer(env, "ORBIS_MAX_LOOP_LAG_MS", 10, minimum=0)
            / 1000,
        )


def _required_secret(env: Mapping[str, str], name: str) -> str:
    """The first line of a required secret file (a second line is the next value in rotation)."""
    return env_settings.secret_lines(env, name)[0]
