"""An install whose backup.remote is a bucket of the test's S3 server (tests/objectstore.py)."""

from __future__ import annotations

from typing import Any

import yaml

from orbisctl.core.config import OrbisConfig
from orbisctl.core.install import Install
from orbisctl.core.secretfiles import REMOTE_ACCESS_KEY, REMOTE_SECRET_KEY
from tests.objectstore import S3Server

# Where backup.remote's path puts the bundles (remote_copies.Bucket.prefix).
BUNDLES_PREFIX = "orbis/bundles/"


def with_remote(
    install: Install,
    store: S3Server,
    bucket: str,
    *,
    secret_key: str | None = None,
    port: int = 0,
    backup: dict[str, Any] | None = None,
    remote: dict[str, Any] | None = None,
) -> Install:
    """The install with backup.remote set to `bucket` of the store (and any other `backup`
    settings, and `remote` ones), its keys and CA in place and orbis.yaml saying so, for the CLI."""
    assert store.ca_file is not None
    (install.root / "tls" / "remote-ca.crt").write_bytes(store.ca_file.read_bytes())
    install.secret(REMOTE_ACCESS_KEY).write_text(store.access_key + "\n")
    install.secret(REMOTE_SECRET_KEY).write_text((secret_key or store.secret_key) + "\n")
    settings = {
        "domain": "voice.example.com",
        "backup": {
            **(backup or {}),
            "remote": {
                # The store's certificate names localhost (and 127.0.0.1, which pgBackRest
                # would not accept: the same name serves both).
                "endpoint": "localhost",
                "port": port or store.port,
                "bucket": bucket,
                "uri_style": "path",
                "path": "/orbis",
                "ca_file": "tls/remote-ca.crt",
                **(remote or {}),
            },
        },
    }
    (install.root / "orbis.yaml").write_text(yaml.safe_dump(settings))
    return Install(install.root, OrbisConfig.model_validate(settings))
