"""CHANGELOG.md agrees with the code: the newest entry is this release, with this code's schema,
and each cut release names the commit it came from and the schema that commit shipped."""

from __future__ import annotations

import pytest
from packaging.version import Version

from backups.schema import code_schema_version
from orbisctl import __version__
from orbisctl.releases import RELEASES
from tests.releases import git, in_git_checkout, releases

MIGRATIONS = "runtime/api/migrations"


def test_the_newest_entry_is_this_release_with_this_code_s_schema() -> None:
    newest = releases()[0]
    assert str(newest.version) == Version(__version__).base_version
    assert int(newest.fields["Schema"]) == code_schema_version()
    if Version(__version__).is_devrelease:
        assert not newest.cut


def test_every_entry_says_its_schema_and_whether_it_is_a_required_stop() -> None:
    found = releases()
    assert len(found) >= 2
    assert [e.version for e in found] == sorted((e.version for e in found), reverse=True)
    for entry in found:
        assert entry.fields["Required stop"] in ("yes", "no"), entry
        assert int(entry.fields["Schema"]) >= 1, entry
    schemas = [int(e.fields["Schema"]) for e in found]
    assert schemas == sorted(schemas, reverse=True)  # a release never takes a migration away


def test_each_cut_release_names_a_commit_that_shipped_its_schema() -> None:
    if not in_git_checkout():
        pytest.skip("not a git checkout: the recorded commits cannot be read")
    cut = [e for e in releases() if e.cut]
    assert cut
    for entry in cut:
        listing = git("ls-tree", "--name-only", f"{entry.fields['Commit']}:{MIGRATIONS}").split()
        newest = max(int(name.split("_", 1)[0]) for name in listing if name.endswith(".sql"))
        assert newest == int(entry.fields["Schema"]), entry


def test_the_releases_orbisctl_knows_are_the_changelog_s() -> None:
    """orbisctl.releases is what `upgrade` checks a path against; CHANGELOG.md the prose."""
    listed = {
        str(entry.version): (
            int(entry.fields["Schema"]),
            entry.fields["Required stop"] == "yes",
            entry.fields["Commit"] if entry.cut else None,
        )
        for entry in releases()
    }
    known = {r.version: (r.schema, r.required_stop, r.commit) for r in RELEASES}
    assert known == listed
