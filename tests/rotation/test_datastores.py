"""Redis and PostgreSQL rotations against real servers, with clients connecting throughout.

Each "service" opens a new connection on every iteration with the credentials it loaded at
its last restart (what a pool does when it grows or reconnects); not one attempt may fail,
and afterwards the old credentials are refused.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from orbisctl.rotation import core
from orbisctl.rotation.steps import RotationContext
from orbisctl.rotation.strategies import POSTGRES_OWNER, REDIS_USER, SecretKind
from tests.rotation.conftest import (
    LocalRoller,
    LocalService,
    RecordingAudit,
    pg_credentials,
)
from tests.rotation.helpers import kill_during_step
from tests.services import PostgresServer, RedisServer

pytestmark = pytest.mark.integration


def _redis_service(name: str, server: RedisServer, install: Path) -> LocalService:
    def load() -> dict[str, str]:
        return {"password": (install / "secrets" / "redis_password").read_text().strip()}

    def connect(credentials: dict[str, str]) -> None:
        with redis.Redis(
            host=server.host,
            port=server.port,
            username=REDIS_USER,
            password=credentials["password"],
            socket_timeout=5,
        ) as client:
            client.incr(f"hits:{name}")

    return LocalService(name, connect, load)


def _conninfo(server: PostgresServer, credentials: dict[str, str]) -> str:
    return psycopg.conninfo.make_conninfo(
        host=server.host,
        port=server.port,
        dbname="orbis",
        user=credentials["user"],
        password=credentials["password"],
        connect_timeout=5,
    )


def _pg_service(name: str, server: PostgresServer, install: Path) -> LocalService:
    def connect(credentials: dict[str, str]) -> None:
        with psycopg.connect(_conninfo(server, credentials), autocommit=True) as conn:
            row = conn.execute("SELECT current_user").fetchone()
            # The alternating login roles act as the owner, so ownership never splits.
            assert row == (POSTGRES_OWNER,), row

    return LocalService(name, connect, lambda: pg_credentials(install))


def _redis_auth(server: RedisServer, password: str) -> bool:
    try:
        with redis.Redis(
            host=server.host,
            port=server.port,
            username=REDIS_USER,
            password=password,
            retry=Retry(NoBackoff(), 0),
        ) as client:
            client.ping()
    except redis.AuthenticationError:
        return False
    return True


def _pg_login(server: PostgresServer, user: str, password: str) -> bool:
    try:
        psycopg.connect(
            host=server.host, port=server.port, dbname="orbis", user=user, password=password
        ).close()
    except psycopg.OperationalError:
        return False
    return True


def test_redis_rotation_under_load(
    redis_install: Path,
    rotation_redis: RedisServer,
    ctx: RotationContext,
    roller: LocalRoller,
    audit: RecordingAudit,
) -> None:
    old = (redis_install / "secrets" / "redis_password").read_text().strip()
    api = _redis_service("api", rotation_redis, redis_install)
    gateway = _redis_service("gateway", rotation_redis, redis_install)
    roller.services.update(api=api, gateway=gateway)
    with api.running(), gateway.running():
        core.rotate(ctx, [SecretKind.REDIS_PASSWORD], audit=audit)
        roller.roll("api")  # one more health wait: clients still connect after the end
    new = (redis_install / "secrets" / "redis_password").read_text().strip()
    assert api.failures == [] and gateway.failures == []
    assert api.successes > 10 and gateway.successes > 10
    assert new != old
    assert _redis_auth(rotation_redis, new)
    assert not _redis_auth(rotation_redis, old)
    with redis.Redis(
        host=rotation_redis.host, port=rotation_redis.port, username=REDIS_USER, password=new
    ) as client:
        assert len(client.acl_getuser(REDIS_USER)["passwords"]) == 1


def test_postgres_rotation_under_load_alternates_login_roles(
    pg_install: Path,
    rotation_pg: PostgresServer,
    ctx: RotationContext,
    roller: LocalRoller,
    audit: RecordingAudit,
) -> None:
    api = _pg_service("api", rotation_pg, pg_install)
    roller.services["api"] = api
    with api.running(threads=3):
        logins = [pg_credentials(pg_install)]
        for _ in range(3):  # owner -> orbis_a -> orbis_b -> orbis_a
            core.rotate(ctx, [SecretKind.POSTGRES_PASSWORD], audit=audit)
            logins.append(pg_credentials(pg_install))
        roller.roll("api")
    assert api.failures == []
    assert api.successes > 20
    assert [login["user"] for login in logins] == ["orbis", "orbis_a", "orbis_b", "orbis_a"]
    assert _pg_login(rotation_pg, logins[-1]["user"], logins[-1]["password"])
    for old in logins[:-1]:
        assert not _pg_login(rotation_pg, old["user"], old["password"]), old["user"]


def test_postgres_objects_created_through_a_login_role_belong_to_the_owner(
    pg_install: Path, rotation_pg: PostgresServer, ctx: RotationContext, audit: RecordingAudit
) -> None:
    core.rotate(ctx, [SecretKind.POSTGRES_PASSWORD], audit=audit)
    first = pg_credentials(pg_install)
    with psycopg.connect(_conninfo(rotation_pg, first), autocommit=True) as conn:
        conn.execute("CREATE TABLE agents (id int)")
    core.rotate(ctx, [SecretKind.POSTGRES_PASSWORD], audit=audit)
    second = pg_credentials(pg_install)
    assert second["user"] != first["user"]
    with psycopg.connect(_conninfo(rotation_pg, second), autocommit=True) as conn:
        conn.execute("ALTER TABLE agents ADD COLUMN name text")  # needs ownership
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'agents'"
        ).fetchone()
    assert owner == (POSTGRES_OWNER,)


@pytest.mark.parametrize("index", range(9))
@pytest.mark.parametrize("direction", ["resume", "abort"])
def test_killed_redis_rotation_ends_consistent(
    index: int,
    direction: str,
    redis_install: Path,
    rotation_redis: RedisServer,
    ctx: RotationContext,
    audit: RecordingAudit,
) -> None:
    old = (redis_install / "secrets" / "redis_password").read_text().strip()
    name = kill_during_step(ctx, [SecretKind.REDIS_PASSWORD], index, after_effects=True)
    if direction == "abort" and name != "finish":
        core.abort(ctx, audit=audit)
    else:
        core.resume(ctx, audit=audit)
    current = (redis_install / "secrets" / "redis_password").read_text().strip()
    assert (current == old) == (direction == "abort" and name != "finish")
    assert _redis_auth(rotation_redis, current)
    if current != old:
        assert not _redis_auth(rotation_redis, old)
    with redis.Redis(
        host=rotation_redis.host, port=rotation_redis.port, username=REDIS_USER, password=current
    ) as client:
        assert len(client.acl_getuser(REDIS_USER)["passwords"]) == 1


@pytest.mark.parametrize("index", range(8))
@pytest.mark.parametrize("direction", ["resume", "abort"])
def test_killed_postgres_rotation_ends_consistent(
    index: int,
    direction: str,
    pg_install: Path,
    rotation_pg: PostgresServer,
    ctx: RotationContext,
    audit: RecordingAudit,
) -> None:
    before = pg_credentials(pg_install)
    name = kill_during_step(ctx, [SecretKind.POSTGRES_PASSWORD], index, after_effects=True)
    if direction == "abort" and name != "finish":
        core.abort(ctx, audit=audit)
    else:
        core.resume(ctx, audit=audit)
    after = pg_credentials(pg_install)
    assert (after == before) == (direction == "abort" and name != "finish")
    assert _pg_login(rotation_pg, after["user"], after["password"])
    if after != before:
        assert not _pg_login(rotation_pg, before["user"], before["password"])
    # Exactly one role still takes a password login: the one in secrets/postgres_user.
    with psycopg.connect(rotation_pg.conninfo("orbis"), autocommit=True) as conn:
        logins = conn.execute(
            "SELECT rolname FROM pg_authid WHERE rolpassword IS NOT NULL AND rolcanlogin "
            "AND rolname LIKE 'orbis%' ORDER BY 1"
        ).fetchall()
    assert logins == [(after["user"],)]
