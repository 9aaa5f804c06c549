"""The rendered redis entrypoint and healthcheck, run with Debian's redis-server.

The commands are taken from `docker compose config` as Compose reads the file; `$$` (Compose's
escape for a literal `$`) is unescaped as Compose does when it creates the container, and only
the container paths and the port are swapped for local ones.
"""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.services import free_port, wait_for_port

pytestmark = pytest.mark.integration

PASSWORD = "rendered-entrypoint-test-password-1234"


def compose_redis(install: Path) -> dict[str, object]:
    result = subprocess.run(
        ["docker", "compose", "-f", "compose.yaml", "config", "--format", "json"],
        cwd=install,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    service: dict[str, object] = json.loads(result.stdout)["services"]["redis"]
    return service


def localize(command: str, work: Path, port: int) -> str:
    return (
        command.replace("$$", "$")
        .replace("/run/secrets/redis_password", str(work / "redis_password"))
        .replace("/run/redis/", str(work / "run") + "/")
        .replace("--dir /data", f"--dir {work / 'data'}")
        .replace("redis-cli", f"redis-cli -p {port}")
    )


@pytest.fixture
def rendered_redis(default_install: Path, tmp_path: Path) -> Iterator[tuple[int, Path, str]]:
    service = compose_redis(default_install)
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    command = service["command"]
    assert isinstance(command, list)
    healthcheck = service["healthcheck"]
    assert isinstance(healthcheck, dict)
    (tmp_path / "run").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "redis_password").write_text(PASSWORD + "\n")
    port = free_port()
    script = localize(command[0], tmp_path, port) + f" --port {port} --bind 127.0.0.1"
    process = subprocess.Popen(["sh", "-c", script])
    try:
        wait_for_port(port)
        yield port, tmp_path, localize(healthcheck["test"][1], tmp_path, port)
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_redis_runs_with_the_acl_user_and_aof(rendered_redis: tuple[int, Path, str]) -> None:
    port, work, _ = rendered_redis
    client = redis.Redis(port=port, username="orbis", password=PASSWORD)
    assert client.ping()
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    client.close()
    acl = work / "run" / "users.acl"
    assert stat.S_IMODE(acl.stat().st_mode) == 0o600
    # `default` is off: no anonymous access, and no password gets it in.
    # (No retries: a refused login is the expected answer here.)
    anonymous = redis.Redis(port=port, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    as_default = redis.Redis(
        port=port, username="default", password=PASSWORD, retry=Retry(NoBackoff(), 0)
    )
    with pytest.raises(redis.AuthenticationError):
        as_default.ping()
    as_default.close()


def test_the_password_is_in_no_process_arguments(rendered_redis: tuple[int, Path, str]) -> None:
    port, _, _ = rendered_redis
    cmdlines = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # not a process, or it just ended
            continue
        if f"{port}".encode() in cmdline:
            cmdlines.append(cmdline)
    assert any(b"redis-server" in cmdline for cmdline in cmdlines)
    for cmdline in cmdlines:
        assert PASSWORD.encode() not in cmdline


def test_the_healthcheck_passes_and_can_fail(rendered_redis: tuple[int, Path, str]) -> None:
    port, _, healthcheck = rendered_redis
    ok = subprocess.run(["sh", "-c", healthcheck], capture_output=True, timeout=20, check=False)
    assert ok.returncode == 0, ok.stderr
    # After a password rotation the container's password file is stale: still healthy.
    client = redis.Redis(port=port, username="orbis", password=PASSWORD)
    client.acl_setuser("orbis", enabled=True, passwords=["+rotated-password", "-" + PASSWORD])
    client.close()
    rotated = subprocess.run(
        ["sh", "-c", healthcheck], capture_output=True, timeout=20, check=False
    )
    assert rotated.returncode == 0, rotated.stderr
    client = redis.Redis(port=port, username="orbis", password="rotated-password")
    client.shutdown(nosave=True)
    bad = subprocess.run(["sh", "-c", healthcheck], capture_output=True, timeout=20, check=False)
    assert bad.returncode != 0
