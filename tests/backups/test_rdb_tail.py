"""Cutting the diskless-replication EOF mark off an RDB streamed by `redis-cli --rdb -`."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from backups.rdb_tail import RdbTail

RDB = b"REDIS0010" + os.urandom(300) + b"\xff" + os.urandom(8)  # ... EOF opcode, CRC64
MARK = b"0123456789abcdef0123456789abcdef01234567"


def _through(data: bytes, cuts: list[int]) -> bytes:
    out = bytearray()
    tail = RdbTail(out.extend)
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        tail.write(data[start:cut])
        start = cut
    tail.finish()
    return bytes(out)


@given(st.lists(st.integers(0, len(RDB) + len(MARK)), max_size=6))
def test_the_mark_is_cut_wherever_the_pieces_split(cuts: list[int]) -> None:
    assert _through(RDB + MARK, cuts) == RDB


@given(st.lists(st.integers(0, len(RDB)), max_size=6))
def test_an_rdb_without_a_mark_passes_unchanged(cuts: list[int]) -> None:
    assert _through(RDB, cuts) == RDB


def test_tiny_streams_pass_unchanged() -> None:
    assert _through(b"", []) == b""
    assert _through(b"REDIS", [2]) == b"REDIS"
