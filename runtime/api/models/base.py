"""What every body shares: the request and response base classes and the rules of stored JSON."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

# PostgreSQL text cannot hold NUL: requests refuse it (routing.py) and the OpenAPI document's
# patterns exclude it (openapi.py), as a regex class body. Unpaired UTF-16 surrogates (a JSON
# `\ud800` escape without its pair) are refused too, but are no Unicode text at all (RFC 8259
# 8.2, I-JSON): a pattern cannot name them (Rust-based validators refuse such a pattern, and
# schemathesis then drops it), so the document says so in words (openapi.py).
UNSTORABLE_CHARS = r"\x00"
# PostgreSQL bigint: larger numbers would fail in the database instead of in validation.
BIGINT_MAX = 2**63 - 1


class In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def finite_json(value: dict[str, Any]) -> dict[str, Any]:
    """JSON stored as jsonb: numbers like 1e400 parse to infinity, which jsonb cannot hold."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ValueError("numbers must be finite") from None
    return value
