"""docs/configuration.md documents every orbis.yaml key, and only keys that exist."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from orbisctl.core.config import OrbisConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def key_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted key path of the model, nested sections included."""
    paths = set()
    for name, field in model.model_fields.items():
        path = prefix + name
        paths.add(path)
        # A section, or an optional one (`backup.remote: RemoteConfig | None`).
        for annotation in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                paths |= key_paths(annotation, path + ".")
    return paths


def documented_keys() -> set[str]:
    """Backticked names in the first column of the key tables (before the flags section)."""
    text = DOC.read_text().split("## `orbisctl init` flags", 1)[0]
    keys = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            first_column = line.split("|")[1]
            keys |= set(re.findall(r"`([a-z_.]+)`", first_column))
    return keys


def test_every_config_key_is_documented() -> None:
    text = DOC.read_text()
    missing = sorted(path for path in key_paths(OrbisConfig) if f"`{path}`" not in text)
    assert missing == []


def test_every_documented_key_exists() -> None:
    unknown = sorted(documented_keys() - key_paths(OrbisConfig))
    assert unknown == []
    assert len(documented_keys()) > 40  # the tables were found
