"""The upstream images of `images.source: registry`, in one place: image_digests.json beside
this module names each image's tag and, once `scripts/refresh-image-digests` has asked the
registry, its digest. A pinned reference is `name:tag@sha256:...`: the digest decides what is
pulled, the tag says what it was. Without a digest the tag alone pins the image.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Literal

DIGESTS_FILE = Path(__file__).with_name("image_digests.json")
Upstream = Literal["postgres", "redis", "python", "nginx"]
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@cache
def _entries() -> dict[str, dict[str, str | None]]:
    images: dict[str, dict[str, str | None]] = json.loads(DIGESTS_FILE.read_text())["images"]
    for name, entry in images.items():
        digest = entry.get("digest")
        if digest is not None and not _DIGEST.match(digest):
            raise ValueError(f"{DIGESTS_FILE}: {name}: {digest!r} is not a sha256 digest")
    return images


def tag(name: Upstream) -> str:
    """`name:tag` of the upstream image."""
    ref = _entries()[name]["ref"]
    assert ref is not None
    return ref


def pinned(name: Upstream) -> str:
    """`name:tag@sha256:digest` when the digest is known, else `name:tag`."""
    digest = _entries()[name].get("digest")
    return f"{tag(name)}@{digest}" if digest else tag(name)
