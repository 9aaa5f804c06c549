"""The restore journal: what an unfinished restore had done, so any command can finish it.

`<install>/restore/journal.json` exists from the moment a restore creates its scratch database
until the restore has finished or been undone. It holds names and the phase, never data or
secrets; what the switch needs besides the scratch database (the backup's Redis snapshot and,
with `--with-secrets`, its config bundle) is decrypted before anything is stopped into the
staging directory under `secrets/` (0700, files 0600), so finishing needs no key or
passphrase. Which way an unfinished restore goes is decided by the database catalog, not by
the phase alone: the switch renames the scratch database away in the same transaction that
puts it in place, so while the scratch database exists nothing was switched.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from backups.fs import atomic_write
from orbisctl.core.errors import InstallDirError

RESTORE_DIRNAME = "restore"
# Under secrets/ (0700) because it holds the backup's secrets and sessions in the clear;
# backups leave it out of their config bundle.
STAGING_DIRNAME = ".restore-staged"
JOURNAL_VERSION = 1

# preparing: the scratch database is being filled (undo: drop it);
# prepared: scratch database checked and the rest staged, the switch may have happened;
# switched: the restored database serves (only forward from here).
Phase = Literal["preparing", "prepared", "switched"]


@dataclass
class RestoreJournal:
    backup_id: str
    live: str  # the database that serves (`orbis`)
    scratch: str  # the database the backup is restored into, renamed to `live` by the switch
    keep_as: str | None  # what the previous `live` is renamed to (None: there was none)
    with_secrets: bool
    started_at: str
    phase: Phase = "preparing"
    version: int = JOURNAL_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: Path) -> RestoreJournal:
        try:
            data = json.loads(text)
            if data.get("version") != JOURNAL_VERSION:
                raise ValueError(f"unknown journal version {data.get('version')!r}")
            return cls(**data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise InstallDirError(
                f"the restore journal {source} is unreadable: {exc}",
                hint="inspect it by hand (it holds no secrets), or remove it and run "
                "`orbisctl restore --list-kept` to see which databases are left",
            ) from None


@dataclass(frozen=True)
class RestoreJournalStore:
    root: Path  # the install directory
    secrets_dir: Path

    @property
    def journal_path(self) -> Path:
        return self.root / RESTORE_DIRNAME / "journal.json"

    @property
    def staging(self) -> Path:
        return self.secrets_dir / STAGING_DIRNAME

    def load(self) -> RestoreJournal | None:
        try:
            text = self.journal_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return RestoreJournal.from_json(text, source=self.journal_path)

    def save(self, journal: RestoreJournal) -> None:
        self.journal_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.journal_path, journal.to_json().encode(), mode=0o600)

    def new_staging(self) -> Path:
        """An empty staging directory (what a killed restore staged is of no use now)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(mode=0o700, parents=True)
        return self.staging

    def finish(self) -> None:
        """The restore is over, either way: staged data first, then the journal."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self.journal_path.unlink(missing_ok=True)
