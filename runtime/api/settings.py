"""The API's settings: built from the environment (`from_env`) or directly (tests, bench).

Variables are those of docs/architecture.md; secrets come from `*_FILE` variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runtime.api.proxies import TrustedProxyError, parse_entries
from runtime.common import settings as env_settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class RateLimits:
    public_per_minute: int = 120
    authenticated_per_minute: int = 600
    login_per_minute: int = 10
    # Not an operator setting: tests shorten it to see a limit recover.
    window_seconds: int = 60


@dataclass(frozen=True)
class ApiSettings:
    # Secrets stay out of repr(), so settings can be logged or shown in a failing test.
    database_conninfo: str = field(repr=False)
    redis_url: str
    jwt_keys_file: Path
    # Every listed token is accepted; during rotation the file holds the new and the old one.
    internal_tokens: tuple[str, ...] = field(repr=False)
    public_url: str
    redis_password: str | None = field(default=None, repr=False)
    log_level: str = "info"
    host: str = "0.0.0.0"  # noqa: S104 - the API listens inside its container network
    port: int = 3000
    referrals_enabled: bool = False
    allowed_origins: tuple[str, ...] = ()
    # Peers whose X-Real-IP is the client's address (runtime.api.proxies): addresses, CIDR
    # networks, host names. Empty: every client is counted by its connection's own address.
    trusted_proxies: tuple[str, ...] = ()
    rate_limits: RateLimits = field(default_factory=RateLimits)
    access_token_seconds: int = 900
    refresh_token_seconds: int = 30 * 24 * 3600
    widget_token_seconds: int = 120
    tool_max_response_bytes: int = 64 * 1024
    # Tool webhooks may not reach loopback/private addresses (the appliance's own services)
    # unless this is on (webhooks on the business's own network; tests on loopback).
    tool_allow_private_networks: bool = False
    referral_reward_cents: int = 1000
    db_pool_max_size: int = 10
    db_pool_timeout_seconds: float = 5.0
    purge_interval_seconds: float = 600.0
    # After SIGTERM, how long the API keeps answering (each response closing its connection)
    # before it stops listening: a rolling restart must not drop a proxied request.
    drain_seconds: int = 3

    @property
    def gateway_url(self) -> str:
        base = self.public_url.rstrip("/")
        if base.startswith("https://"):
            return "wss://" + base.removeprefix("https://") + "/ws/call"
        return "ws://" + base.removeprefix("http://") + "/ws/call"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiSettings:
        read = env_settings
        public_url = read.required(env, "ORBIS_PUBLIC_URL")
        log_level = read.optional(env, "ORBIS_LOG_LEVEL", "info").lower()
        if log_level not in ("debug", "info", "warning", "error"):
            raise read.SettingsError(
                f"ORBIS_LOG_LEVEL={log_level!r}: use debug, info, warning or error"
            )
        if not public_url.startswith(("https://", "http://")):
            raise read.SettingsError(f"ORBIS_PUBLIC_URL={public_url!r} must start with https://")
        trusted_proxies = read.csv_list(env, "ORBIS_TRUSTED_PROXIES")
        try:
            parse_entries(trusted_proxies)
        except TrustedProxyError as exc:
            raise read.SettingsError(f"ORBIS_TRUSTED_PROXIES: {exc}") from None
        return cls(
            database_conninfo=read.postgres_conninfo(
                read.required(env, "ORBIS_DATABASE_URL"),
                read.secret(env, "ORBIS_DATABASE_PASSWORD_FILE", required_file=False),
                user=read.secret(env, "ORBIS_DATABASE_USER_FILE", required_file=False),
            ),
            redis_url=read.required(env, "ORBIS_REDIS_URL"),
            redis_password=read.secret(env, "ORBIS_REDIS_PASSWORD_FILE", required_file=False),
            jwt_keys_file=Path(read.required(env, "ORBIS_JWT_KEYS_FILE")),
            internal_tokens=tuple(read.secret_lines(env, "ORBIS_INTERNAL_TOKEN_FILE")),
            public_url=public_url,
            log_level=log_level,
            port=read.integer(env, "ORBIS_API_PORT", 3000, minimum=1),
            drain_seconds=read.integer(env, "ORBIS_API_DRAIN_SECONDS", 3),
            referrals_enabled=read.boolean(env, "ORBIS_REFERRALS_ENABLED", False),
            allowed_origins=read.csv_list(env, "ORBIS_ALLOWED_ORIGINS"),
            trusted_proxies=trusted_proxies,
            tool_allow_private_networks=read.boolean(
                env, "ORBIS_TOOLS_ALLOW_PRIVATE_NETWORKS", False
            ),
            rate_limits=RateLimits(
                public_per_minute=read.integer(
                    env, "ORBIS_RATE_LIMIT_PUBLIC_PER_MINUTE", 120, minimum=1
                ),
                authenticated_per_minute=read.integer(
                    env, "ORBIS_RATE_LIMIT_AUTHENTICATED_PER_MINUTE", 600, minimum=1
                ),
                login_per_minute=read.integer(
                    env, "ORBIS_RATE_LIMIT_LOGIN_PER_MINUTE", 10, minimum=1
                ),
            ),
        )
