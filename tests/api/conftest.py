"""Fixtures of the API tests (the reusable ones live in tests/api/fixtures.py)."""

from tests.api.fixtures import api

__all__ = ["api"]
