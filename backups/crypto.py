"""Encryption of backup components: chunked AES-256-GCM streams, key wrapping, manifest MACs.

Every backup has its own random data key (DEK). Components are encrypted with keys derived
from the DEK (HKDF, a random salt per stream), so one key never encrypts two streams and the
per-chunk nonce can be a counter. The DEK itself is stored in the manifest only wrapped:

- under the install's backup key (`keyring` wrap; `kid` names which key of the ring), and
- optionally to the passphrase escrow (`escrow` wrap): an X25519 public key whose private key
  is scrypt(passphrase). The host keeps only the public key, so scheduled backups escrow
  without the passphrase being stored anywhere; a new host that lost `secrets/` derives the
  private key from the passphrase the operator kept offline.

Stream format (one encrypted component file)::

    header  = b"ORBSTRM1" || u8 len(name) || name || salt(16)
    record  = u8 final || u32be len(ciphertext) || ciphertext (AES-GCM, tag included)
    nonce_i = u88be(i) || u8 final        AAD = header

The chunk index in the nonce stops reordering; the `final` flag (authenticated through the
nonce) stops truncation at a chunk boundary; anything after the final record is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

KEY_BYTES = 32
CHUNK_SIZE = 1024 * 1024
STREAM_MAGIC = b"ORBSTRM1"
_SALT_BYTES = 16
_TAG_BYTES = 16
_RECORD_HEAD = struct.Struct(">BI")
# scrypt cost for the escrow passphrase: 64 MiB of memory, ~0.2 s here; stored per escrow so
# it can be raised later without breaking old backups.
SCRYPT_N = 2**16
SCRYPT_R = 8
SCRYPT_P = 1


class CryptoError(Exception):
    """A stream or wrapped key failed to decrypt or authenticate; the message says which."""


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(key: bytes) -> str:
    """A key's public name: a fingerprint, so a ring entry and its `kid` can never disagree."""
    return "bk-" + hashlib.sha256(b"orbis-backup-kid\0" + key).hexdigest()[:12]


