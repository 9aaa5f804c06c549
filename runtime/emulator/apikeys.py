"""The set of accepted API keys, from a file that may change under a running emulator."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class ApiKeyFile:
    """Accepted keys, one per line; the file is re-read whenever it changes (key rotation).

    A change is noticed by the file's identity, size and modification time, checked on each
    connection: an atomic replace (new inode) or an in-place edit are both seen, and checking
    costs one stat. Without a file every non-empty key is accepted.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._keys: tuple[bytes, ...] = ()

    def accepts(self, key: str | None) -> bool:
        if not key:
            return False
        if self._path is None:
            return True
        self._refresh(self._path)
        candidate = key.encode()
        # Compare against every key so the time taken does not tell which one nearly matched.
        matches = [hmac.compare_digest(candidate, accepted) for accepted in self._keys]
        return any(matches)

    def _refresh(self, path: Path) -> None:
        try:
            info = path.stat()
        except OSError as exc:
            if self._stamp is not None or not self._keys:
                log.warning("API keys file unreadable (%s); refusing every key", exc.strerror)
            self._stamp, self._keys = None, ()
            return
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            log.warning("API keys file unreadable (%s); refusing every key", exc.strerror)
            self._stamp, self._keys = None, ()
            return
        self._stamp = stamp
        self._keys = tuple(line.strip().encode() for line in text.splitlines() if line.strip())
        log.info("API keys loaded", extra={"fields": {"accepted_keys": len(self._keys)}})
