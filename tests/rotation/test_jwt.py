"""JWT rotation with the API's own token code: a token signed before the rotation verifies
during the grace period and is refused once its key is dropped."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from orbisctl.core.errors import UserError
from orbisctl.rotation import core
from orbisctl.rotation.steps import RotationContext
from orbisctl.rotation.strategies import SecretKind
from runtime.api.errors import Unauthorized
from runtime.api.security import issue_access_token, verify_access_token
from runtime.common.keyring import KeyRing
from tests.rotation.conftest import Clock, LocalRoller


def _ring(install: Path) -> KeyRing:
    return KeyRing.load(install / "secrets" / "jwt_keys.json")


def test_old_token_verifies_during_grace_and_fails_after_the_drop(
    ctx: RotationContext, install: Path, clock: Clock, roller: LocalRoller
) -> None:
    old_token = issue_access_token(_ring(install), user_id="u1", org_id="o1", ttl_seconds=900)
    core.rotate(ctx, [SecretKind.JWT])
    ring = _ring(install)
    new_token = issue_access_token(ring, user_id="u2", org_id="o1", ttl_seconds=900)
    assert verify_access_token(ring, old_token).user_id == "u1"
    assert verify_access_token(ring, new_token).user_id == "u2"
    # The new key was published (and the api rolled) before it signed anything.
    # referrals verifies tokens too (not deployed here: its rolls do nothing)
    assert roller.calls == [("roll", "api"), ("roll", "referrals")] * 2

    [pending] = core.status(ctx).jwt_drops
    assert not pending.due
    with pytest.raises(UserError, match="no JWT key is due"):
        core.resume(ctx)

    clock.advance(ctx.jwt_max_token_lifetime + timedelta(seconds=1))
    assert [drop.due for drop in core.status(ctx).jwt_drops] == [True]
    assert core.resume(ctx).kinds == [SecretKind.JWT_RETIRE.value]
    ring = _ring(install)
    assert len(ring.keys) == 1
    with pytest.raises(Unauthorized):
        verify_access_token(ring, old_token)
    assert verify_access_token(ring, new_token).user_id == "u2"
    assert core.status(ctx).jwt_drops == []


def test_a_later_rotation_drops_due_keys_first(ctx: RotationContext, clock: Clock) -> None:
    core.rotate(ctx, [SecretKind.JWT])
    clock.advance(timedelta(days=1))
    kinds = core.choose_kinds(
        ctx, [SecretKind.INTERNAL_TOKEN], all_secrets=False, gemini_key_file=None
    )
    assert kinds == [SecretKind.JWT_RETIRE, SecretKind.INTERNAL_TOKEN]
