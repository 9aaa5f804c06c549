"""Expand and contract, checked: the previous release's API (its code from the commit
CHANGELOG.md records) keeps serving while this release's migrations are applied under it, and
this release's API reads what the previous one wrote.

This is the mixed window of a rolling upgrade: old api replicas serve beside new ones on the
new schema until the roll ends (docs/operations.md, "Versions and upgrades").
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.api.fixtures import INTERNAL_TOKEN, PASSWORD, api_settings, start_api
from tests.releases import Release, extract, in_git_checkout, releases
from tests.services import free_port

pytestmark = pytest.mark.integration

READY_TIMEOUT_SECONDS = 60


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> tuple[Release, Path]:
    """The newest cut release and its `runtime` package, extracted from its commit."""
    if not in_git_checkout():
        pytest.skip("not a git checkout: the previous release's code cannot be read")
    release = next(r for r in releases() if r.cut)
    root = extract(release.fields["Commit"], ["runtime"], tmp_path_factory.mktemp("previous"))
    return release, root


@dataclass
class OldApi:
    url: str
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, *, json: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with self.http.request(method, self.url + path, json=json, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)


def _environment(database_url: str, redis_url: str, keys: Path, secrets: Path) -> dict[str, str]:
    token_file = secrets / "internal_token"
    token_file.write_text(INTERNAL_TOKEN + "\n")
    return {
        "PATH": os.environ["PATH"],
        "ORBIS_DATABASE_URL": database_url,
        "ORBIS_REDIS_URL": redis_url,
        "ORBIS_JWT_KEYS_FILE": str(keys),
        "ORBIS_INTERNAL_TOKEN_FILE": str(token_file),
        "ORBIS_PUBLIC_URL": "https://voice.test",
        "ORBIS_API_PORT": str(free_port()),
        "ORBIS_RATE_LIMIT_LOGIN_PER_MINUTE": "1000",
    }


# Run by the previous release's Python code: its keyring, which both releases read.
_WRITE_KEYRING = (
    "import sys; from runtime.common.keyring import new_keyring; "
    "open(sys.argv[1], 'w').write(new_keyring().dumps())"
)


@pytest.fixture
def old_env(
    previous: tuple[Release, Path], database_url: str, redis_url: str, tmp_path: Path
) -> dict[str, str]:
    _, code = previous
    keys = tmp_path / "jwt_keys.json"
    subprocess.run(
        [sys.executable, "-c", _WRITE_KEYRING, str(keys)],
        cwd=code, env={"PYTHONPATH": str(code), "PATH": os.environ["PATH"]},
        check=True, timeout=60,
    )  # fmt: skip
    keys.chmod(0o600)
    return {**_environment(database_url, redis_url, keys, tmp_path), "PYTHONPATH": str(code)}


@pytest.fixture
def old_server(
    previous: tuple[Release, Path], old_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """The previous release's API: its own `migrate`, then serving on a free port."""
    _, code = previous
    command = [sys.executable, "-m", "runtime.api"]
    migrated = subprocess.run(
        [*command, "migrate"],
        cwd=code, env=old_env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    log = tmp_path / "previous-api.log"
    with log.open("wb") as sink:
        server = subprocess.Popen([*command, "serve"], cwd=code, env=old_env, stderr=sink)
    try:
        yield f"http://127.0.0.1:{old_env['ORBIS_API_PORT']}", server, log
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
async def old_api(old_server: tuple[str, subprocess.Popen[bytes], Path]) -> AsyncIterator[OldApi]:
    url, server, log = old_server
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not await _ready(http, url):
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
        yield OldApi(url, http)


async def _ready(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url + "/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientConnectionError:
        return False


def _schema(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert row is not None
    return int(row[0])


async def test_the_previous_release_serves_on_this_release_s_schema(
    previous: tuple[Release, Path],
    old_api: OldApi,
    old_env: dict[str, str],
    database_url: str,
    redis_url: str,
) -> None:
    release, _ = previous
    assert _schema(database_url) == int(release.fields["Schema"])
    # Written by the previous release, on its own schema.
    email = "owner@example.com"
    status, signed_up = await old_api.call(
        "POST",
        "/api/v1/auth/signup",
        json={"org_name": "Acme", "email": email, "password": PASSWORD},
    )
    assert status == 201, signed_up
    token = signed_up["access_token"]
    status, agent = await old_api.call(
        "POST",
        "/api/v1/agents",
        json={"name": "Front desk", "instructions": "Be helpful."},
        token=token,
    )
    assert status == 201, agent
    status, old_key = await old_api.call(
        "POST", "/api/v1/api-keys", json={"name": "ci"}, token=token
    )
    assert status == 201, old_key

    # This release's migrations run under it, and this release's API serves beside it.
    settings = api_settings(database_url, redis_url, Path(old_env["ORBIS_JWT_KEYS_FILE"]))
    async with start_api(settings) as new_api:
        assert _schema(database_url) > int(release.fields["Schema"])

        # The previous release on the new schema: signing in, reading, writing, keys.
        status, login = await old_api.call(
            "POST", "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert status == 200, login
        token = login["access_token"]
        status, listed = await old_api.call("GET", "/api/v1/agents", token=token)
        assert status == 200 and [a["id"] for a in listed["items"]] == [agent["id"]], listed
        status, second = await old_api.call(
            "POST",
            "/api/v1/agents",
            json={"name": "Night desk", "instructions": "Be brief."},
            token=token,
        )
        assert status == 201, second
        status, new_key = await old_api.call(
            "POST", "/api/v1/api-keys", json={"name": "roll"}, token=token
        )
        assert status == 201, new_key  # 0005 gave scopes the default the old insert needs
        status, _ = await old_api.call("GET", "/api/v1/agents", token=old_key["key"])
        assert status == 200

        # This release reads what the previous one wrote, its API keys included.
        _, me = await new_api.call(
            "POST", "/api/v1/auth/login", json={"email": email, "password": PASSWORD}, expect=200
        )
        headers = {"Authorization": f"Bearer {me['access_token']}"}
        _, agents = await new_api.call("GET", "/api/v1/agents", headers=headers, expect=200)
        assert {a["id"] for a in agents["items"]} == {agent["id"], second["id"]}
        _, keys = await new_api.call("GET", "/api/v1/api-keys", headers=headers, expect=200)
        assert {k["id"]: k["scopes"] for k in keys["items"]} == {
            old_key["id"]: ["read", "write", "keys"],
            new_key["id"]: ["read", "write", "keys"],
        }
        for key in (old_key, new_key):
            await new_api.call(
                "GET",
                "/api/v1/agents",
                headers={"Authorization": f"Bearer {key['key']}"},
                expect=200,
            )
