"""Gateway settings, read once from the environment (docs/architecture.md, "Runtime settings")."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator

from runtime.common.settings import RuntimeSettings, SecretFile

# The loop-lag bound's variable is in whole milliseconds; the setting is in seconds.
LOOP_LAG_MS_VARIABLE = "ORBIS_MAX_LOOP_LAG_MS"


class GatewaySettings(RuntimeSettings):
    port: int = Field(4001, ge=0, validation_alias="ORBIS_GATEWAY_PORT")
    host: str = "0.0.0.0"  # noqa: S104 - the gateway listens on its container network
    instance_id: str = Field(
        default_factory=socket.gethostname, validation_alias="ORBIS_INSTANCE_ID"
    )
    api_url: str = Field(validation_alias="ORBIS_API_URL")
    # The first is sent to the API; all are accepted on the gateway's admin routes (a second
    # line in the token file is the next token during a rotation).
    internal_tokens: Annotated[tuple[SecretStr, ...], SecretFile(all_lines=True)] = Field(
        validation_alias="ORBIS_INTERNAL_TOKEN_FILE"
    )
    redis_url: str = Field(validation_alias="ORBIS_REDIS_URL")
    redis_password: Annotated[SecretStr | None, SecretFile()] = Field(
        None, validation_alias="ORBIS_REDIS_PASSWORD_FILE"
    )
    # The first line of the key file (a second line is the next key during a rotation).
    gemini_api_key: Annotated[SecretStr, SecretFile()] = Field(
        validation_alias="ORBIS_GEMINI_API_KEY_FILE"
    )
    gemini_model: str = Field("gemini-2.0-flash", validation_alias="ORBIS_GEMINI_MODEL")
    gemini_base_url: str = Field("", validation_alias="ORBIS_GEMINI_BASE_URL")
    gemini_ca_file: Path | None = Field(None, validation_alias="ORBIS_GEMINI_CA_FILE")
    max_calls: int = Field(1000, ge=1, validation_alias="ORBIS_MAX_CALLS")
    max_call_seconds: int = Field(1800, ge=1, validation_alias="ORBIS_MAX_CALL_SECONDS")
    idle_timeout_seconds: float = Field(60.0, ge=1, validation_alias="ORBIS_IDLE_TIMEOUT_SECONDS")
    drain_timeout_seconds: float = Field(
        120.0, ge=0, validation_alias="ORBIS_DRAIN_TIMEOUT_SECONDS"
    )
    # New calls are refused while the event loop runs later than this (0: never).
    # Read from ORBIS_MAX_LOOP_LAG_MS, in whole milliseconds (_loop_lag_from_milliseconds).
    max_loop_lag_seconds: float = Field(0.01, ge=0, validation_alias=LOOP_LAG_MS_VARIABLE)
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

    @field_validator("api_url", "gemini_base_url")
    @classmethod
    def _without_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _loop_lag_from_milliseconds(cls, values: Any) -> Any:
        if not isinstance(values, dict) or LOOP_LAG_MS_VARIABLE not in values:
            return values
        values = dict(values)
        raw = values.pop(LOOP_LAG_MS_VARIABLE)
        try:
            milliseconds = int(raw)
        except ValueError:
            raise ValueError(f"{LOOP_LAG_MS_VARIABLE}={raw!r} is not a whole number") from None
        if milliseconds < 0:
            raise ValueError(f"{LOOP_LAG_MS_VARIABLE}={milliseconds} is below the minimum 0")
        # Set by name: built in code, the setting is in seconds.
        values["max_loop_lag_seconds"] = milliseconds / 1000
        return values
