"""Run a backup or a restore in this process and SIGKILL it when a named step is reached.

`python -m tests.backups.killer backup|restore INSTALL_ROOT STEP [BACKUP_PATH]` with the
servers in ORBIS_BACKUP_DATABASE_URL / ORBIS_BACKUP_REDIS_URL. The kill comes through the
engine's own Progress interface, at the first byte of the step when the step streams bytes
after the second chunk (so a restore dies with pg_restore half-fed) or its last, whichever
comes first, else when the step starts.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from backups import keys
from backups.create import create_backup
from backups.executor import LocalExecutor
from backups.ports import NoAppControl
from backups.restore import restore_backup
from orbisctl.core.config import OrbisConfig
from orbisctl.core.install import Install


class KillAt:
    def __init__(self, step: str) -> None:
        self.target = step
        self.current = ""
        self.chunks = 0
        self.left = 0

    def step(self, name: str, total_bytes: int | None = None) -> None:
        self.current = name
        self.left = total_bytes or 0
        if name == self.target and not total_bytes:
            os.kill(os.getpid(), signal.SIGKILL)

    def advance(self, nbytes: int) -> None:
        if self.current == self.target and nbytes:
            self.chunks += 1
            self.left -= nbytes
            # The second chunk, or the last one of a step that has fewer.
            if self.chunks == 2 or self.left <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    def detail(self, message: str) -> None:
        del message

    def note(self, message: str) -> None:
        del message


def main(argv: list[str]) -> None:
    verb, root, step = argv[0], Path(argv[1]), argv[2]
    install = Install(root, OrbisConfig())
    executor = LocalExecutor(
        database_url=os.environ["ORBIS_BACKUP_DATABASE_URL"],
        redis_url=os.environ["ORBIS_BACKUP_REDIS_URL"],
    )
    ring = keys.load_key_ring(install.secrets_dir)
    if verb == "backup":
        create_backup(install, executor, ring, progress=KillAt(step))
    else:
        restore_backup(
            install,
            executor,
            ring,
            Path(argv[3]),
            app=NoAppControl(),
            progress=KillAt(step),
        )
    sys.exit("the step was never reached")


if __name__ == "__main__":
    main(sys.argv[1:])
