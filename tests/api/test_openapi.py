"""The OpenAPI document is true: every route is documented, every documented route exists,
and schemathesis (bounded) finds no 5xx and no response that contradicts the schema, against
a real `python -m runtime.api` process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from runtime.api import keys
from runtime.api.app import create_app
from runtime.api.models.accounts import EMAIL_PATTERN
from runtime.api.models.sessions import CURSOR_PATTERN
from runtime.api.settings import MIGRATIONS_DIR
from runtime.common.migrations import load_migrations, migrate
from tests.api.fixtures import INTERNAL_TOKEN, PASSWORD, api_settings, write_keyring
from tests.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
# CI keeps the run short; set ORBIS_FUZZ_EXAMPLES higher for a deeper local run.
EXAMPLES_PER_OPERATION = int(os.environ.get("ORBIS_FUZZ_EXAMPLES", "25"))
TIME_BUDGET_SECONDS = float(os.environ.get("ORBIS_FUZZ_SECONDS", "60"))


def _in_the_past(value: str) -> bool:
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) <= datetime.now(UTC)


def _tools(field: str, case: Case) -> bool:
    return field == "tools" or field.startswith("tools.")


# Rules the document can state only in words (a description; JSON Schema cannot say "in the
# future" or "a code that exists"): a request that is valid by the schema but breaks one is
# refused with 422 naming the field, and only then. Every other schema-valid request must be
# accepted: the cursor, `null` in a PATCH, emails, NUL and surrogates are all in the schema.
STATED_IN_WORDS: dict[str, Callable[[str, Case], bool]] = {
    "POST /api/v1/api-keys": lambda field, case: (
        field == "expires_at" and _in_the_past(case.body["expires_at"])
    ),
    "POST /api/v1/auth/signup": lambda field, case: field == "referral_code",
    "POST /api/v1/agents": _tools,
    "PATCH /api/v1/agents/{agent_id}": _tools,
}


def positive_data_accepted(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """schemathesis's `positive_data_acceptance`, but a 422 for a rule in STATED_IN_WORDS."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        rule = STATED_IN_WORDS.get(case.operation.label)
        field = response.json()["error"]["field"] if response.status_code == 422 else None
        if rule is not None and field is not None and rule(field, case):
            return None
        raise


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_accepted,
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


def _tenant_headers(base_url: str, email: str = "fuzz@example.com") -> dict[str, str]:
    response = requests.post(
        base_url + "/api/v1/auth/signup",
        json={"org_name": "Fuzz", "email": email, "password": PASSWORD},
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
    failures: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result  # the document must load cleanly
            operation = result.ok()
            if time.monotonic() > deadline:
                break
            headers = internal if operation.path.startswith("/internal/") else tenant
            if operation.path == "/api/v1/auth/logout":
                # Logout revokes the token it is called with: the rest would all be 401.
                headers = _tenant_headers(api_process, "logout@example.com")
            try:
                _fuzz(operation, api_process, session, headers)()
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - report all
                failures.append(f"{operation.label}: {exc}")
            tested += 1
    assert not failures, "\n\n".join(failures)
    assert tested >= 20
    # The tenant's token still works: the operations were tested, not refused as 401.
    assert requests.get(api_process + "/api/v1/me", headers=tenant, timeout=10).ok


def _request_strings(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from _request_strings(item)
    elif isinstance(node, dict):
        if node.get("type") == "string":
            yield node
        for key, value in node.items():
            if key not in ("default", "examples", "enum", "const"):
                yield from _request_strings(value)


def test_request_strings_say_what_the_server_refuses(tmp_path: Path) -> None:
    """Every request string's pattern keeps out NUL (422 from the server): each negated class
    names it and no `.` matches it; free-form objects take only such strings."""
    settings = api_settings("postgresql://unused", "redis://unused", write_keyring(tmp_path))
    document = json.loads(create_app(settings)[keys.OPENAPI])
    schemas = document["components"]["schemas"]
    requests_ = [schemas[name] for name in schemas if name.endswith(("In", "Patch"))]
    for path in document["paths"].values():
        for operation in path.values():
            requests_ += [p["schema"] for p in operation.get("parameters", [])]
    strings = [s for s in _request_strings(requests_) if not {"format", "enum", "const"} & set(s)]
    assert len(strings) > 40
    for schema in strings + [
        {"pattern": p["pattern"]} for p in _request_strings(schemas["StorableJson"])
    ]:
        pattern = schema["pattern"]
        classes = re.findall(r"\[\^((?:\\.|[^\]])*)\]", pattern)
        assert all(r"\x00" in body for body in classes), pattern
        assert not re.search(r"(?<!\\)\.(?![^\[]*\])", pattern.replace(r"\.", "")), pattern
    email = schemas["SignupIn"]["properties"]["email"]
    assert (email["format"], email["pattern"]) == ("email", EMAIL_PATTERN)
    create_key = document["paths"]["/api/v1/api-keys"]["post"]
    assert "422" in create_key["responses"]
    assert "in the future" in schemas["ApiKeyIn"]["properties"]["expires_at"]["description"]
    cursor = next(
        p
        for p in document["paths"]["/api/v1/sessions"]["get"]["parameters"]
        if p["name"] == "cursor"
    )
    assert cursor["schema"]["anyOf"][0]["pattern"] == CURSOR_PATTERN
