"""The JWT key ring: several verification keys, exactly one signing key, each with a `kid`.

File format (`secrets/jwt_keys.json`, documented in docs/architecture.md)::

    {"keys": [{"kid": "...", "alg": "HS256", "secret": "<base64url>",
               "created_at": "2026-11-27T05:00:00Z", "use": "sign"}]}

Rotation (issue 7) publishes a new key as the signer and keeps the old one verify-only until
the longest token it signed has expired; `rotated()` and `without_retired()` are those steps.
The API, `orbisctl init` and `orbisctl rotate-keys` all read and write keys through here.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

ALGORITHM = "HS256"
SECRET_BYTES = 32

KeyUse = Literal["sign", "verify"]


class KeyRingError(ValueError):
    """The key ring file is malformed; the message says what is wrong (never key material)."""


@dataclass(frozen=True)
class JwtKey:
    kid: str
    secret: bytes
    created_at: datetime
    use: KeyUse
    alg: str = ALGORITHM
    # When this key stopped signing; verify-only keys are dropped after the longest token
    # lifetime has passed since then.
    retired_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kid": self.kid,
            "alg": self.alg,
            "secret": base64.urlsafe_b64encode(self.secret).decode().rstrip("="),
            "created_at": _iso(self.created_at),
            "use": self.use,
        }
        if self.retired_at is not None:
            data["retired_at"] = _iso(self.retired_at)
        return data

    def __repr__(self) -> str:  # never show key material
        return f"JwtKey(kid={self.kid!r}, use={self.use!r}, created_at={_iso(self.created_at)})"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise KeyRingError(f"{where}: expected an ISO-8601 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise KeyRingError(f"{where}: {value!r} is not an ISO-8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def new_key(*, now: datetime | None = None, use: KeyUse = "sign") -> JwtKey:
    now = now or datetime.now(UTC)
    kid = f"k-{now.strftime('%Y%m%d')}-{secrets.token_hex(3)}"
    return JwtKey(kid=kid, secret=secrets.token_bytes(SECRET_BYTES), created_at=now, use=use)


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[JwtKey, ...]

    def __post_init__(self) -> None:
        signers = [key for key in self.keys if key.use == "sign"]
        if len(signers) != 1:
            raise KeyRingError(f"a key ring needs exactly one signing key, found {len(signers)}")
        kids = [key.kid for key in self.keys]
        if len(set(kids)) != len(kids):
            raise KeyRingError("key ids (kid) must be unique")

    @property
    def signing_key(self) -> JwtKey:
        return next(key for key in self.keys if key.use == "sign")

    def verification_key(self, kid: str) -> JwtKey | None:
        """The key with this id, signer or verify-only; None when the ring does not hold it."""
        return next((key for key in self.keys if key.kid == kid), None)

    @property
    def kids(self) -> list[str]:
        return [key.kid for key in self.keys]

    def rotated(self, *, now: datetime | None = None) -> KeyRing:
        """A new signer; the old signer becomes verify-only (kept for token verification)."""
        now = now or datetime.now(UTC)
        demoted = [
            replace(key, use="verify", retired_at=now) if key.use == "sign" else key
            for key in self.keys
        ]
        return KeyRing((*demoted, new_key(now=now)))

    def without_retired(
        self, *, max_token_lifetime: timedelta, now: datetime | None = None
    ) -> KeyRing:
        """Drop verify-only keys whose tokens have all expired."""
        now = now or datetime.now(UTC)

        def still_needed(key: JwtKey) -> bool:
            retired = key.retired_at or key.created_at
            return key.use == "sign" or now - retired < max_token_lifetime

        return KeyRing(tuple(key for key in self.keys if still_needed(key)))

    def dumps(self) -> str:
        return json.dumps({"keys": [key.to_json() for key in self.keys]}, indent=2) + "\n"

    @classmethod
    def loads(cls, text: str) -> KeyRing:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyRingError(f"not valid JSON (line {exc.lineno})") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise KeyRingError('expected an object with a "keys" list')
        return cls(tuple(_key_from_json(item, index) for index, item in enumerate(data["keys"])))

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            return cls.loads(path.read_text(encoding="utf-8"))
        except KeyRingError as exc:
            raise KeyRingError(f"{path}: {exc}") from None

    @classmethod
    def of(cls, keys: Iterable[JwtKey]) -> KeyRing:
        return cls(tuple(keys))


def _key_from_json(item: Any, index: int) -> JwtKey:
    where = f"keys[{index}]"
    if not isinstance(item, dict):
        raise KeyRingError(f"{where}: expected an object")
    kid, secret, use, alg = item.get("kid"), item.get("secret"), item.get("use"), item.get("alg")
    if not isinstance(kid, str) or not kid:
        raise KeyRingError(f"{where}.kid: expected a non-empty string")
    if alg != ALGORITHM:
        raise KeyRingError(f"{where}.alg: only {ALGORITHM} is supported")
    if use not in ("sign", "verify"):
        raise KeyRingError(f"{where}.use: expected 'sign' or 'verify'")
    if not isinstance(secret, str):
        raise KeyRingError(f"{where}.secret: expected base64url text")
    try:
        raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    except ValueError:
        raise KeyRingError(f"{where}.secret: not base64url") from None
    if len(raw) < SECRET_BYTES:
        raise KeyRingError(f"{where}.secret: shorter than {SECRET_BYTES} bytes")
    retired = item.get("retired_at")
    return JwtKey(
        kid=kid,
        secret=raw,
        created_at=_parse_time(item.get("created_at"), f"{where}.created_at"),
        use=use,
        alg=alg,
        retired_at=_parse_time(retired, f"{where}.retired_at") if retired is not None else None,
    )


def new_keyring(*, now: datetime | None = None) -> KeyRing:
    """A fresh ring with one signing key (what `orbisctl init` writes)."""
    return KeyRing((new_key(now=now),))