def _hkdf(key: bytes, *, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(key)


def new_data_key() -> bytes:
    return os.urandom(KEY_BYTES)


# --- streams ---------------------------------------------------------------------------------


def _nonce(index: int, *, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def _stream_key(data_key: bytes, name: str, salt: bytes) -> bytes:
    return _hkdf(data_key, salt=salt, info=b"orbis-backup stream " + name.encode())


class StreamEncryptor:
    """Encrypts one component; `write()` plaintext, `close()` writes the final record.

    Ciphertext goes to `sink`; `sha256` and `size` describe what was written there.
    """

    def __init__(self, sink: IO[bytes], data_key: bytes, name: str) -> None:
        encoded = name.encode()
        salt = os.urandom(_SALT_BYTES)
        self._header = STREAM_MAGIC + bytes([len(encoded)]) + encoded + salt
        self._aead = AESGCM(_stream_key(data_key, name, salt))
        self._sink = sink
        self._buffer = bytearray()
        self._index = 0
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.plain_size = 0
        self._emit(self._header)

    def _emit(self, data: bytes) -> None:
        self._sink.write(data)
        self.sha256.update(data)
        self.size += len(data)

    def _seal(self, chunk: bytes, *, final: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._index, final=final), chunk, self._header)
        self._emit(_RECORD_HEAD.pack(int(final), len(sealed)) + sealed)
        self._index += 1

    def write(self, data: bytes) -> None:
        self.plain_size += len(data)
        self._buffer += data
        while len(self._buffer) > CHUNK_SIZE:
            self._seal(bytes(self._buffer[:CHUNK_SIZE]), final=False)
            del self._buffer[:CHUNK_SIZE]

    def close(self) -> None:
        self._seal(bytes(self._buffer), final=True)
        self._buffer.clear()


def _read_exact(source: IO[bytes], size: int) -> bytes:
    data = source.read(size)
    return data if data is not None else b""


def decrypt_stream(source: IO[bytes], data_key: bytes, name: str) -> Iterator[bytes]:
    """Yield the plaintext chunks of one component; raise CryptoError on any tampering.

    Chunks are yielded only after they authenticated, but a stream cut or altered later
    raises only when that point is reached: consumers must treat their output as
    provisional until the generator finishes.
    """
    magic = _read_exact(source, len(STREAM_MAGIC))
    if magic != STREAM_MAGIC:
        raise CryptoError(f"{name}: not an encrypted backup stream (bad header)")
    length = _read_exact(source, 1)
    if not length:
        raise CryptoError(f"{name}: truncated header")
    stored_name = _read_exact(source, length[0])
    salt = _read_exact(source, _SALT_BYTES)
    if len(salt) != _SALT_BYTES:
        raise CryptoError(f"{name}: truncated header")
    if stored_name != name.encode():
        raise CryptoError(f"{name}: the stream belongs to component {stored_name!r}")
    header = magic + length + stored_name + salt
    aead = AESGCM(_stream_key(data_key, name, salt))
    index = 0
    while True:
        head = _read_exact(source, _RECORD_HEAD.size)
        if not head:
            raise CryptoError(f"{name}: truncated (the final chunk is missing)")
        if len(head) != _RECORD_HEAD.size:
            raise CryptoError(f"{name}: truncated inside chunk {index}")
        final, size = _RECORD_HEAD.unpack(head)
        if final not in (0, 1) or not _TAG_BYTES <= size <= CHUNK_SIZE + _TAG_BYTES:
            raise CryptoError(f"{name}: corrupted chunk header at chunk {index}")
        sealed = _read_exact(source, size)
        if len(sealed) != size:
            raise CryptoError(f"{name}: truncated inside chunk {index}")
        try:
            plain = aead.decrypt(_nonce(index, final=bool(final)), sealed, header)
        except InvalidTag:
            raise CryptoError(
                f"{name}: chunk {index} failed authentication (corrupted, tampered or wrong key)"
            ) from None
        yield plain
        if final:
            break
        index += 1
    if source.read(1):
        raise CryptoError(f"{name}: unexpected data after the final chunk")


# --- key wrapping ----------------------------------------------------------------------------


def wrap_for_key(data_key: bytes, wrapping_key: bytes) -> dict[str, Any]:
    nonce = os.urandom(12)
    kek = _hkdf(wrapping_key, salt=None, info=b"orbis-backup wrap keyring")
    sealed = AESGCM(kek).encrypt(nonce, data_key, b"keyring")
    return {
        "type": "keyring",
        "kid": key_id(wrapping_key),
        "nonce": b64e(nonce),
        "dek": b64e(sealed),
    }


def unwrap_with_key(wrap: dict[str, Any], wrapping_key: bytes) -> bytes:
    kek = _hkdf(wrapping_key, salt=None, info=b"orbis-backup wrap keyring")
    try:
        return AESGCM(kek).decrypt(b64d(wrap["nonce"]), b64d(wrap["dek"]), b"keyring")
    except (InvalidTag, KeyError, ValueError):
        raise CryptoError(f"the data key wrapped for {wrap.get('kid')} does not open") from None


@dataclass(frozen=True)
class EscrowParams:
    """The public half of a passphrase escrow: safe to store and to copy into manifests."""

    public_key: bytes
    salt: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def to_json(self) -> dict[str, Any]:
        return {
            "kdf": "scrypt",
            "salt": b64e(self.salt),
            "n": self.n,
            "r": self.r,
            "p": self.p,
            "public_key": b64e(self.public_key),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EscrowParams:
        if data.get("kdf") != "scrypt":
            raise CryptoError(f"unknown escrow KDF {data.get('kdf')!r}")
        return cls(
            public_key=b64d(data["public_key"]),
            salt=b64d(data["salt"]),
            n=int(data["n"]),
            r=int(data["r"]),
            p=int(data["p"]),
        )


def _escrow_private_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> X25519PrivateKey:
    seed = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())
    return X25519PrivateKey.from_private_bytes(seed)


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def escrow_from_passphrase(passphrase: str) -> EscrowParams:
    salt = os.urandom(_SALT_BYTES)
    private = _escrow_private_key(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return EscrowParams(public_key=_raw_public(private.public_key()), salt=salt)


def wrap_for_escrow(data_key: bytes, escrow: EscrowParams) -> dict[str, Any]:
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = _raw_public(ephemeral.public_key())
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(escrow.public_key))
    kek = _hkdf(shared, salt=ephemeral_public + escrow.public_key, info=b"orbis-backup escrow")
    nonce = os.urandom(12)
    sealed = AESGCM(kek).encrypt(nonce, data_key, b"escrow")
    return {
        "type": "escrow",
        **escrow.to_json(),
        "ephemeral_public": b64e(ephemeral_public),
        "nonce": b64e(nonce),
        "dek": b64e(sealed),
    }


def unwrap_with_passphrase(wrap: dict[str, Any], passphrase: str) -> bytes:
    try:
        escrow = EscrowParams.from_json(wrap)
        private = _escrow_private_key(passphrase, escrow.salt, escrow.n, escrow.r, escrow.p)
        ephemeral_public = b64d(wrap["ephemeral_public"])
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        kek = _hkdf(shared, salt=ephemeral_public + escrow.public_key, info=b"orbis-backup escrow")
        return AESGCM(kek).decrypt(b64d(wrap["nonce"]), b64d(wrap["dek"]), b"escrow")
    except (InvalidTag, KeyError, ValueError):
        raise CryptoError("the passphrase does not open this backup") from None


# --- manifest authentication -----------------------------------------------------------------


def manifest_mac(data_key: bytes, body: bytes) -> str:
    mac_key = _hkdf(data_key, salt=None, info=b"orbis-backup manifest mac")
    return hmac.new(mac_key, body, hashlib.sha256).hexdigest()


def manifest_mac_ok(data_key: bytes, body: bytes, mac: str) -> bool:
    return hmac.compare_digest(manifest_mac(data_key, body), mac)
