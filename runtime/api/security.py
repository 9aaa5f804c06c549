"""Passwords (stdlib scrypt), opaque tokens (stored as SHA-256), and JWT access tokens
signed with the key ring (`kid` in the header, any ring key verifies)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from runtime.api.errors import Unauthorized
from runtime.common.keyring import ALGORITHM, KeyRing

# scrypt cost: ~16 MiB and a few tens of milliseconds per hash (OWASP's minimum is N=2^17
# with r=8 for interactive logins on dedicated hardware; 2^15 keeps login usable on a 2-core
# appliance while staying far above a fast hash).
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32
    )


def hash_password_sync(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password_sync(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    return hmac.compare_digest(candidate, _unb64(digest))


async def hash_password(password: str) -> str:
    # scrypt is CPU- and memory-bound: keep it off the event loop.
    return await asyncio.to_thread(hash_password_sync, password)


async def verify_password(password: str, encoded: str) -> bool:
    return await asyncio.to_thread(verify_password_sync, password, encoded)


# Verified against when the email is unknown, so both cases take the same time.
DUMMY_PASSWORD_HASH = hash_password_sync(secrets.token_urlsafe(16))


def new_token(prefix: str) -> str:
    return f"{prefix}{secrets.token_urlsafe(32)}"


def token_digest(token: str) -> bytes:
    """High-entropy tokens need no slow hash: SHA-256 makes the stored value useless."""
    return hashlib.sha256(token.encode()).digest()


class KeyRingSource:
    """The key ring file, re-read when it changes, so `rotate-keys` needs no restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._stat()
        self._ring = KeyRing.load(path)

    def _stat(self) -> tuple[int, int]:
        info = self.path.stat()
        return (info.st_mtime_ns, info.st_size)

    def current(self) -> KeyRing:
        try:
            stamp = self._stat()
        except OSError:
            return self._ring  # a rotation is replacing the file: keep the last good ring
        if stamp != self._stamp:
            self._ring = KeyRing.load(self.path)
            self._stamp = stamp
        return self._ring


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    org_id: str
    expires_at: int
    # Absent from tokens issued before they carried them (runtime.api.revocation).
    jti: str | None = None
    family_id: str | None = None


def issue_access_token(
    ring: KeyRing, *, user_id: str, org_id: str, ttl_seconds: int, family_id: str | None = None
) -> str:
    """`family_id`: the login session's refresh-token family, so logout can revoke it."""
    key = ring.signing_key
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "org": org_id,
        "typ": "access",
        "iat": now,
        "exp": now + ttl_seconds,
        "jti": secrets.token_urlsafe(16),
    }
    if family_id is not None:
        claims["fam"] = family_id
    return jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})


def verify_access_token(ring: KeyRing, token: str) -> AccessClaims:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise Unauthorized("the access token is malformed", code="token_invalid") from None
    kid = header.get("kid")
    key = ring.verification_key(kid) if isinstance(kid, str) else None
    if key is None:
        raise Unauthorized("the access token's key is unknown", code="token_invalid")
    try:
        claims = jwt.decode(
            token,
            key.secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized(
            "the access token has expired; refresh it", code="token_expired"
        ) from None
    except jwt.InvalidTokenError:
        raise Unauthorized("the access token is invalid", code="token_invalid") from None
    if claims.get("typ") != "access" or not isinstance(claims.get("org"), str):
        raise Unauthorized("the access token is invalid", code="token_invalid")
    jti, family_id = claims.get("jti"), claims.get("fam")
    return AccessClaims(
        user_id=str(claims["sub"]),
        org_id=str(claims["org"]),
        expires_at=int(claims["exp"]),
        jti=jti if isinstance(jti, str) else None,
        family_id=family_id if isinstance(family_id, str) else None,
    )
