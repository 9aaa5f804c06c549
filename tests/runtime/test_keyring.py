"""The JWT key ring: file format round trip, rotation, retirement, and clear errors."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from runtime.common.keyring import KeyRing, KeyRingError, new_keyring

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_round_trip_keeps_every_key() -> None:
    ring = new_keyring(now=T0).rotated(now=T0 + timedelta(days=1))
    again = KeyRing.loads(ring.dumps())
    assert again == ring
    assert [key.use for key in again.keys] == ["verify", "sign"]


def test_rotation_makes_a_new_signer_and_keeps_the_old_for_verification() -> None:
    ring = new_keyring(now=T0)
    old = ring.signing_key
    rotated = ring.rotated(now=T0 + timedelta(hours=1))
    assert rotated.signing_key.kid != old.kid
    kept = rotated.verification_key(old.kid)
    assert kept is not None
    assert kept.secret == old.secret
    assert kept.use == "verify"


def test_retired_keys_are_dropped_only_after_the_token_lifetime() -> None:
    rotated = new_keyring(now=T0).rotated(now=T0)
    lifetime = timedelta(minutes=15)
    assert len(rotated.without_retired(max_token_lifetime=lifetime, now=T0).keys) == 2
    later = rotated.without_retired(max_token_lifetime=lifetime, now=T0 + lifetime)
    assert later.kids == [rotated.signing_key.kid]


def test_repr_never_shows_key_material() -> None:
    ring = new_keyring()
    assert ring.signing_key.secret.hex() not in repr(ring)
    assert "secret" not in repr(ring.signing_key)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{", "not valid JSON"),
        ('{"keys": []}', "exactly one signing key"),
        ('{"keys": [{"kid": "a", "alg": "RS256"}]}', "keys[0].alg"),
        ('{"keys": [{"kid": "a", "alg": "HS256", "use": "sign", "secret": "c2hvcnQ"}]}', "shorter"),
    ],
)
def test_malformed_rings_are_refused_with_the_key_path(data: str, message: str) -> None:
    with pytest.raises(KeyRingError, match=re.escape(message)):
        KeyRing.loads(data)


def test_two_signers_are_refused() -> None:
    key = json.loads(new_keyring().dumps())["keys"][0]
    other = dict(key, kid="other")
    with pytest.raises(KeyRingError, match="exactly one"):
        KeyRing.loads(json.dumps({"keys": [key, other]}))
