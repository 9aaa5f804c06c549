"""Emulator settings, read from `ORBIS_EMULATOR_*` environment variables (see docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field
from pydantic_settings import SettingsConfigDict

from runtime.common.settings import RuntimeSettings, split_commas


class EmulatorSettings(RuntimeSettings):
    # Every field is read from ORBIS_EMULATOR_<NAME> unless it names its own variable.
    model_config = SettingsConfigDict(env_prefix="ORBIS_EMULATOR_")

    # Inside its container the emulator must be reachable from the gateway's network.
    host: str = "0.0.0.0"  # noqa: S104
    port: int = Field(default=9443, ge=0, le=65535)  # 0: any free port (tests)
    # Several emulator processes may listen on one port (SO_REUSEPORT; the kernel spreads
    # connections). For load rigs only: resumption handles live in each process's memory.
    reuse_port: bool = False
    cert_file: Path
    key_file: Path
    # Accepted API keys, one per line, re-read when the file changes; unset: any key accepted.
    api_keys_file: Path | None = None
    scenario_file: Path | None = None
    # Model names (without "models/") a setup may ask for, comma-separated; empty: any model.
    accepted_models: Annotated[frozenset[str], BeforeValidator(split_commas)] = frozenset()

    max_sessions: int = Field(default=2000, ge=1)
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    idle_timeout_seconds: float = Field(default=120.0, gt=0)
    setup_timeout_seconds: float = Field(default=10.0, gt=0)
    # The real service ends connections after about 10 minutes, with goAway ~50 s before.
    connection_cap_seconds: float = Field(default=600.0, gt=0)
    go_away_seconds: float = Field(default=50.0, ge=0)
    resumption_handle_ttl_seconds: float = Field(default=7200.0, gt=0)
    max_resumption_handles: int = Field(default=100_000, ge=1)
    recent_sessions_kept: int = Field(default=100, ge=0)
