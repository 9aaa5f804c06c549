"""End to end on a real Compose stack, as the issue checks it: while a load generator sends API
requests (GET and POST) and holds live calls through nginx, each secret is rotated, then all
of them; zero failed requests, zero dropped calls, and afterwards every old value is refused.
Also: a rotation killed mid-roll, then resumed, with the stack serving throughout."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yaml

from orbisctl import __version__
from orbisctl.core import engine
from runtime.api.security import issue_access_token
from runtime.common.keyring import KeyRing
from tests.e2e.logs import ServiceLogs
from tests.e2e.traffic import HELD_CALLS, ORBISCTL, ServedStack, Traffic, orbisctl
from tests.gateway.support import ORIGIN
from tests.services import free_port

pytestmark = pytest.mark.docker

IMAGES = {
    f"orbisvoice/runtime:{__version__}",
    f"orbisvoice/postgres:15-{__version__}",
    f"orbisvoice/redis:7-{__version__}",
}


@dataclass
class Stack(ServedStack):
    def secret(self, name: str) -> str:
        return (self.root / "secrets" / name).read_text()

    def container(self, service: str) -> Any:
        client = engine.connect()
        return next(
            container
            for container in engine.project_containers(client, self.project)
            if container.labels.get(engine.SERVICE_LABEL) == service
            and container.status == "running"
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = engine.connect()
    tags = {tag for image in client.images.list() for tag in image.tags}
    if not tags >= IMAGES:
        pytest.skip("the appliance's local images are not built (`orbisctl images build`)")
    root = tmp_path_factory.mktemp("e2e") / "orbis"
    https_port = free_port()
    init = orbisctl(
        "init", "--dir", str(root), "--non-interactive", "--model", "emulator",
        "--image-source", "local", "--http-port", str(free_port()),
        "--https-port", str(https_port),
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    project = f"rote2e{secrets.token_hex(3)}"
    config = yaml.safe_load((root / "orbis.yaml").read_text())
    config["project_name"] = project
    # The load generator is one client: every answer must be the API's own, never a 429.
    config["rate_limits"] = {"public_per_minute": 100_000, "authenticated_per_minute": 100_000}
    # Held calls stay silent between rotations.
    config.setdefault("gateway", {}).update(idle_timeout_seconds=3600, max_call_seconds=3600)
    (root / "orbis.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert orbisctl("render", "--dir", str(root)).returncode == 0
    logs_dir = tmp_path_factory.mktemp("service-logs")
    with ServiceLogs(project, logs_dir) as logs:
        try:
            up = orbisctl("up", "--dir", str(root), "--timeout", "400")
            assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
            yield Stack(root, https_port, project, logs)
        finally:
            orbisctl("down", "--dir", str(root), "--volumes", "--yes", timeout=300)


def _internal_token_answer(stack: Stack, token: str) -> str:
    """The API's error code for POST /internal/calls with `token`, asked from a gateway."""
    client = engine.connect()
    gateway = next(
        container
        for container in engine.project_containers(client, stack.project)
        if container.labels.get(engine.SERVICE_LABEL) == "gateway" and container.status == "running"
    )
    script = (
        "import json, os, urllib.request, urllib.error\n"
        "request = urllib.request.Request('http://api:3000/internal/calls', method='POST',"
        ' data=b\'{"token": "x", "origin": "https://a.example", "instance_id": "t"}\','
        " headers={'Authorization': 'Bearer ' + os.environ['TOKEN'],"
        " 'Content-Type': 'application/json'})\n"
        "try:\n    urllib.request.urlopen(request, timeout=10)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(json.load(exc)['error']['code'])\n"
    )
    exit_code, output = gateway.exec_run(["python", "-c", script], environment={"TOKEN": token})
    assert exit_code == 0, output
    return str(output.decode().strip().splitlines()[-1])


