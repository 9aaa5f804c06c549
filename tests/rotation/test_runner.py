"""Rotations of host-side secrets (internal token, JWT ring, backup key): full runs, and
resume/abort after a kill at every step, before and after that step's effects."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from backups import crypto as backup_crypto
from backups import keys as backup_keys
from orbisctl.core.errors import InstallDirError, UserError
from orbisctl.rotation import core
from orbisctl.rotation.journal import JournalStore
from orbisctl.rotation.steps import RotationContext
from orbisctl.rotation.strategies import SecretKind
from runtime.common.keyring import KeyRing
from tests.rotation.conftest import LocalRoller, RecordingAudit, secret_values
from tests.rotation.helpers import kill_during_step

HOST_KINDS = [SecretKind.INTERNAL_TOKEN, SecretKind.JWT, SecretKind.BACKUP_KEY]


def _read(install: Path, name: str) -> str:
    return (install / "secrets" / name).read_text()


def _assert_closed(install: Path) -> None:
    """No journal and no staged value left; every secret file private."""
    assert not (install / "rotation" / "journal.json").exists()
    leftovers = [p.name for p in (install / "secrets").iterdir() if p.suffix in (".next", ".prev")]
    assert leftovers == []
    for path in (install / "secrets").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


class Snapshot:
    def __init__(self, install: Path) -> None:
        self.install = install
        self.token = _read(install, "internal_token").strip()
        self.ring = KeyRing.loads(_read(install, "jwt_keys.json"))
        self.backup_key = _read(install, "backup_key").strip()

    def assert_rotated(self, kind: SecretKind) -> None:
        if kind is SecretKind.INTERNAL_TOKEN:
            lines = _read(self.install, "internal_token").splitlines()
            assert len(lines) == 1 and lines[0] != self.token
        elif kind is SecretKind.JWT:
            ring = KeyRing.loads(_read(self.install, "jwt_keys.json"))
            old = ring.verification_key(self.ring.signing_key.kid)
            assert ring.signing_key.kid != self.ring.signing_key.kid
            assert old is not None and old.use == "verify" and old.retired_at is not None
            assert len(ring.keys) == 2
        else:
            current = _read(self.install, "backup_key").strip()
            assert current != self.backup_key
            backup_ring = backup_keys.load_key_ring(self.install / "secrets")
            assert (
                backup_ring.find(backup_crypto.key_id(backup_crypto.b64d(self.backup_key)))
                is not None
            )

    def assert_restored(self, kind: SecretKind) -> None:
        if kind is SecretKind.INTERNAL_TOKEN:
            assert _read(self.install, "internal_token").splitlines() == [self.token]
        elif kind is SecretKind.JWT:
            ring = KeyRing.loads(_read(self.install, "jwt_keys.json"))
            assert ring.signing_key.kid == self.ring.signing_key.kid
            # A new key survives an abort only if it signed tokens (then verify-only, retiring).
            for key in ring.keys:
                if key.kid != self.ring.signing_key.kid:
                    assert key.use == "verify" and key.retired_at is not None
        else:
            assert _read(self.install, "backup_key").strip() == self.backup_key


@pytest.mark.parametrize("kind", HOST_KINDS)
def test_rotation_replaces_the_secret_and_records_history(
    kind: SecretKind, ctx: RotationContext, install: Path, audit: RecordingAudit
) -> None:
    before = Snapshot(install)
    outcome = core.rotate(ctx, [kind], audit=audit)
    assert outcome.result == "completed"
    before.assert_rotated(kind)
    _assert_closed(install)
    [entry] = JournalStore.of_install(install).history()
    assert entry.kinds == [kind.value] and entry.outcome == "completed" and entry.actor
    assert audit.entries == [entry]


def test_internal_token_rolls_api_then_gateway_then_api(
    ctx: RotationContext, roller: LocalRoller, audit: RecordingAudit
) -> None:
    core.rotate(ctx, [SecretKind.INTERNAL_TOKEN], audit=audit)
    assert roller.calls == [("roll", "api"), ("roll", "gateway"), ("roll", "api")]


# Steps per kind; test_step_counts pins them so a new step gets its kill cases.
STEP_COUNTS = {SecretKind.INTERNAL_TOKEN: 8, SecretKind.JWT: 4, SecretKind.BACKUP_KEY: 5}


def test_step_counts(ctx: RotationContext) -> None:
    assert {kind: len(core.plan(ctx, [kind])) for kind in STEP_COUNTS} == STEP_COUNTS


def _cases() -> list[tuple[SecretKind, int]]:
    counts = STEP_COUNTS
    return [(kind, index) for kind, count in counts.items() for index in range(count)]


@pytest.mark.parametrize("after_effects", [False, True], ids=["before-effects", "after-effects"])
@pytest.mark.parametrize(("kind", "index"), _cases())
def test_killed_rotation_resumes_to_the_new_value(
    kind: SecretKind,
    index: int,
    after_effects: bool,
    ctx: RotationContext,
    install: Path,
    audit: RecordingAudit,
) -> None:
    before = Snapshot(install)
    kill_during_step(ctx, [kind], index, after_effects=after_effects)
    outcome = core.resume(ctx, audit=audit)
    assert outcome.result == "completed"
    before.assert_rotated(kind)
    _assert_closed(install)


@pytest.mark.parametrize("after_effects", [False, True], ids=["before-effects", "after-effects"])
@pytest.mark.parametrize(("kind", "index"), _cases())
def test_killed_rotation_aborts_to_the_old_value(
    kind: SecretKind,
    index: int,
    after_effects: bool,
    ctx: RotationContext,
    install: Path,
    audit: RecordingAudit,
) -> None:
    before = Snapshot(install)
    name = kill_during_step(ctx, [kind], index, after_effects=after_effects)
    if name == "finish":
        # Past the point of no return: abort refuses and says to resume.
        with pytest.raises(UserError, match="point of no return"):
            core.abort(ctx, audit=audit)
        core.resume(ctx, audit=audit)
        before.assert_rotated(kind)
    else:
        assert core.abort(ctx, audit=audit).result == "aborted"
        before.assert_restored(kind)
        assert JournalStore.of_install(install).history()[-1].outcome == "aborted"
    _assert_closed(install)


def test_journal_and_history_hold_no_secret(
    ctx: RotationContext, install: Path, audit: RecordingAudit
) -> None:
    kill_during_step(ctx, HOST_KINDS, 3, after_effects=True)
    journal_text = (install / "rotation" / "journal.json").read_text()
    values = secret_values(install)
    assert len(values) > 5
    assert not [value for value in values if value in journal_text]
    core.resume(ctx, audit=audit)
    history_text = (install / "rotation" / "history.jsonl").read_text()
    assert not [value for value in secret_values(install) + values if value in history_text]
    assert json.loads(history_text.splitlines()[-1])["details"]["internal_token"]["new"].startswith(
        "sha256:"
    )


def test_a_second_rotation_waits_for_the_interrupted_one(
    ctx: RotationContext, audit: RecordingAudit
) -> None:
    kill_during_step(ctx, [SecretKind.INTERNAL_TOKEN], 2, after_effects=False)
    with pytest.raises(InstallDirError, match="already in progress"):
        core.rotate(ctx, [SecretKind.JWT], audit=audit)


def test_a_staged_value_changed_behind_the_journal_is_refused(
    ctx: RotationContext, install: Path, audit: RecordingAudit
) -> None:
    kill_during_step(ctx, [SecretKind.INTERNAL_TOKEN], 2, after_effects=False)
    (install / "secrets" / "internal_token.next").write_text("tampered\n")
    with pytest.raises(InstallDirError, match="changed since the rotation began"):
        core.resume(ctx, audit=audit)


def test_the_lock_refuses_a_concurrent_rotation(
    ctx: RotationContext, audit: RecordingAudit
) -> None:
    store = JournalStore.of_install(ctx.install_dir)
    with store.lock(), pytest.raises(InstallDirError, match="another"):
        core.rotate(ctx, [SecretKind.INTERNAL_TOKEN], audit=audit)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_mounted_secret_keeps_its_owner(
    ctx: RotationContext, install: Path, audit: RecordingAudit
) -> None:
    path = install / "secrets" / "internal_token"
    os.chown(path, 1000, 1000)
    core.rotate(ctx, [SecretKind.INTERNAL_TOKEN], audit=audit)
    assert (path.stat().st_uid, path.stat().st_gid) == (1000, 1000)
