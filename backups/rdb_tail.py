"""The end of a Redis RDB stream from `redis-cli --rdb -`, with a diskless EOF mark cut off."""

from __future__ import annotations

from collections.abc import Callable

# With diskless replication (Redis 7's default) the RDB arrives ended by a 40-character
# random hex mark; `redis-cli --rdb FILE` truncates it off the file afterwards, but on stdout
# it cannot, so the mark is cut here. An RDB ends with the EOF opcode 0xFF and an 8-byte CRC,
# so "0xFF at -49, then 40 hex characters" only ever matches the mark.
_EOF_MARK_BYTES = 40
_HEX = frozenset(b"0123456789abcdef")


class RdbTail:
    """Passes an RDB stream through, holding back its last bytes to cut a diskless EOF mark."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._held = b""

    def write(self, data: bytes) -> None:
        data = self._held + data
        keep = _EOF_MARK_BYTES + 9
        if len(data) > keep:
            self._write(data[:-keep])
            data = data[-keep:]
        self._held = data

    def finish(self) -> None:
        tail = self._held
        if (
            len(tail) == _EOF_MARK_BYTES + 9
            and tail[-_EOF_MARK_BYTES - 9] == 0xFF
            and set(tail[-_EOF_MARK_BYTES:]) <= _HEX
        ):
            tail = tail[:-_EOF_MARK_BYTES]
        self._write(tail)
