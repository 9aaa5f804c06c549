"""Previous databases kept by restores: `<db>_pre_restore_<UTC yyyymmddHHMMSS>`.

A restore renames the database it replaces to that name instead of dropping it, so the old
data is one `ALTER DATABASE … RENAME` away. Each one is as big as the live database was,
so they are bounded: after every successful restore the oldest beyond
`backup.keep_previous_databases` are dropped (`drop_beyond`), `orbisctl restore --list-kept`
lists them and `--drop-kept` drops them on request.

Only names of exactly that shape count as kept databases: nothing else is ever dropped here.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from backups.executor import MAINTENANCE_DATABASE, Executor
from backups.process import psql_session, quote_ident, quote_literal
from orbisctl.core.errors import UserError

KEPT_INFIX = "_pre_restore_"
STAMP_FORMAT = "%Y%m%d%H%M%S"
ALL = "all"


def kept_name(live: str, when: datetime) -> str:
    """The name a restore at `when` keeps the replaced `live` database under."""
    return f"{live}{KEPT_INFIX}{when.strftime(STAMP_FORMAT)}"


@dataclass(frozen=True)
class KeptDatabase:
    name: str
    kept_at: datetime  # when the restore that replaced it started (UTC)
    size: int  # bytes, pg_database_size

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "kept_at": self.kept_at.isoformat(), "size": self.size}


def _kept_at(live: str, name: str) -> datetime | None:
    match = re.fullmatch(re.escape(live + KEPT_INFIX) + r"([0-9]{14})", name)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def list_kept(executor: Executor) -> list[KeptDatabase]:
    """The kept previous databases of the executor's live database, oldest first."""
    live = executor.database
    pattern = (live + KEPT_INFIX).replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    with psql_session(executor, MAINTENANCE_DATABASE) as session:
        rows = session.query(
            "SELECT datname, pg_database_size(oid) FROM pg_database "  # noqa: S608
            f"WHERE datname LIKE {quote_literal(pattern + '%')}"
        )
    kept = []
    for name, size in rows:
        when = _kept_at(live, name)
        if when is not None:
            kept.append(KeptDatabase(name, when, int(size)))
    return sorted(kept, key=lambda k: (k.kept_at, k.name))


def drop(executor: Executor, names: Collection[str]) -> None:
    for name in names:
        with psql_session(executor, MAINTENANCE_DATABASE) as session:
            # WITH (FORCE): someone inspecting the old data must not keep its disk forever.
            session.query(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def drop_beyond(executor: Executor, keep: int) -> list[str]:
    """Drop all but the newest `keep` kept databases; return the names dropped."""
    kept = list_kept(executor)
    doomed = [k.name for k in kept[: max(len(kept) - keep, 0)]]
    drop(executor, doomed)
    return doomed


def select(executor: Executor, name: str) -> list[str]:
    """The kept databases `name` means: itself, or every one for `all`.

    A name that is not a kept database (the live one, a scratch copy, a typo) is refused.
    """
    kept = [k.name for k in list_kept(executor)]
    if name == ALL:
        return kept
    if name in kept:
        return [name]
    listed = ", ".join(kept) if kept else "none"
    raise UserError(
        f"{name!r} is not a previous database kept by a restore (kept: {listed})",
        hint="`orbisctl restore --list-kept` lists them; `--drop-kept all` drops every one",
    )
