"""CHANGELOG.md agrees with the code: the newest entry is this release, with this code's schema,
and each cut release names the commit it came from and the schema that commit shipped."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.version import Version

from backups.schema import code_schema_version
from orbisctl import __version__

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = "runtime/api/migrations"
_HEADING = re.compile(r"^## (\S+) — (.+)$", re.MULTILINE)
_FIELD = re.compile(r"^- (Schema|Required stop|Commit): (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Entry:
    version: Version
    date: str
    fields: dict[str, str]


def entries() -> list[Entry]:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = list(_HEADING.finditer(text))
    found = []
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        body = text[heading.end() : following.start() if following else len(text)]
        fields = {m.group(1): m.group(2).strip() for m in _FIELD.finditer(body)}
        found.append(Entry(Version(heading.group(1)), heading.group(2), fields))
    return found


def test_the_newest_entry_is_this_release_with_this_code_s_schema() -> None:
    newest = entries()[0]
    assert str(newest.version) == Version(__version__).base_version
    assert int(newest.fields["Schema"]) == code_schema_version()
    if Version(__version__).is_devrelease:
        assert newest.date == "unreleased"


def test_every_entry_says_its_schema_and_whether_it_is_a_required_stop() -> None:
    found = entries()
    assert len(found) >= 2
    assert [e.version for e in found] == sorted((e.version for e in found), reverse=True)
    for entry in found:
        assert entry.fields["Required stop"] in ("yes", "no"), entry
        assert int(entry.fields["Schema"]) >= 1, entry
    schemas = [int(e.fields["Schema"]) for e in found]
    assert schemas == sorted(schemas, reverse=True)  # a release never takes a migration away


def test_each_cut_release_names_a_commit_that_shipped_its_schema() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the recorded commits cannot be read")
    cut = [e for e in entries() if e.date != "unreleased"]
    assert cut
    for entry in cut:
        listing = subprocess.run(
            ["git", "-C", str(ROOT), "ls-tree", "--name-only", entry.fields["Commit"] + ":" + MIGRATIONS],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split()  # fmt: skip
        newest = max(int(name.split("_", 1)[0]) for name in listing if name.endswith(".sql"))
        assert newest == int(entry.fields["Schema"]), entry
