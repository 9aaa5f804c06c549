"""The tamper-evident audit log: per-chain sequence, each entry hashing the one before.

A chain is a tenant's (`org:<uuid>`) or the operators' (`system`). Appends to one chain are
serialised with a transaction-scoped advisory lock; the entry's hash covers every stored
column plus the previous hash, so editing, deleting or reordering rows breaks verification
from that row on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runtime.api.principal import Principal
from runtime.common.db import Queries, Row

GENESIS_HASH = "0" * 64
SYSTEM_CHAIN = "system"


def org_chain(org_id: str) -> str:
    return f"org:{org_id}"


def entry_hash(
    *,
    chain: str,
    seq: int,
    actor: str,
    action: str,
    target: str | None,
    detail: dict[str, Any],
    created_at: datetime,
    prev_hash: str,
) -> str:
    canonical = json.dumps(
        {
            "chain": chain,
            "seq": seq,
            "actor": actor,
            "action": action,
            "target": target,
            "detail": detail,
            "created_at": created_at.astimezone(UTC).isoformat(),
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def append(
    tx: Queries,
    *,
    chain: str,
    org_id: str | None,
    actor: str,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an entry inside the caller's transaction (so it commits with the change)."""
    detail = detail or {}
    await tx.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"audit:{chain}",))
    last = await tx.one(
        "SELECT seq, hash FROM audit_log WHERE chain = %s ORDER BY seq DESC LIMIT 1", (chain,)
    )
    seq = int(last["seq"]) + 1 if last else 1
    prev_hash = str(last["hash"]) if last else GENESIS_HASH
    created_at = datetime.now(UTC)
    digest = entry_hash(
        chain=chain,
        seq=seq,
        actor=actor,
        action=action,
        target=target,
        detail=detail,
        created_at=created_at,
        prev_hash=prev_hash,
    )
    await tx.execute(
        "INSERT INTO audit_log (chain, seq, org_id, actor, action, target, detail, created_at,"
        " prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            chain,
            seq,
            org_id,
            actor,
            action,
            target,
            json.dumps(detail),
            created_at,
            prev_hash,
            digest,
        ),
    )


async def append_by(
    tx: Queries,
    principal: Principal,
    *,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append what a signed-in user or API key did to its own org's chain."""
    await append(
        tx,
        chain=org_chain(principal.org_id),
        org_id=principal.org_id,
        actor=principal.actor,
        action=action,
        target=target,
        detail=detail,
    )


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    broken_at_seq: int | None = None
    reason: str | None = None


def verify_rows(chain: str, rows: list[Row]) -> Verification:
    """Check rows (in seq order) link up and each hash matches its content."""
    prev_hash = GENESIS_HASH
    for expected_seq, row in enumerate(rows, start=1):
        seq = int(row["seq"])
        if seq != expected_seq:
            return Verification(False, len(rows), expected_seq, "an entry is missing")
        if row["prev_hash"] != prev_hash:
            return Verification(False, len(rows), seq, "the link to the previous entry is broken")
        recomputed = entry_hash(
            chain=chain,
            seq=seq,
            actor=row["actor"],
            action=row["action"],
            target=row["target"],
            detail=row["detail"],
            created_at=row["created_at"],
            prev_hash=row["prev_hash"],
        )
        if recomputed != row["hash"]:
            return Verification(False, len(rows), seq, "the entry was altered")
        prev_hash = row["hash"]
    return Verification(True, len(rows))


async def verify_chain(tx: Queries, chain: str) -> Verification:
    rows = await tx.all(
        "SELECT seq, actor, action, target, detail, created_at, prev_hash, hash "
        "FROM audit_log WHERE chain = %s ORDER BY seq",
        (chain,),
    )
    return verify_rows(chain, rows)
