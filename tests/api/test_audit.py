"""The hash-chained audit log: entries for sensitive actions, verification, tamper detection."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.api.fixtures import ApiHarness

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


async def test_chain_verifies_and_detects_a_tampered_row(api: ApiHarness) -> None:
    tenant = await api.signup()
    agent = await api.create_agent(tenant)
    await api.call(
        "PATCH",
        f"/api/v1/agents/{agent['id']}",
        json={"greeting": "Hey"},
        headers=tenant.headers,
        expect=200,
    )
    await api.call("DELETE", f"/api/v1/agents/{agent['id']}", headers=tenant.headers, expect=204)
    _, log = await api.call("GET", "/api/v1/audit", headers=tenant.headers, expect=200)
    assert [e["action"] for e in log["items"]] == [
        "agent.delete",
        "agent.update",
        "agent.create",
        "org.signup",
    ]
    assert log["items"][0]["prev_hash"] == log["items"][1]["hash"]
    _, verdict = await api.call("GET", "/api/v1/audit/verify", headers=tenant.headers, expect=200)
    assert verdict == {"ok": True, "entries": 4, "broken_at_seq": None, "reason": None}

    # Someone with database access rewrites history: the chain shows where.
    async with await psycopg.AsyncConnection.connect(api.settings.database_conninfo) as conn:
        await conn.execute(
            "UPDATE audit_log SET detail = '{\"fields\": []}' "
            "WHERE chain = %s AND action = 'agent.update'",
            (f"org:{tenant.org_id}",),
        )
    _, verdict = await api.call("GET", "/api/v1/audit/verify", headers=tenant.headers, expect=200)
    assert verdict["ok"] is False
    assert (verdict["broken_at_seq"], verdict["reason"]) == (3, "the entry was altered")


async def test_deleted_entry_breaks_the_chain(api: ApiHarness) -> None:
    tenant = await api.signup()
    for _ in range(2):
        await api.create_agent(tenant)
    async with await psycopg.AsyncConnection.connect(api.settings.database_conninfo) as conn:
        await conn.execute(
            "DELETE FROM audit_log WHERE chain = %s AND seq = 2", (f"org:{tenant.org_id}",)
        )
    _, verdict = await api.call("GET", "/api/v1/audit/verify", headers=tenant.headers, expect=200)
    assert (verdict["ok"], verdict["broken_at_seq"]) == (False, 2)


async def test_audit_is_tenant_isolated_and_system_chain_separate(api: ApiHarness) -> None:
    alice, mallory = await api.signup(), await api.signup()
    await api.create_agent(alice)
    _, log = await api.call("GET", "/api/v1/audit", headers=mallory.headers, expect=200)
    assert [e["action"] for e in log["items"]] == ["org.signup"]
    await api.call(
        "POST",
        "/internal/audit",
        json={"action": "jwt.rotate", "actor": "orbisctl", "detail": {"new_kid": "k-1"}},
        headers=api.internal_headers,
        expect=204,
    )
    _, system = await api.call(
        "GET", "/internal/audit/verify", headers=api.internal_headers, expect=200
    )
    assert (system["ok"], system["entries"]) == (True, 1)


def _post_audit(api: ApiHarness, tmp_path: Path, token: str, body: str) -> str:
    """`python -m runtime.api post-audit` as rotate-keys runs it in an api container: the
    API's own settings (its port, its internal token file), the entry in ORBIS_AUDIT_BODY."""
    token_file = tmp_path / "internal_token"
    token_file.write_text(token + "\n")
    port = api.url.rsplit(":", 1)[1]
    env = {
        "PATH": os.environ["PATH"],
        "ORBIS_DATABASE_URL": api.settings.database_url,
        "ORBIS_REDIS_URL": api.settings.redis_url,
        "ORBIS_JWT_KEYS_FILE": str(api.settings.jwt_keys_file),
        "ORBIS_INTERNAL_TOKEN_FILE": str(token_file),
        "ORBIS_PUBLIC_URL": "https://voice.test",
        "ORBIS_API_PORT": port,
        "ORBIS_AUDIT_BODY": body,
    }
    result = subprocess.run(
        [sys.executable, "-m", "runtime.api", "post-audit"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


async def test_post_audit_records_an_entry_in_the_system_chain(
    api: ApiHarness, tmp_path: Path
) -> None:
    body = json.dumps({"action": "secret.rotate", "actor": "orbisctl", "detail": {"kind": "jwt"}})
    assert await asyncio.to_thread(_post_audit, api, tmp_path, api.internal_token, body) == "204"
    assert await asyncio.to_thread(_post_audit, api, tmp_path, "not-the-token", body) == (
        "failed 401"
    )
    _, system = await api.call(
        "GET", "/internal/audit/verify", headers=api.internal_headers, expect=200
    )
    assert (system["ok"], system["entries"]) == (True, 1)
