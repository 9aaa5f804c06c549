"""The real appliance on loopback for browser tests: API, gateway and emulator as their own
processes (`python -m runtime.…`, configured by environment variables and secret files exactly
as in the containers), on the test session's PostgreSQL and Redis, behind the install's nginx.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runtime.common.keyring import new_keyring
from tests.services import PostgresServer, RedisServer, free_port
from tests.web.support import (
    ARTIFACTS,
    INSTALL_HOST,
    REPO,
    TEST_RATE_LIMITS,
    Nginx,
    TlsFiles,
    Upstreams,
    install_nginx,
)

START_TIMEOUT_SECONDS = 30.0


@dataclass
class Stack:
    nginx: Nginx
    api_url: str  # the API directly, for test set-up (the browser goes through nginx)
    database_conninfo: str
    logs: Path
    gateways: dict[str, Gateway]  # by instance id

    @property
    def public_url(self) -> str:
        return self.nginx.origin(INSTALL_HOST)

    def api(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        # api_url is the http:// address this module started the API on.
        request = urllib.request.Request(f"{self.api_url}{path}", method=method)  # noqa: S310
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, data=data, timeout=10) as response:  # noqa: S310
            raw = response.read()
        return json.loads(raw) if raw else None

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Gateway:
    """One gateway replica: `stop()` drains it (SIGTERM) as a deploy does; `start()` again."""

    instance_id: str
    port: int
    env: dict[str, str]
    processes: _Processes
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = self.processes.start(self.instance_id, "runtime.gateway", self.env)
        log = self.processes.logs / f"{self.instance_id}.log"
        _wait_ready(f"http://127.0.0.1:{self.port}/readyz", self.process, self.instance_id, log)

    def stop(self, *, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout=timeout)

    def crash(self) -> None:
        """SIGKILL: its sockets drop with no goodbye, as when a host dies."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)


def _write_secret(path: Path, value: str) -> Path:
    path.write_text(value)
    path.chmod(0o600)
    return path


def _wait_ready(url: str, process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    last_answer = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310
                return  # 200: urlopen raises HTTPError for anything else
        except urllib.error.HTTPError as exc:
            # Not ready yet: its readiness report says which dependency is missing.
            last_answer = f"{exc.code} {exc.read().decode(errors='replace')}"
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"{name} not ready at {url} after {START_TIMEOUT_SECONDS}s; last answer: {last_answer}"
    )


class _Processes:
    def __init__(self, logs: Path, base_env: dict[str, str]) -> None:
        self.logs = logs
        self.base_env = base_env
        self.running: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**self.base_env, **env},
            stdout=subprocess.PIPE if name == "emulator" else log,
            stderr=log,
            cwd=REPO,
        )
        self.running.append((process, log))
        return process

    def stop_all(self) -> None:
        for process, _ in reversed(self.running):
            if process.poll() is None:
                process.terminate()
        for process, log in reversed(self.running):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            log.close()


