"""The OpenAPI document is true: every route is documented, every documented route exists,
and schemathesis (bounded) finds no 5xx and no response that contradicts the schema, against
a real `python -m runtime.api` process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from runtime.api import keys
from runtime.api.app import create_app
from runtime.api.settings import MIGRATIONS_DIR
from runtime.common.db import load_migrations, migrate
from tests.api.fixtures import INTERNAL_TOKEN, PASSWORD, api_settings, write_keyring
from tests.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
# CI keeps the run short; set ORBIS_FUZZ_EXAMPLES higher for a deeper local run.
EXAMPLES_PER_OPERATION = int(os.environ.get("ORBIS_FUZZ_EXAMPLES", "6"))
TIME_BUDGET_SECONDS = float(os.environ.get("ORBIS_FUZZ_SECONDS", "60"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_every_route_is_documented_and_every_documented_route_exists(tmp_path: Path) -> None:
    settings = api_settings("postgresql://unused", "redis://unused", write_keyring(tmp_path))
    app = create_app(settings)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    document = json.loads(app[keys.OPENAPI])
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert served == documented
    assert document["openapi"] == "3.1.0"


def test_each_tenant_operation_names_the_scope_an_api_key_needs(tmp_path: Path) -> None:
    settings = api_settings("postgresql://unused", "redis://unused", write_keyring(tmp_path))
    paths = json.loads(create_app(settings)[keys.OPENAPI])["paths"]
    assert paths["/api/v1/agents"]["get"]["security"] == [{"bearer": ["read"]}]
    assert paths["/api/v1/agents"]["post"]["security"] == [{"bearer": ["write"]}]
    for method in ("get", "post"):
        assert paths["/api/v1/api-keys"][method]["security"] == [{"bearer": ["keys"]}]
    assert paths["/api/v1/api-keys/{key_id}"]["delete"]["security"] == [{"bearer": ["keys"]}]
    assert paths["/api/v1/auth/login"]["post"]["security"] == []


@pytest.fixture
def api_process(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[str]:
    """The API as operators run it: a separate process configured by environment."""
    asyncio.run(migrate(database_url, load_migrations(MIGRATIONS_DIR)))
    token_file = tmp_path / "internal_token"
    token_file.write_text(INTERNAL_TOKEN + "\n")
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "ORBIS_DATABASE_URL": database_url,
        "ORBIS_REDIS_URL": redis_url,
        "ORBIS_JWT_KEYS_FILE": str(write_keyring(tmp_path)),
        "ORBIS_INTERNAL_TOKEN_FILE": str(token_file),
        "ORBIS_PUBLIC_URL": "https://voice.test",
        "ORBIS_API_PORT": str(port),
        "ORBIS_LOG_LEVEL": "warning",
        "ORBIS_REFERRALS_ENABLED": "true",
        "ORBIS_RATE_LIMIT_PUBLIC_PER_MINUTE": "100000",
        "ORBIS_RATE_LIMIT_AUTHENTICATED_PER_MINUTE": "100000",
        "ORBIS_RATE_LIMIT_LOGIN_PER_MINUTE": "100000",
    }
    log = (tmp_path / "api.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.api"], cwd=REPO, env=env, stdout=log, stderr=log
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
    assert "Traceback" not in (tmp_path / "api.log").read_text()


def _tenant_headers(base_url: str) -> dict[str, str]:
    response = requests.post(
        base_url + "/api/v1/auth/signup",
        json={"org_name": "Fuzz", "email": "fuzz@example.com", "password": PASSWORD},
        timeout=10,
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _fuzz(
    operation: Any, base_url: str, session: requests.Session, headers: dict[str, str]
) -> Callable[[], None]:
    """A hypothesis test of one operation: positive cases, a few examples."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: Any) -> None:
        case = data.draw(operation.as_strategy())
        case.call_and_validate(base_url=base_url, session=session, headers=headers, checks=CHECKS)

    return run


def test_schemathesis_finds_no_server_errors_or_schema_violations(api_process: str) -> None:
    schema = schemathesis.openapi.from_url(api_process + "/openapi.json")
    tenant = _tenant_headers(api_process)
    internal = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
    deadline = time.monotonic() + TIME_BUDGET_SECONDS
    tested = 0
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result  # the document must load cleanly
            operation = result.ok()
            if time.monotonic() > deadline:
                break
            headers = internal if operation.path.startswith("/internal/") else tenant
            _fuzz(operation, api_process, session, headers)()
            tested += 1
    assert tested >= 20
