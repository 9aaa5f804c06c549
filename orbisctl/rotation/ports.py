"""What a rotation needs from the running stack, as small interfaces.

The rotation core decides *what* happens and in which order; these interfaces do the
stack-specific parts. `orbisctl.rotation.direct` implements the data-store ones over plain
network connections (tests, and hosts where PostgreSQL/Redis are reachable); the Compose
engine (issue 5) implements `ServiceRoller` and may implement the others through
`docker compose exec`.
"""

from __future__ import annotations

from typing import Protocol


class ServiceRoller(Protocol):
    def roll(self, service: str) -> None:
        """Restart every replica of `service`, one at a time, so each re-reads its secret files.

        Each replica must be healthy before the next one goes; a gateway replica drains first
        (no new calls, live calls end or get a reconnect hint). A service that is not deployed
        is skipped. Raises `orbisctl.core.errors.UnhealthyError` when a replica does not come back.
        """
        ...

    def reload(self, service: str) -> None:
        """Make `service` see its changed secret files without ending its connections.

        The emulator re-reads ORBIS_EMULATOR_API_KEYS_FILE when it changes; the implementation
        must make the new file visible inside the container (an atomically replaced file is a
        new inode, which a single-file bind mount does not follow) and wait until it is read.
        """
        ...


class PostgresAdmin(Protocol):
    """Administration of the login roles that the services use (alternating users)."""

    def enable_login(self, role: str, password: str, *, owner: str) -> None:
        """Create `role` if missing as a member of `owner` whose sessions run as `owner`;
        allow it to log in with `password`. Idempotent."""
        ...

    def disable_login(self, role: str, *, owner: str) -> None:
        """`role` can no longer log in with a password (the owner keeps local admin access).
        Sessions already open are left alone. Idempotent."""
        ...

    def can_login(self, role: str, password: str) -> bool:
        """Whether a new connection as `role` with `password` is accepted."""
        ...


class RedisAdmin(Protocol):
    def add_password(self, user: str, password: str, *, auth: str) -> None:
        """Give ACL user `user` one more valid password (idempotent). `auth` is a password
        that authenticates as `user` now."""
        ...

    def remove_password(self, user: str, password: str, *, auth: str) -> None:
        """Remove one password of `user` (idempotent)."""
        ...

    def can_auth(self, user: str, password: str) -> bool: ...


class GeminiProbe(Protocol):
    def check(self, api_key: str) -> str | None:
        """Open a real Live session with `api_key` at the configured endpoint.

        Returns None when the key is accepted, else a one-line reason (never the key).
        """
        ...
