"""The process's own health and readiness."""

from __future__ import annotations

from typing import Literal

from runtime.api.models.base import Out


class Health(Out):
    status: Literal["ok"]


class Readiness(Out):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
