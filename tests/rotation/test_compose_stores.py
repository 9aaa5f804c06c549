"""Redis and PostgreSQL rotations through the in-container admins (`docker exec` of
redis-cli / psql), on the appliance's own postgres and redis images."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from orbisctl import __version__
from orbisctl.core import engine
from orbisctl.core.config import OrbisConfig, dump_config
from orbisctl.core.install import open_install
from orbisctl.rotation import core
from orbisctl.rotation.compose import ComposeRoller, ExecPostgresAdmin, ExecRedisAdmin
from orbisctl.rotation.steps import RotationContext
from orbisctl.rotation.strategies import POSTGRES_OWNER, REDIS_USER, SecretKind
from tests.rotation.conftest import LocalRoller, make_install

pytestmark = pytest.mark.docker

POSTGRES_IMAGE = f"orbisvoice/postgres:15-{__version__}"
REDIS_IMAGE = f"orbisvoice/redis:7-{__version__}"
IMAGE_UID = 999  # both images run as uid 999; mounted secrets must be theirs

COMPOSE = f"""
services:
  postgres:
    image: {POSTGRES_IMAGE}
    environment:
      POSTGRES_USER: orbis
      POSTGRES_DB: orbis
      POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password
    secrets: [postgres_password]
    healthcheck:
      test: ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "orbis", "-d", "orbis"]
      interval: 1s
      retries: 60
  redis:
    image: {REDIS_IMAGE}
    entrypoint: ["/bin/sh", "-c"]
    command:
      - >-
        umask 077 &&
        printf 'user default off\\nuser orbis on >%s ~* &* +@all\\n'
        "$$(cat /run/secrets/redis_password)" > /tmp/users.acl &&
        exec redis-server --aclfile /tmp/users.acl --save ''
    secrets: [redis_password]
    healthcheck:
      test: ["CMD-SHELL", "redis-cli ping | grep -qE 'PONG|NOAUTH'"]
      interval: 1s
      retries: 30
secrets:
  postgres_password:
    file: ./secrets/postgres_password
  redis_password:
    file: ./secrets/redis_password
"""


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    client = engine.connect()
    tags = {tag for image in client.images.list() for tag in image.tags}
    if not {POSTGRES_IMAGE, REDIS_IMAGE} <= tags:
        pytest.skip("the appliance's postgres/redis images are not built here")
    name = f"rotstores{secrets.token_hex(3)}"
    root = make_install(
        tmp_path_factory.mktemp("stores") / "install", config=OrbisConfig(project_name=name)
    )
    (root / "orbis.yaml").write_text(dump_config(OrbisConfig(project_name=name)))
    (root / "compose.yaml").write_text(COMPOSE)
    for secret in ("postgres_password", "redis_password"):
        os.chown(root / "secrets" / secret, IMAGE_UID, IMAGE_UID)
    compose = open_install(root).compose()
    compose.run("up", "--detach", "--wait", timeout=180)
    try:
        yield root
    finally:
        compose.run("down", "--volumes", "--timeout", "1", timeout=120)


def _context(root: Path) -> tuple[RotationContext, ComposeRoller]:
    roller = ComposeRoller(open_install(root), engine.connect())
    ctx = RotationContext(
        install_dir=root,
        config=OrbisConfig(project_name=roller.install.config.project_name),
        roller=LocalRoller(),  # no api/gateway in this project: nothing to roll
        postgres=ExecPostgresAdmin(roller),
        redis=ExecRedisAdmin(roller),
    )
    return ctx, roller


def test_redis_rotation_through_redis_cli(stores: Path) -> None:
    ctx, _ = _context(stores)
    assert ctx.redis is not None
    old = (stores / "secrets" / "redis_password").read_text().strip()
    assert ctx.redis.can_auth(REDIS_USER, old)
    core.rotate(ctx, [SecretKind.REDIS_PASSWORD])
    new = (stores / "secrets" / "redis_password").read_text().strip()
    assert ctx.redis.can_auth(REDIS_USER, new)
    assert not ctx.redis.can_auth(REDIS_USER, old)
    # The file keeps the container user's ownership, so a restarted redis can read it.
    assert (stores / "secrets" / "redis_password").stat().st_uid == IMAGE_UID


def test_postgres_rotation_through_psql(stores: Path) -> None:
    ctx, _ = _context(stores)
    assert ctx.postgres is not None
    old = (stores / "secrets" / "postgres_password").read_text().strip()
    assert ctx.postgres.can_login(POSTGRES_OWNER, old)
    core.rotate(ctx, [SecretKind.POSTGRES_PASSWORD])
    user = (stores / "secrets" / "postgres_user").read_text().strip()
    new = (stores / "secrets" / "postgres_password").read_text().strip()
    assert user == "orbis_a"
    assert ctx.postgres.can_login(user, new)
    assert not ctx.postgres.can_login(POSTGRES_OWNER, old)
    core.rotate(ctx, [SecretKind.POSTGRES_PASSWORD])
    assert (stores / "secrets" / "postgres_user").read_text().strip() == "orbis_b"
    assert not ctx.postgres.can_login("orbis_a", new)