def _all_healthy(stack: Stack) -> None:
    status = orbisctl("status", "--dir", str(stack.root), "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    rows = rows["services"] if isinstance(rows, dict) else rows
    long_running = [row for row in rows if row.get("state") != "exited"]
    assert long_running and all(row.get("health") == "healthy" for row in long_running), rows


async def _owner_and_agent(stack: Stack) -> tuple[str, str]:
    """A signed-up owner's access token and the public id of their agent."""
    connector = aiohttp.TCPConnector(ssl=stack.ssl_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(
            f"{stack.url}/api/v1/auth/signup",
            json={
                "org_name": "Shop",
                "email": f"owner-{os.urandom(4).hex()}@example.com",
                "password": "correct horse battery staple",
            },
        ) as response:
            body = await response.json()
            assert response.status == 201, body
        token = str(body["access_token"])
        async with http.post(
            f"{stack.url}/api/v1/agents",
            json={"name": "Desk", "instructions": "Be helpful.", "allowed_origins": [ORIGIN]},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            agent = await response.json()
            assert response.status == 201, agent
    return token, str(agent["public_id"])


async def _me_status(stack: Stack, access_token: str) -> int:
    connector = aiohttp.TCPConnector(ssl=stack.ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(
            f"{stack.url}/api/v1/me", headers={"Authorization": f"Bearer {access_token}"}
        ) as response,
    ):
        return response.status


def _redis_accepts(stack: Stack, password: str) -> bool:
    _, output = stack.container("redis").exec_run(
        ["redis-cli", "--no-auth-warning", "--user", "orbis", "ping"],
        environment={"REDISCLI_AUTH": password},
    )
    return bool(output.decode().strip() == "PONG")


def _postgres_accepts(stack: Stack, role: str, password: str) -> bool:
    exit_code, output = stack.container("postgres").exec_run(
        ["psql", "-X", "-h", "127.0.0.1", "-U", role, "-d", "orbis", "-c", "SELECT 1"],
        environment={"PGPASSWORD": password},
    )
    text = output.decode()
    assert exit_code == 0 or "authentication failed" in text or "not permitted" in text, text
    return int(exit_code) == 0


_GEMINI_PROBE = """
import asyncio, os, ssl
from google import genai
from google.genai import types
async def main():
    ca = ssl.create_default_context(cafile=os.environ["ORBIS_GEMINI_CA_FILE"])
    options = types.HttpOptions(
        base_url=os.environ["ORBIS_GEMINI_BASE_URL"], async_client_args={"ssl": ca}
    )
    client = genai.Client(api_key=os.environ["KEY"], http_options=options)
    config = types.LiveConnectConfig(response_modalities=[types.Modality.AUDIO])
    try:
        async with client.aio.live.connect(model=os.environ["ORBIS_GEMINI_MODEL"], config=config):
            print("accepted")
    except Exception as exc:
        print("refused", getattr(exc, "code", type(exc).__name__))
asyncio.run(main())
"""


def _emulator_answer(stack: Stack, key: str) -> str:
    """What the emulator says to a Live session opened with `key` from a gateway container."""
    _, output = stack.container("gateway").exec_run(
        ["python", "-c", _GEMINI_PROBE], environment={"KEY": key}
    )
    return str(output.decode().strip().splitlines()[-1])


def _audit_actions(stack: Stack) -> list[dict[str, Any]]:
    """The system audit chain's rotation entries, read in PostgreSQL."""
    _, output = stack.container("postgres").exec_run(
        ["psql", "-X", "-At", "-U", "orbis", "-d", "orbis", "-c",
         "SELECT detail FROM audit_log WHERE chain = 'system' AND action = 'secret.rotate'"],
    )  # fmt: skip
    return [json.loads(line) for line in output.decode().splitlines() if line.strip()]


def _make_jwt_grace_over(stack: Stack) -> None:
    """Move every verify-only key's retirement back past the longest token lifetime, as if
    15 minutes had passed (the file keeps its owner and mode)."""
    path = stack.root / "secrets" / "jwt_keys.json"
    ring = json.loads(path.read_text())
    for key in ring["keys"]:
        if key["use"] == "verify":
            past = datetime.now(UTC) - timedelta(hours=1)
            key["retired_at"] = past.strftime("%Y-%m-%dT%H:%M:%SZ")
    info = path.stat()
    staged = path.with_name(".jwt_keys.json.e2e")
    staged.write_text(json.dumps(ring))
    staged.chmod(0o600)
    os.chown(staged, info.st_uid, info.st_gid)
    staged.replace(path)


def test_each_secret_then_all_under_requests_and_live_calls(stack: Stack, tmp_path: Path) -> None:
    started = time.monotonic()
    access_token, public_id = asyncio.run(_owner_and_agent(stack))
    old = {name: stack.secret(name).strip() for name in (
        "redis_password", "postgres_password", "postgres_user", "gemini_api_key",
        "internal_token", "backup_key",
    )}  # fmt: skip
    signing_kid = jwt.get_unverified_header(access_token)["kid"]
    new_key_file = tmp_path / "gemini_key"
    new_key_file.write_text(f"emulator-{secrets.token_urlsafe(32)}\n")
    new_key_file.chmod(0o600)
    choices = [
        ["--backup-key"], ["--jwt"], ["--internal-token"], ["--redis-password"],
        ["--db-password"], ["--gemini-key-file", str(new_key_file)], ["--all"],
    ]  # fmt: skip
    durations: dict[str, float] = {}
    outputs = ""
    with Traffic(stack, public_id) as traffic:
        for choice in choices:
            begun = time.monotonic()
            rotated = orbisctl("rotate-keys", "--dir", str(stack.root), *choice)
            durations[choice[0]] = round(time.monotonic() - begun, 1)
            assert rotated.returncode == 0, (choice, rotated.stderr[-2000:])
            outputs += rotated.stdout + rotated.stderr
    traffic.assert_clean()
    assert traffic.moves >= HELD_CALLS  # the gateway rolls moved the held calls

    # Every old value is refused now; the current ones work.
    current = {name: stack.secret(name).strip() for name in old}
    assert all(current[name] != old[name] for name in old if name != "postgres_user")
    assert not _redis_accepts(stack, old["redis_password"])
    assert _redis_accepts(stack, current["redis_password"])
    assert not _postgres_accepts(stack, old["postgres_user"], old["postgres_password"])
    assert _postgres_accepts(stack, current["postgres_user"], current["postgres_password"])
    assert current["postgres_user"] != old["postgres_user"]
    assert _emulator_answer(stack, old["gemini_api_key"]).startswith("refused")
    assert _emulator_answer(stack, new_key_file.read_text().strip()).startswith("refused")
    assert _emulator_answer(stack, current["gemini_api_key"]) == "accepted"
    assert _internal_token_answer(stack, old["internal_token"]) == "unauthorized"
    # A token signed by a key now verify-only still works until its lifetime is over; once
    # the key is dropped, it is refused. (Minted with the first key: the signup's own token
    # may have expired by now.)
    first_key = KeyRing.loads(stack.secret("jwt_keys.json")).verification_key(signing_kid)
    assert first_key is not None and first_key.use == "verify"
    claims = jwt.decode(access_token, options={"verify_signature": False})
    old_key_token = issue_access_token(
        KeyRing.of([replace(first_key, use="sign", retired_at=None)]),
        user_id=claims["sub"], org_id=claims["org"], ttl_seconds=900,
    )  # fmt: skip
    assert asyncio.run(_me_status(stack, old_key_token)) == 200
    _make_jwt_grace_over(stack)
    dropped = orbisctl("rotate-keys", "--dir", str(stack.root), "--resume")
    assert dropped.returncode == 0, dropped.stderr[-2000:]
    ring = KeyRing.loads(stack.secret("jwt_keys.json"))
    assert signing_kid not in ring.kids and len(ring.kids) == 1
    assert asyncio.run(_me_status(stack, old_key_token)) == 401

    # One audit entry per rotated kind, in the API's system audit chain; no value anywhere.
    audited = Counter(entry["kind"] for entry in _audit_actions(stack))
    assert audited["redis_password"] == 2 and audited["postgres_password"] == 2, audited
    assert audited["jwt_retire"] == 1 and audited["backup_key"] == 2, audited
    for value in [*old.values(), *current.values()]:
        if len(value) > 8:
            assert value not in outputs
    _all_healthy(stack)
    print(f"rotation e2e: {durations} total {time.monotonic() - started:.0f}s")


def test_a_killed_rotation_is_resumed_under_load(stack: Stack) -> None:
    old_token = stack.secret("internal_token").strip()
    _, public_id = asyncio.run(_owner_and_agent(stack))
    journal = stack.root / "rotation" / "journal.json"
    process = subprocess.Popen(
        [*ORBISCTL, "rotate-keys", "--dir", str(stack.root), "--internal-token"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    done = 0
    while done < 3 and time.monotonic() < deadline and process.poll() is None:
        if journal.exists():
            done = sum(
                step["status"] == "done" for step in json.loads(journal.read_text())["steps"]
            )
        time.sleep(0.2)
    assert done >= 3, "the rotation never reached its roll"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    accepted = stack.secret("internal_token").split()
    assert len(accepted) == 2 and old_token in accepted  # old and new accepted
    (new_token,) = set(accepted) - {old_token}
    with Traffic(stack, public_id, calls=1) as traffic:
        resumed = orbisctl("rotate-keys", "--dir", str(stack.root), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    traffic.assert_clean()
    assert stack.secret("internal_token").strip() == new_token
    assert _internal_token_answer(stack, old_token) == "unauthorized"
    assert not journal.exists()
    _all_healthy(stack)
