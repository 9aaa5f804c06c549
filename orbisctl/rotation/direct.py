"""`PostgresAdmin`, `RedisAdmin` and `GeminiProbe` over direct network connections.

Used where the data stores are reachable from the host (tests against real servers, or a
stack adapter that forwards a port). Passwords are sent to PostgreSQL only as SCRAM verifiers
computed client-side, so no plaintext password reaches its statement log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry

SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations


def scram_sha256_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677), so a
    password reaches the server only in this one-way form. Our passwords are ASCII, which
    SASLprep leaves unchanged."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


@dataclass(frozen=True)
class DirectPostgresAdmin:
    host: str
    port: int
    dbname: str
    admin_user: str
    admin_password: str
    connect_timeout: int = 5

    def _conninfo(self, user: str, password: str) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host,
            port=self.port,
            dbname=self.dbname,
            user=user,
            password=password,
            connect_timeout=self.connect_timeout,
        )

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self._conninfo(self.admin_user, self.admin_password), autocommit=True
        )

    def enable_login(self, role: str, password: str, *, owner: str) -> None:
        with self._admin() as conn:
            verifier = scram_sha256_verifier(password)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            name, secret = sql.Identifier(role), sql.Literal(verifier)
            if exists is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(name, secret))
            else:
                conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(name, secret))
            if role != owner:
                # Sessions of the login role run as the owner, so objects created through
                # either alternating role (migrations) are owned by the owner.
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), name))
                conn.execute(
                    sql.SQL("ALTER ROLE {} SET role = {}").format(name, sql.Literal(owner))
                )

    def disable_login(self, role: str, *, owner: str) -> None:
        with self._admin() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if exists is None:
                return
            name = sql.Identifier(role)
            if role == owner:
                # The owner keeps LOGIN for local (socket) administration; only its password
                # goes, which is what the services used.
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD NULL").format(name))
            else:
                conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(name))

    def can_login(self, role: str, password: str) -> bool:
        try:
            with psycopg.connect(self._conninfo(role, password)) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            # libpq reports a refused login without a SQLSTATE; the server answering the
            # admin connection tells a refusal apart from an outage (which raises here).
            with self._admin() as conn:
                conn.execute("SELECT 1")
            return False
        return True


@dataclass(frozen=True)
class DirectRedisAdmin:
    host: str
    port: int
    timeout: float = 5.0

    def _client(self, user: str, password: str) -> redis.Redis:
        return redis.Redis(
            host=self.host,
            port=self.port,
            username=user,
            password=password,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # redis-py retries a refused AUTH with backoff (~4 s); a refusal is an answer here.
            retry=Retry(NoBackoff(), 0),
        )

    def _password_hashes(self, client: redis.Redis, user: str) -> set[str]:
        info = client.acl_getuser(user)
        if info is None:
            return set()
        hashes = info.get("passwords", [])
        return {str(item) for item in hashes} if isinstance(hashes, list) else set()

    def add_password(self, user: str, password: str, *, auth: str) -> None:
        with self._client(user, auth) as client:
            if _redis_hash(password) not in self._password_hashes(client, user):
                client.execute_command("ACL", "SETUSER", user, f">{password}")

    def remove_password(self, user: str, password: str, *, auth: str) -> None:
        with self._client(user, auth) as client:
            # Removing a password the user does not have is an error in Redis.
            if _redis_hash(password) in self._password_hashes(client, user):
                client.execute_command("ACL", "SETUSER", user, f"<{password}")

    def can_auth(self, user: str, password: str) -> bool:
        try:
            with self._client(user, password) as client:
                client.ping()
        except redis.AuthenticationError:
            return False
        return True


def _redis_hash(password: str) -> str:
    """How Redis lists a password in ACL GETUSER: its SHA-256 in hex."""
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True)
class SdkGeminiProbe:
    """Opens a Live session through google-genai, exactly as the gateway does."""

    model: str
    base_url: str | None = None  # None: Google's endpoint
    ca_file: Path | None = None
    timeout: float = 15.0

    def check(self, api_key: str) -> str | None:
        # Imported here: google-genai takes ~0.5 s to import and every `orbisctl` start-up
        # loads this module through `rotate-keys`; and only direct mode needs the SDK here.
        from runtime.gateway.keyprobe import probe_key

        return asyncio.run(
            probe_key(
                api_key,
                model=self.model,
                base_url=self.base_url or "",
                ca_file=self.ca_file,
                within_seconds=self.timeout,
            )
        )
