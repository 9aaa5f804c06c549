"""Settings from the environment: secrets from *_FILE, rotation's two internal tokens, and
one clear line for each mistake."""

from __future__ import annotations

import secrets
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from runtime.api.settings import ApiSettings
from runtime.common.settings import SettingsError, reveal


def _env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    (tmp_path / "pg").write_text("pg-secret\n")
    (tmp_path / "redis").write_text("redis-secret\n")
    (tmp_path / "internal").write_text("new-token\nold-token\n")
    return {
        "ORBIS_DATABASE_URL": "postgresql://orbis@postgres:5432/orbis",
        "ORBIS_DATABASE_PASSWORD_FILE": str(tmp_path / "pg"),
        "ORBIS_REDIS_URL": "redis://orbis@redis:6379/0",
        "ORBIS_REDIS_PASSWORD_FILE": str(tmp_path / "redis"),
        "ORBIS_JWT_KEYS_FILE": "/run/secrets/jwt_keys.json",
        "ORBIS_INTERNAL_TOKEN_FILE": str(tmp_path / "internal"),
        "ORBIS_PUBLIC_URL": "https://voice.example.com",
        **overrides,
    }


def test_reads_secrets_from_files(tmp_path: Path) -> None:
    settings = ApiSettings.from_env(
        _env(
            tmp_path,
            ORBIS_ALLOWED_ORIGINS="https://a.example, https://b.example",
            ORBIS_REFERRALS_ENABLED="true",
            ORBIS_RATE_LIMIT_LOGIN_PER_MINUTE="5",
        )
    )
    assert "password=pg-secret" in settings.database_conninfo
    assert reveal(settings.redis_password) == "redis-secret"
    assert [token.get_secret_value() for token in settings.internal_tokens] == [
        "new-token",
        "old-token",
    ]
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.referrals_enabled is True
    assert settings.rate_limits.login_per_minute == 5
    assert settings.gateway_url == "wss://voice.example.com/ws/call"
    assert settings.tool_allow_private_networks is False
    for secret in ("pg-secret", "redis-secret", "new-token", "old-token"):
        assert secret not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ORBIS_PUBLIC_URL": ""}, "ORBIS_PUBLIC_URL is not set"),
        ({"ORBIS_API_PORT": "http"}, "ORBIS_API_PORT='http' is not a whole number"),
        ({"ORBIS_REFERRALS_ENABLED": "maybe"}, "ORBIS_REFERRALS_ENABLED='maybe' is not a boolean"),
        ({"ORBIS_LOG_LEVEL": "loud"}, "ORBIS_LOG_LEVEL='loud'"),
        ({"ORBIS_INTERNAL_TOKEN_FILE": "/nonexistent/x"}, "cannot read /nonexistent/x"),
        ({"ORBIS_RATE_LIMIT_PUBLIC_PER_MINUTE": "0"}, "below the minimum 1"),
    ],
)
def test_mistakes_are_one_clear_line(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")) as caught:
        ApiSettings.from_env(_env(tmp_path, **overrides))
    assert "\n" not in str(caught.value)


def test_the_user_file_replaces_the_url_user(tmp_path: Path) -> None:
    (tmp_path / "user").write_text("orbis_b\n")
    settings = ApiSettings.from_env(_env(tmp_path, ORBIS_DATABASE_USER_FILE=str(tmp_path / "user")))
    assert "user=orbis_b" in settings.database_conninfo
    assert "user=orbis " not in settings.database_conninfo + " "
    assert "password=pg-secret" in settings.database_conninfo


@pytest.mark.integration
def test_the_alternating_login_role_connects(tmp_path: Path, database_url: str) -> None:
    """Rotation's standby role (a member of the owner) logs in through the user file."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        role = f"orbis_rot_{secrets.token_hex(3)}"
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'standby-pw'").format(sql.Identifier(role))
        )
    (tmp_path / "user").write_text(f"{role}\n")
    env = _env(
        tmp_path, ORBIS_DATABASE_URL=database_url, ORBIS_DATABASE_USER_FILE=str(tmp_path / "user")
    )
    (tmp_path / "pg").write_text("standby-pw\n")
    settings = ApiSettings.from_env(env)
    with psycopg.connect(settings.database_conninfo) as conn:
        row = conn.execute("SELECT session_user").fetchone()
    assert row is not None and row[0] == role
