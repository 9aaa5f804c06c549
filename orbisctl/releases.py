"""The releases this orbisctl knows and the upgrade paths between them.

CHANGELOG.md says the same in prose; `tests/install/test_changelog.py` keeps the two equal. An
upgrade may jump any number of releases except past a *required stop*: a release whose
migrations a later release relies on having run under it (a later release contracts what the
stop expanded), so an install older than the stop must be upgraded to it first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from orbisctl import __version__


@dataclass(frozen=True)
class Release:
    version: str
    schema: int  # the newest migration the release ships
    required_stop: bool
    commit: str | None  # the commit it was cut from; None while unreleased


RELEASES: tuple[Release, ...] = (
    Release("0.1.0", schema=3, required_stop=False, commit="5e692f2"),
    Release("0.2.0", schema=5, required_stop=False, commit=None),
)


def parse(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def release_of(version: str) -> Release | None:
    """The release a version belongs to (`0.2.0.dev0` → 0.2.0), None when unknown."""
    parsed = parse(version)
    if parsed is None:
        return None
    return next((r for r in RELEASES if Version(r.version) == Version(parsed.base_version)), None)


def path_problems(
    current: str, target: str = __version__, known: Sequence[Release] = RELEASES
) -> list[str]:
    """Why an upgrade from `current` to `target` is not allowed (empty when it is), given the
    `known` releases."""
    old, new = parse(current), parse(target)
    if old is None:
        return [f"the running version {current!r} is not a release number this orbisctl reads"]
    if new is None:
        return [f"the target version {target!r} is not a release number"]
    if new < old:
        going_back = (
            f"{target} is older than the running {current}: going back is "
            "`orbisctl upgrade --rollback`, right after an upgrade"
        )
        return [going_back]
    skipped = [
        r.version
        for r in known
        if r.required_stop and old < Version(r.version) < Version(new.base_version)
    ]
    if skipped:
        stop = (
            f"{current} → {target} skips the required stop {', '.join(skipped)}: upgrade to "
            f"{skipped[0]} first (its checkout or release bundle), then to {target}"
        )
        return [stop]
    return []
