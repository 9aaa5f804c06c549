"""Helpers for tests and benchmarks that need a running emulator and a client that trusts it.

    async with running_emulator(tmp_path, scenario={...}) as emulator:
        client = emulator.client()                      # a google-genai Client pointed at it
        async with asyncio.timeout(10):
            async with client.aio.live.connect(model="gemini-live", config=cfg) as session: ...
        stats = await emulator.get_json("/stats")

`emulator_process(...)` is the same in its own OS process (`python -m runtime.emulator`), for
tests that kill it mid-call and for benchmarks. Scenario objects are written as YAML; settings
overrides use the names of `EmulatorSettings` fields (e.g. `connection_cap_seconds=3`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from google import genai
from google.genai import types

from runtime.common.certs import key_pem, new_key, self_signed_ca
from runtime.emulator.app import create_app, server_ssl_context
from runtime.emulator.settings import EmulatorSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_API_KEY = "emulator-test-key"
START_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class CertPair:
    cert_file: Path
    key_file: Path


def write_atomic(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a file."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def generate_self_signed_cert(
    directory: Path, *, hosts: Iterable[str] = ("127.0.0.1", "localhost"), days: int = 2
) -> CertPair:
    """A self-signed certificate (its own trust anchor) for the given host names / IPs."""
    directory.mkdir(parents=True, exist_ok=True)
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orbis emulator (test)")])
    cert = self_signed_ca(key, subject, days=days, names=hosts)
    pair = CertPair(directory / "emulator.crt", directory / "emulator.key")
    write_atomic(pair.cert_file, cert.public_bytes(serialization.Encoding.PEM).decode(), mode=0o644)
    write_atomic(pair.key_file, key_pem(key).decode())
    return pair


def client_ssl_context(cert_file: Path) -> ssl.SSLContext:
    """A client context that trusts exactly the emulator's certificate."""
    return ssl.create_default_context(cafile=str(cert_file))


@dataclass
class EmulatorHandle:
    """A running emulator: where it is, how to trust it, and a key it accepts."""

    port: int
    cert: CertPair
    api_keys_file: Path
    api_key: str = DEFAULT_API_KEY
    host: str = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        return client_ssl_context(self.cert.cert_file)

    def http_options(self, **websocket_args: Any) -> types.HttpOptions:
        """Options for `genai.Client`; extra keys go to `websockets.connect` (e.g. max_size)."""
        return types.HttpOptions(
            base_url=self.base_url,
            async_client_args={"ssl": self.ssl_context(), **websocket_args},
        )

    def client(self, api_key: str | None = None, **websocket_args: Any) -> genai.Client:
        return genai.Client(
            api_key=api_key or self.api_key, http_options=self.http_options(**websocket_args)
        )

    def set_api_keys(self, keys: Iterable[str]) -> None:
        """Replace the accepted keys (atomically); the emulator sees it on the next connection."""
        write_atomic(self.api_keys_file, "".join(f"{key}\n" for key in keys))

    async def get_json(self, path: str) -> Any:
        """GET an admin route (/healthz, /stats, /sessions) and decode its JSON."""
        connector = aiohttp.TCPConnector(ssl=self.ssl_context())
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get(self.base_url + path, timeout=aiohttp.ClientTimeout(total=10)) as response,
        ):
            response.raise_for_status()
            return await response.json()


def _prepare(
    directory: Path, scenario: object | None, api_keys: Iterable[str], cert: CertPair | None
) -> tuple[CertPair, Path, Path | None]:
    directory.mkdir(parents=True, exist_ok=True)
    cert = cert or generate_self_signed_cert(directory)
    keys_file = directory / "emulator_api_keys"
    write_atomic(keys_file, "".join(f"{key}\n" for key in api_keys))
    scenario_file = None
    if scenario is not None:
        scenario_file = directory / "emulator_scenario.yaml"
        text = scenario if isinstance(scenario, str) else yaml.safe_dump(scenario)
        write_atomic(scenario_file, text, mode=0o644)
    return cert, keys_file, scenario_file


@asynccontextmanager
async def running_emulator(
    directory: Path,
    *,
    scenario: object | None = None,
    api_keys: Iterable[str] = (DEFAULT_API_KEY,),
    cert: CertPair | None = None,
    **settings: Any,
) -> AsyncIterator[EmulatorHandle]:
    """The emulator in this process and event loop, on a free loopback port."""
    keys = list(api_keys)
    cert, keys_file, scenario_file = _prepare(directory, scenario, keys, cert)
    emulator_settings = EmulatorSettings(
        host="127.0.0.1",
        port=0,
        cert_file=cert.cert_file,
        key_file=cert.key_file,
        api_keys_file=keys_file,
        scenario_file=scenario_file,
        **settings,
    )
    runner = web.AppRunner(create_app(emulator_settings), shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(emulator_settings))
    await site.start()
    try:
        yield EmulatorHandle(
            port=runner.addresses[0][1],
            cert=cert,
            api_keys_file=keys_file,
            api_key=keys[0] if keys else DEFAULT_API_KEY,
        )
    finally:
        await runner.cleanup()


@dataclass
class EmulatorProcess(EmulatorHandle):
    process: asyncio.subprocess.Process | None = None

    def kill(self) -> None:
        """SIGKILL: the emulator vanishes mid-whatever, with no close frames (a crash)."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self, grace_seconds: float = 10.0) -> int | None:
        """SIGTERM and wait (SIGKILL after the grace period); returns the exit status."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(grace_seconds):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        return process.returncode


@asynccontextmanager
async def emulator_process(
    directory: Path,
    *,
    scenario: object | None = None,
    api_keys: Iterable[str] = (DEFAULT_API_KEY,),
    cert: CertPair | None = None,
    settings: Mapping[str, object] | None = None,
) -> AsyncIterator[EmulatorProcess]:
    """`python -m runtime.emulator` as a child process on a free loopback port.

    Its log goes to `directory/emulator.log`. The port is read from the line the emulator prints
    once it listens, so there is no port race and no polling.
    """
    keys = list(api_keys)
    cert, keys_file, scenario_file = _prepare(directory, scenario, keys, cert)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "ORBIS_EMULATOR_HOST": "127.0.0.1",
        "ORBIS_EMULATOR_PORT": "0",
        "ORBIS_EMULATOR_CERT_FILE": str(cert.cert_file),
        "ORBIS_EMULATOR_KEY_FILE": str(cert.key_file),
        "ORBIS_EMULATOR_API_KEYS_FILE": str(keys_file),
    }
    if scenario_file is not None:
        env["ORBIS_EMULATOR_SCENARIO_FILE"] = str(scenario_file)
    for name, value in (settings or {}).items():
        env[f"ORBIS_EMULATOR_{name.upper()}"] = str(value)
    with (directory / "emulator.log").open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "runtime.emulator",
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            env=env,
            cwd=REPO_ROOT,
        )
    handle = EmulatorProcess(
        port=0,
        cert=cert,
        api_keys_file=keys_file,
        api_key=keys[0] if keys else DEFAULT_API_KEY,
        process=process,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            line = await process.stdout.readline()
        if not line:
            log_text = (directory / "emulator.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"emulator exited before listening: {log_text}")
        handle.port = int(json.loads(line)["port"])
        yield handle
    finally:
        await handle.stop()
