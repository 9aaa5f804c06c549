"""jsonbound.loads: json.loads with a nesting bound, strings not counted, cheap on big frames."""

from __future__ import annotations

import json
import time

import pytest

from runtime.common import jsonbound


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ('"plain"', 0),
        ('{"a": [1, {"b": 2}]}', 3),
        ('["[[[[", "{{{{"]', 1),  # brackets inside strings do not nest
        ('["a\\"[[[", ["b"]]', 2),  # nor after an escaped quote
        (b'{"k": ["\xc3\xa9[", [[]]]}', 4),  # bytes, UTF-8 inside
    ],
)
def test_depth_is_measured_outside_strings(text: str | bytes, depth: int) -> None:
    assert jsonbound.nesting_depth(text) == depth
    assert jsonbound.loads(text, max_depth=depth) == json.loads(text)
    if depth:
        with pytest.raises(jsonbound.JsonTooDeepError):
            jsonbound.loads(text, max_depth=depth - 1)


@pytest.mark.parametrize("text", ["[" * 60_000, "[" * 30_000 + "]" * 30_000, b"{" * 60_000])
def test_deep_text_is_a_value_error_not_a_recursion_error(text: str | bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(ValueError, match="at most 64"):
        jsonbound.loads(text)
    # Measured ~10 ms on a shared 2-core host; the bound is loose, a recursion would not be.
    assert time.perf_counter() - started < 0.5


def test_many_shallow_brackets_still_parse() -> None:
    text = json.dumps([[i] for i in range(10_000)])
    assert len(jsonbound.loads(text)) == 10_000