@contextlib.contextmanager
def running_stack(
    pg: PostgresServer, redis_srv: RedisServer, tls: TlsFiles, *, redis_db: int = 0
) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="orbis-web-stack-") as name:
        base = Path(name)
        logs = base / "logs"
        logs.mkdir()
        secrets_dir = base / "secrets"
        secrets_dir.mkdir(mode=0o700)
        internal_token = _write_secret(secrets_dir / "internal_token", secrets.token_urlsafe(32))
        gemini_key = _write_secret(secrets_dir / "gemini_api_key", secrets.token_urlsafe(24))
        jwt_keys = _write_secret(secrets_dir / "jwt_keys.json", new_keyring().dumps())
        pg_password = _write_secret(secrets_dir / "postgres_password", pg.password)
        redis_password = _write_secret(secrets_dir / "redis_password", redis_srv.password)
        database = pg.create_database()
        redis_srv.client(redis_db).flushdb()

        nginx_port, api_port = free_port(), free_port()
        public_url = f"https://{INSTALL_HOST}:{nginx_port}"
        base_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO),
            "ORBIS_LOG_LEVEL": "info",
            "ORBIS_PUBLIC_URL": public_url,
            "ORBIS_REDIS_URL": f"redis://{redis_srv.user}@{redis_srv.host}:{redis_srv.port}/{redis_db}",
            "ORBIS_REDIS_PASSWORD_FILE": str(redis_password),
            "ORBIS_INTERNAL_TOKEN_FILE": str(internal_token),
        }
        api_env = {
            "ORBIS_DATABASE_URL": f"postgresql://{pg.user}@{pg.host}:{pg.port}/{database}",
            "ORBIS_DATABASE_PASSWORD_FILE": str(pg_password),
            "ORBIS_JWT_KEYS_FILE": str(jwt_keys),
            "ORBIS_API_PORT": str(api_port),
            "ORBIS_RATE_LIMIT_LOGIN_PER_MINUTE": str(TEST_RATE_LIMITS.login_per_minute),
        }
        processes = _Processes(logs, base_env)
        try:
            emulator = processes.start(
                "emulator",
                "runtime.emulator",
                {
                    "ORBIS_EMULATOR_HOST": "127.0.0.1",
                    "ORBIS_EMULATOR_PORT": "0",
                    "ORBIS_EMULATOR_CERT_FILE": str(tls.server_cert),
                    "ORBIS_EMULATOR_KEY_FILE": str(tls.server_key),
                    "ORBIS_EMULATOR_API_KEYS_FILE": str(gemini_key),
                },
            )
            assert emulator.stdout is not None
            # The emulator prints one JSON line with its port once it listens.
            emulator_port = json.loads(emulator.stdout.readline())["port"]

            migrate = subprocess.run(
                [sys.executable, "-m", "runtime.api", "migrate"],
                env={**base_env, **api_env},
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if migrate.returncode != 0:
                raise RuntimeError(f"migrate failed: {migrate.stderr}")
            api = processes.start("api", "runtime.api", api_env)
            _wait_ready(f"http://127.0.0.1:{api_port}/readyz", api, "api", logs / "api.log")
            gateway_env = {
                "ORBIS_API_URL": f"http://127.0.0.1:{api_port}",
                "ORBIS_GEMINI_API_KEY_FILE": str(gemini_key),
                "ORBIS_GEMINI_MODEL": "gemini-live-test",
                "ORBIS_GEMINI_BASE_URL": f"https://127.0.0.1:{emulator_port}",
                "ORBIS_GEMINI_CA_FILE": str(tls.ca_cert),
                # A drained gateway gives its calls this long to move elsewhere.
                "ORBIS_DRAIN_TIMEOUT_SECONDS": "10",
            }
            gateways: dict[str, Gateway] = {}
            for instance_id in ("gw-a", "gw-b"):
                port = free_port()
                gateway = Gateway(
                    instance_id,
                    port,
                    {
                        **gateway_env,
                        "ORBIS_GATEWAY_PORT": str(port),
                        "ORBIS_INSTANCE_ID": instance_id,
                    },
                    processes,
                )
                gateway.start()
                gateways[instance_id] = gateway
            upstreams = Upstreams(
                api=api_port, gateways=tuple(gateway.port for gateway in gateways.values())
            )
            with install_nginx(tls, upstreams, port=nginx_port) as nginx:
                yield Stack(
                    nginx=nginx,
                    api_url=f"http://127.0.0.1:{api_port}",
                    database_conninfo=pg.conninfo(database),
                    logs=logs,
                    gateways=gateways,
                )
        finally:
            processes.stop_all()
            pg.drop_database(database)
            # The services' logs are test artifacts, next to the screenshots.
            shutil.copytree(logs, ARTIFACTS / "stack-logs", dirs_exist_ok=True)
