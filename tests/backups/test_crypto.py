"""The encrypted stream format and key wrapping, byte by byte (no servers needed)."""

from __future__ import annotations

import io
import os

import pytest

from backups import crypto
from backups.crypto import CHUNK_SIZE, CryptoError, StreamEncryptor, decrypt_stream

KEY = os.urandom(32)


def _encrypt(plain: bytes, key: bytes = KEY, name: str = "database") -> bytes:
    sink = io.BytesIO()
    encryptor = StreamEncryptor(sink, key, name)
    for start in range(0, len(plain), 300_000):  # writes that straddle chunk boundaries
        encryptor.write(plain[start : start + 300_000])
    encryptor.close()
    assert encryptor.size == len(sink.getvalue())
    assert encryptor.plain_size == len(plain)
    return sink.getvalue()


def _decrypt(data: bytes, key: bytes = KEY, name: str = "database") -> bytes:
    return b"".join(decrypt_stream(io.BytesIO(data), key, name))


def _records(data: bytes) -> tuple[bytes, list[bytes]]:
    """Split a stream into its header and records (final flag + length + ciphertext)."""
    header_len = len(crypto.STREAM_MAGIC) + 1 + data[len(crypto.STREAM_MAGIC)] + 16
    header, rest, records = data[:header_len], data[header_len:], []
    while rest:
        size = int.from_bytes(rest[1:5], "big")
        records.append(rest[: 5 + size])
        rest = rest[5 + size :]
    return header, records


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE - 7])
def test_round_trip(size: int) -> None:
    plain = os.urandom(size)
    data = _encrypt(plain)
    assert _decrypt(data) == plain
    # Only long enough plaintexts: a 1-byte one stands somewhere in any ciphertext by chance.
    assert size < 16 or plain[:64] not in data


def test_same_plaintext_encrypts_differently() -> None:
    assert _encrypt(b"same") != _encrypt(b"same")


def test_flipped_byte_anywhere_fails() -> None:
    data = bytearray(_encrypt(os.urandom(2 * CHUNK_SIZE)))
    for offset in (3, len(crypto.STREAM_MAGIC) + 5, 60, CHUNK_SIZE + 100, len(data) - 1):
        tampered = bytearray(data)
        tampered[offset] ^= 0x80
        with pytest.raises(CryptoError):
            _decrypt(bytes(tampered))


def test_truncation_at_a_chunk_boundary_fails() -> None:
    header, records = _records(_encrypt(os.urandom(2 * CHUNK_SIZE + 10)))
    assert len(records) == 3
    with pytest.raises(CryptoError, match="final chunk is missing"):
        _decrypt(header + b"".join(records[:2]))


def test_marking_an_inner_chunk_final_fails() -> None:
    header, records = _records(_encrypt(os.urandom(2 * CHUNK_SIZE + 10)))
    forged = b"\x01" + records[1][1:]
    with pytest.raises(CryptoError, match="chunk 1 failed authentication"):
        _decrypt(header + records[0] + forged)


def test_reordered_chunks_fail() -> None:
    header, records = _records(_encrypt(os.urandom(2 * CHUNK_SIZE + 10)))
    with pytest.raises(CryptoError, match="chunk 0 failed"):
        _decrypt(header + records[1] + records[0] + records[2])


def test_data_after_the_final_chunk_fails() -> None:
    with pytest.raises(CryptoError, match="after the final chunk"):
        _decrypt(_encrypt(b"abc") + b"x")


def test_wrong_key_or_swapped_component_fails() -> None:
    data = _encrypt(b"secret transcripts")
    with pytest.raises(CryptoError, match="failed authentication"):
        _decrypt(data, key=os.urandom(32))
    with pytest.raises(CryptoError, match="belongs to component"):
        _decrypt(data, name="redis")


def test_key_wrap_round_trip_and_wrong_key() -> None:
    data_key = crypto.new_data_key()
    wrap = crypto.wrap_for_key(data_key, KEY)
    assert wrap["kid"] == crypto.key_id(KEY)
    assert crypto.unwrap_with_key(wrap, KEY) == data_key
    with pytest.raises(CryptoError):
        crypto.unwrap_with_key(wrap, os.urandom(32))


def test_escrow_opens_with_the_passphrase_only() -> None:
    escrow = crypto.escrow_from_passphrase("correct horse battery staple")
    stored = crypto.EscrowParams.from_json(escrow.to_json())
    data_key = crypto.new_data_key()
    wrap = crypto.wrap_for_escrow(data_key, stored)
    assert "passphrase" not in str(wrap) and crypto.b64e(data_key) not in str(wrap)
    assert crypto.unwrap_with_passphrase(wrap, "correct horse battery staple") == data_key
    with pytest.raises(CryptoError, match="passphrase does not open"):
        crypto.unwrap_with_passphrase(wrap, "correct horse battery stapler")


def test_manifest_mac_detects_any_change() -> None:
    data_key = crypto.new_data_key()
    mac = crypto.manifest_mac(data_key, b'{"rows":5}')
    assert crypto.manifest_mac_ok(data_key, b'{"rows":5}', mac)
    assert not crypto.manifest_mac_ok(data_key, b'{"rows":4}', mac)
    assert not crypto.manifest_mac_ok(crypto.new_data_key(), b'{"rows":5}', mac)
