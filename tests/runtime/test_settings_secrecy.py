"""Secrets stay secret: every runtime settings object, built from the environment (secrets
through `*_FILE`) or in code, keeps its secret values out of `repr`, `str` and the JSON log
line the serve loop writes at start-up."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from runtime.api.settings import ApiSettings
from runtime.common.logs import configure_logging
from runtime.common.serve import serve_until_stopped
from runtime.common.settings import RuntimeSettings, reveal
from runtime.emulator.settings import EmulatorSettings
from runtime.gateway.settings import GatewaySettings

SECRETS = {
    "postgres_password": "pg-Secret-7f3a",
    "postgres_user": "orbis_b",
    "redis_password": "redis-Secret-91c2",
    "internal_token": "tok-New-0d1e\ntok-Old-55aa",
    "gemini_api_key": "AIza-Key-New-4b6c\nAIza-Key-Old-77e0",
}
SECRET_VALUES = [
    line
    for name, text in SECRETS.items()
    if name != "postgres_user"  # a role name, not a secret
    for line in text.splitlines()
]


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """Every runtime variable of an install, secrets in files as compose mounts them."""
    for name, text in SECRETS.items():
        (tmp_path / name).write_text(text + "\n", encoding="utf-8")
    (tmp_path / "emulator_keys").write_text(SECRETS["gemini_api_key"] + "\n", encoding="utf-8")
    return {
        "ORBIS_DATABASE_URL": "postgresql://orbis@postgres:5432/orbis",
        "ORBIS_DATABASE_PASSWORD_FILE": str(tmp_path / "postgres_password"),
        "ORBIS_DATABASE_USER_FILE": str(tmp_path / "postgres_user"),
        "ORBIS_REDIS_URL": "redis://orbis@redis:6379/0",
        "ORBIS_REDIS_PASSWORD_FILE": str(tmp_path / "redis_password"),
        "ORBIS_JWT_KEYS_FILE": str(tmp_path / "jwt_keys.json"),
        "ORBIS_INTERNAL_TOKEN_FILE": str(tmp_path / "internal_token"),
        "ORBIS_PUBLIC_URL": "https://voice.example.com",
        "ORBIS_API_URL": "http://api:3000",
        "ORBIS_GEMINI_API_KEY_FILE": str(tmp_path / "gemini_api_key"),
        "ORBIS_EMULATOR_CERT_FILE": str(tmp_path / "emulator.crt"),
        "ORBIS_EMULATOR_KEY_FILE": str(tmp_path / "emulator.key"),
        "ORBIS_EMULATOR_API_KEYS_FILE": str(tmp_path / "emulator_keys"),
        "ORBIS_LOG_LEVEL": "debug",
    }


def every_settings(environ: dict[str, str]) -> list[RuntimeSettings]:
    tokens = tuple(SECRETS["internal_token"].splitlines())
    gemini_key = SECRETS["gemini_api_key"].splitlines()[0]
    return [
        ApiSettings.from_env(environ),
        GatewaySettings.from_env(environ),
        EmulatorSettings.from_env(environ),
        ApiSettings(
            database_url=environ["ORBIS_DATABASE_URL"],
            database_password=SECRETS["postgres_password"],
            redis_url=environ["ORBIS_REDIS_URL"],
            redis_password=SECRETS["redis_password"],
            jwt_keys_file=Path(environ["ORBIS_JWT_KEYS_FILE"]),
            internal_tokens=tokens,
            public_url=environ["ORBIS_PUBLIC_URL"],
        ),
        GatewaySettings(
            api_url=environ["ORBIS_API_URL"],
            internal_tokens=tokens,
            redis_url=environ["ORBIS_REDIS_URL"],
            redis_password=SECRETS["redis_password"],
            gemini_api_key=gemini_key,
        ),
    ]


def assert_no_secret(text: str) -> None:
    for secret in SECRET_VALUES:
        assert secret not in text


def test_the_secrets_are_read_from_their_files(environ: dict[str, str]) -> None:
    """The settings do hold the secrets (so their absence below means something)."""
    api = ApiSettings.from_env(environ)
    gateway = GatewaySettings.from_env(environ)
    assert f"password={SECRETS['postgres_password']}" in api.database_conninfo
    assert reveal(api.redis_password) == reveal(gateway.redis_password) == "redis-Secret-91c2"
    assert [token.get_secret_value() for token in gateway.internal_tokens] == [
        "tok-New-0d1e",
        "tok-Old-55aa",
    ]
    assert gateway.gemini_api_key.get_secret_value() == "AIza-Key-New-4b6c"


def test_repr_and_str_hide_every_secret(environ: dict[str, str]) -> None:
    for settings in every_settings(environ):
        assert_no_secret(repr(settings))
        assert_no_secret(str(settings))
        assert "**********" in repr(settings) or isinstance(settings, EmulatorSettings)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging replaces the root logger's handlers: put the test runner's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
async def test_the_start_up_log_hides_every_secret(
    environ: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The serve loop's own start-up path: JSON logging on stderr, the listening line with
    the settings, a SIGTERM, the shutdown."""
    loop = asyncio.get_running_loop()

    def stop_once_listening() -> None:
        loop.call_soon(os.kill, os.getpid(), signal.SIGTERM)

    for settings in every_settings(environ):
        configure_logging(settings.log_level, service=type(settings).__name__)
        await serve_until_stopped(
            web.AppRunner(web.Application(), handle_signals=False),
            settings,
            host="127.0.0.1",
            port=0,
            on_listening=stop_once_listening,
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        listening = [line for line in lines if line["msg"] == "listening"]
        assert len(listening) == 1
        shown = listening[0]["settings"]
        assert shown["log_level"] == settings.log_level
        if isinstance(settings, GatewaySettings):
            assert shown["gemini_api_key"] == "**********"
        assert_no_secret(json.dumps(lines))
