"""Which backups to keep: keep-daily/weekly/monthly, as `backup.retention` in orbis.yaml says.

The rule (the one borg and restic use): walking from the newest backup to the oldest, the
newest backup of each of the last `daily` days that have a backup is kept; likewise per ISO
week and per month. The newest backup is always kept, whatever the policy says, and so is
a backup an in-progress restore is reading.

A labelled backup (`backup create --label "before delete"`, the `pre-restore` safety backup)
was taken on purpose: it is kept and the policy is applied to the unlabelled ones only,
unless `include_labelled` (`backup prune --include-labelled`) puts them under the policy too.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backups.catalog import list_backups
from backups.partials import remove_stale_partials, stale_partials
from backups.restore_lock import locked_backup
from orbisctl.core.config import RetentionConfig
from orbisctl.core.errors import USER_ERRNOS, storage_error


@dataclass(frozen=True)
class Dated:
    backup_id: str
    created_at: datetime
    label: str = ""


def _buckets(
    backups: Sequence[Dated], count: int, period: Callable[[datetime], Hashable]
) -> set[str]:
    kept: set[str] = set()
    seen: set[Hashable] = set()
    for backup in backups:
        if len(seen) >= count:
            break
        bucket = period(backup.created_at)
        if bucket not in seen:
            seen.add(bucket)
            kept.add(backup.backup_id)
    return kept


def keep_set(
    backups: Sequence[Dated], policy: RetentionConfig, *, protected: frozenset[str] = frozenset()
) -> set[str]:
    """The ids to keep: a pure function of the backups' times, the policy and `protected`."""
    newest_first = sorted(backups, key=lambda b: (b.created_at, b.backup_id), reverse=True)
    kept = set(protected) & {b.backup_id for b in backups}
    if newest_first:
        kept.add(newest_first[0].backup_id)
    kept |= _buckets(newest_first, policy.daily, lambda t: t.date())
    kept |= _buckets(newest_first, policy.weekly, lambda t: t.isocalendar()[:2])
    kept |= _buckets(newest_first, policy.monthly, lambda t: (t.year, t.month))
    return kept


@dataclass(frozen=True)
class Decision:
    keep: list[str]
    delete: list[str]
    labelled: list[str]  # kept because they carry a label (a subset of `keep`)


def decide(
    backups: Sequence[Dated],
    policy: RetentionConfig,
    *,
    include_labelled: bool = False,
    protected: frozenset[str] = frozenset(),
) -> Decision:
    """What the policy keeps of a repository's backups, the local one's or the bucket's."""
    labelled = set() if include_labelled else {b.backup_id for b in backups if b.label}
    # Labelled backups neither count against the policy's buckets nor leave through them.
    keep = (
        keep_set([b for b in backups if b.backup_id not in labelled], policy, protected=protected)
        | labelled
    )
    return Decision(
        keep=sorted(b.backup_id for b in backups if b.backup_id in keep),
        delete=sorted(b.backup_id for b in backups if b.backup_id not in keep),
        labelled=sorted(labelled),
    )


@dataclass(frozen=True)
class PrunePlan(Decision):
    unreadable: list[str]  # backups whose manifest cannot be read: never deleted automatically
    partial: list[Path]  # leftovers of interrupted backups whose writer is gone


def plan_prune(
    repository: Path, policy: RetentionConfig, *, include_labelled: bool = False
) -> PrunePlan:
    entries = list_backups(repository)
    dated = [
        Dated(entry.path.name, entry.manifest.created_at, entry.manifest.label)
        for entry in entries
        if entry.manifest is not None
    ]
    locked = locked_backup(repository)
    decision = decide(
        dated,
        policy,
        include_labelled=include_labelled,
        protected=frozenset({locked}) if locked else frozenset(),
    )
    return PrunePlan(
        **vars(decision),
        unreadable=sorted(entry.path.name for entry in entries if entry.manifest is None),
        partial=stale_partials(repository),
    )


def apply_prune(repository: Path, plan: PrunePlan) -> None:
    # Re-checked here: a restore may have started since the plan was made.
    locked = locked_backup(repository)
    for backup_id in plan.delete:
        if backup_id != locked:
            try:
                shutil.rmtree(repository / backup_id)
            except OSError as exc:
                # rmtree names the file inside the backup relative to it: name the backup.
                if exc.errno not in USER_ERRNOS:
                    raise
                raise storage_error(
                    exc, repository, doing=f"cannot delete backup {backup_id}"
                ) from None
    remove_stale_partials(repository, plan.partial)
