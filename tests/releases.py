"""The releases CHANGELOG.md lists: number, date (or "unreleased") and the fields each entry
states (Schema, Required stop, Commit), and the previous release's code from its commit."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
_HEADING = re.compile(r"^## (\S+) — (.+)$", re.MULTILINE)
_FIELD = re.compile(r"^- (Schema|Required stop|Commit): (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Release:
    version: Version
    date: str
    fields: dict[str, str]

    @property
    def cut(self) -> bool:
        return self.date != "unreleased"


def releases() -> list[Release]:
    """Newest first, as CHANGELOG.md lists them."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = list(_HEADING.finditer(text))
    found = []
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        body = text[heading.end() : following.start() if following else len(text)]
        fields = {m.group(1): m.group(2).strip() for m in _FIELD.finditer(body)}
        found.append(Release(Version(heading.group(1)), heading.group(2), fields))
    return found


def in_git_checkout() -> bool:
    return shutil.which("git") is not None and (ROOT / ".git").exists()


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def extract(commit: str, paths: list[str], into: Path) -> Path:
    """`paths` of `commit` written under `into` (git archive), which is returned."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, *paths],
        capture_output=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, timeout=120, check=True)
    return into
