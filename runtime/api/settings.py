"""The API's settings: built from the environment (`from_env`) or directly (tests, bench).

Variables are those of docs/architecture.md; secrets come from `*_FILE` variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import psycopg.conninfo
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from runtime.api.proxies import TrustedProxyError, parse_entries
from runtime.common.settings import CommaSeparated, RuntimeSettings, SecretFile, reveal

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

LOG_LEVELS = ("debug", "info", "warning", "error")


class RateLimits(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    public_per_minute: int = Field(120, ge=1, validation_alias="ORBIS_RATE_LIMIT_PUBLIC_PER_MINUTE")
    authenticated_per_minute: int = Field(
        600, ge=1, validation_alias="ORBIS_RATE_LIMIT_AUTHENTICATED_PER_MINUTE"
    )
    login_per_minute: int = Field(10, ge=1, validation_alias="ORBIS_RATE_LIMIT_LOGIN_PER_MINUTE")
    # Not an operator setting: tests shorten it to see a limit recover.
    window_seconds: int = 60


class ApiSettings(RuntimeSettings):
    # Field order is the order mistakes are reported in: the first one is the message.
    public_url: str = Field(validation_alias="ORBIS_PUBLIC_URL")
    # Peers whose X-Real-IP is the client's address (runtime.api.proxies): addresses, CIDR
    # networks, host names. Empty: every client is counted by its connection's own address.
    trusted_proxies: CommaSeparated = Field((), validation_alias="ORBIS_TRUSTED_PROXIES")
    # A password-less URL: the password (and, during key rotation, the login role) come from
    # their secret files; database_conninfo puts them together.
    database_url: str = Field(validation_alias="ORBIS_DATABASE_URL", repr=False)
    database_password: Annotated[SecretStr | None, SecretFile()] = Field(
        None, validation_alias="ORBIS_DATABASE_PASSWORD_FILE"
    )
    # Key rotation alternates between two login roles; this one replaces the URL's user.
    database_user: Annotated[str | None, SecretFile()] = Field(
        None, validation_alias="ORBIS_DATABASE_USER_FILE"
    )
    redis_url: str = Field(validation_alias="ORBIS_REDIS_URL")
    redis_password: Annotated[SecretStr | None, SecretFile()] = Field(
        None, validation_alias="ORBIS_REDIS_PASSWORD_FILE"
    )
    jwt_keys_file: Path = Field(validation_alias="ORBIS_JWT_KEYS_FILE")
    # Every listed token is accepted; during rotation the file holds the new and the old one.
    internal_tokens: Annotated[tuple[SecretStr, ...], SecretFile(all_lines=True)] = Field(
        validation_alias="ORBIS_INTERNAL_TOKEN_FILE"
    )
    host: str = "0.0.0.0"  # noqa: S104 - the API listens inside its container network
    port: int = Field(3000, ge=0, validation_alias="ORBIS_API_PORT")
    referrals_enabled: bool = Field(False, validation_alias="ORBIS_REFERRALS_ENABLED")
    allowed_origins: CommaSeparated = Field((), validation_alias="ORBIS_ALLOWED_ORIGINS")
    rate_limits: RateLimits = RateLimits()
    access_token_seconds: int = 900
    refresh_token_seconds: int = 30 * 24 * 3600
    widget_token_seconds: int = 120
    tool_max_response_bytes: int = 64 * 1024
    # Tool webhooks may not reach loopback/private addresses (the appliance's own services)
    # unless this is on (webhooks on the business's own network; tests on loopback).
    tool_allow_private_networks: bool = Field(
        False, validation_alias="ORBIS_TOOLS_ALLOW_PRIVATE_NETWORKS"
    )
    referral_reward_cents: int = 1000
    db_pool_max_size: int = 10
    db_pool_timeout_seconds: float = 5.0
    purge_interval_seconds: float = 600.0
    # After SIGTERM, how long the API keeps answering (each response closing its connection)
    # before it stops listening: a rolling restart must not drop a proxied request.
    drain_seconds: int = Field(3, ge=0, validation_alias="ORBIS_API_DRAIN_SECONDS")

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: object) -> object:
        level = str(value).lower()
        if level not in LOG_LEVELS:
            raise ValueError("use debug, info, warning or error")
        return level

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https://")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            parse_entries(value)
        except TrustedProxyError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _conninfo_builds(cls, value: str) -> str:
        try:
            psycopg.conninfo.make_conninfo(value)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"database URL is malformed: {exc}") from None
        return value

    @property
    def database_conninfo(self) -> str:
        """The libpq connection string, password included: hand it to the driver only."""
        overrides = {
            name: value
            for name, value in (
                ("password", reveal(self.database_password)),
                ("user", self.database_user),
            )
            if value
        }
        return psycopg.conninfo.make_conninfo(self.database_url, **overrides)

    @property
    def gateway_url(self) -> str:
        base = self.public_url.rstrip("/")
        if base.startswith("https://"):
            return "wss://" + base.removeprefix("https://") + "/ws/call"
        return "ws://" + base.removeprefix("http://") + "/ws/call"
