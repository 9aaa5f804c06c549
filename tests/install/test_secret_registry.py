"""One secret registry (orbisctl/core/secretfiles.py, SECRET_MOUNTS): the compose and stack
files take every secret, its file and the paths the services are given from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orbisctl import render
from orbisctl.core import secretfiles
from orbisctl.core.config import OrbisConfig
from orbisctl.render import COMPOSE_FILE, render_stack, render_swarm_stack, swarm_objects

TEMPLATE = Path(render.__file__).parent.parent / "templates" / "compose" / "compose.yaml.j2"
CASES = {
    "emulator": {},
    "gemini": {"model": {"provider": "gemini"}},
    "without archiving": {"backup": {"archive": {"enabled": False}}},
}


def _compose(data: dict[str, Any]) -> tuple[OrbisConfig, dict[str, Any]]:
    cfg = OrbisConfig.model_validate({"domain": "voice.example.com", **data})
    return cfg, yaml.safe_load(render_stack(cfg)[COMPOSE_FILE])


@pytest.mark.parametrize("data", CASES.values(), ids=CASES.keys())
def test_the_compose_file_declares_exactly_the_registry_s_secrets(data: dict[str, Any]) -> None:
    cfg, compose = _compose(data)
    expected = {key: {"file": f"./{m.path}"} for key, m in render.stack_secrets(cfg).items()}
    assert compose["secrets"] == expected
    emulator = "emulator_tls_key" in expected
    assert emulator is (cfg.model.provider == "emulator")
    assert ("pgbackrest_secret" in expected) is cfg.backup.archive.enabled


@pytest.mark.parametrize("data", CASES.values(), ids=CASES.keys())
def test_every_secret_path_a_service_is_given_is_one_it_mounts(data: dict[str, Any]) -> None:
    cfg, compose = _compose(data)
    mounts = render.stack_secrets(cfg)
    given = 0
    for name, service in compose["services"].items():
        mounted = {
            mounts[ref if isinstance(ref, str) else ref["source"]].container_path
            for ref in service.get("secrets", [])
        }
        for variable, value in (service.get("environment") or {}).items():
            if str(value).startswith(secretfiles.CONTAINER_SECRETS_DIR + "/"):
                given += 1
                if value in mounted:
                    assert variable.endswith("_FILE"), (name, variable)
                else:  # a directory (pgBackRest's include path): one it mounts a file in
                    assert any(m.startswith(f"{value}/") for m in mounted), (name, variable)
    assert given >= 10


def test_the_swarm_stack_takes_its_secrets_from_the_registry() -> None:
    cfg = OrbisConfig.model_validate({"domain": "voice.example.com", "target": "swarm"})
    names = {key: f"{key}-v1" for key in swarm_objects(cfg)}
    stack = yaml.safe_load(render_swarm_stack(cfg, names))
    assert {key: s["file"] for key, s in stack["secrets"].items()} == {
        key: f"./{m.path}" for key, m in render.stack_secrets(cfg).items()
    }


def test_the_template_spells_no_secret_path_itself() -> None:
    text = TEMPLATE.read_text()
    assert secretfiles.CONTAINER_SECRETS_DIR not in text
    assert "./secrets/" not in text
    for mount in secretfiles.SECRET_MOUNTS:
        assert mount.path not in text, mount


def test_the_files_containers_read_are_the_registry_s_under_secrets() -> None:
    assert {
        secretfiles.POSTGRES_USER,
        secretfiles.POSTGRES_PASSWORD,
        secretfiles.REDIS_PASSWORD,
        secretfiles.JWT_KEYS,
        secretfiles.INTERNAL_TOKEN,
        secretfiles.GEMINI_API_KEY,
        secretfiles.PGBACKREST_SECRET_CONFIG,
    } == secretfiles.MOUNTED_SECRETS
