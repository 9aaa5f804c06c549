"""What the backup engine needs from its caller: control over what writes to the database
(`AppControl`, with `NoAppControl` where nothing of ours serves), and the names of the steps a
restore reports, which reporters (and the tests that kill a restore at one) go by. Progress is
reported through `orbisctl.core.progress.Progress`, as everywhere else.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Protocol

# Restore steps, in order; progress reporters see these names.
STEP_VERIFY = "verify"
STEP_SAFETY_BACKUP = "safety backup"
STEP_RESTORE_DATABASE = "restore database"
STEP_CHECK_ROWS = "check row counts"
STEP_STOP_APP = "stop api and gateway"
STEP_SWITCH_DATABASE = "switch database"
STEP_STAGE_CONFIG = "stage config and secrets"
STEP_STAGE_REDIS = "stage redis"
STEP_RESTORE_CONFIG = "restore config and secrets"
STEP_RESTORE_REDIS = "restore redis"
STEP_START_APP = "start api and gateway"
STEP_DROP_SCRATCH = "drop the unfinished restore's database"


class AppControl(Protocol):
    """Stops and starts what writes to the database (api, gateway); the stack provides it."""

    def stop(self) -> None: ...

    def start(self, restored: Collection[Path] = ()) -> None:
        """Start again; `restored` are the install files `--with-secrets` changed, which
        every running service that mounts one must now read."""


class NoAppControl:
    """For databases no application of ours serves (tests, external databases)."""

    def stop(self) -> None:
        return None

    def start(self, restored: Collection[Path] = ()) -> None:
        del restored
