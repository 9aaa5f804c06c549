"""`json.loads` with a bound on nesting depth, for text a client chose.

The stdlib parser recurses once per `[` or `{`: a frame of 60,000 brackets ends in a
RecursionError, which is not a ValueError, so callers that refuse bad JSON treated it as a bug
of their own (the gateway answered `internal` and logged a traceback per frame). Here it is one
more kind of bad JSON, refused before the parser runs.

Cost: a frame with at most `max_depth` brackets in all (every control event, every audio
frame: base64 has none) is vetted by two C-speed `count` calls; only a frame with more brackets
is measured (`nesting_depth`, a few milliseconds for 100 KB of brackets).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate, repeat
from operator import sub
from typing import Any

# Far deeper than any message of ours or of the Live API (tool schemas nest a handful deep).
MAX_DEPTH = 64

# A JSON string (escapes included), and a run of anything that is not a bracket.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# Opening brackets step the depth up (2 - 1), closing ones down (0 - 1).
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


class JsonTooDeepError(ValueError):
    """The text nests arrays/objects deeper than allowed (a ValueError, as bad JSON is)."""


def nesting_depth(text: str | bytes) -> int:
    """How deep `[`/`{` nest in JSON text, outside strings (an upper bound for invalid JSON).

    No Python-level loop per character or bracket: strings and other text are cut out by
    regular expressions, and the running depth is `accumulate` over the brackets left.
    """
    if isinstance(text, bytes):
        # Byte for byte: brackets, quotes and backslashes are ASCII; UTF-8 sequences are not.
        text = text.decode("latin-1")
    skeleton = _NOT_BRACKET.sub("", _STRING.sub("", text))
    steps = skeleton.encode("ascii").translate(_STEPS)
    return max(accumulate(map(sub, steps, repeat(1))), default=0)


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads(text)`, raising JsonTooDeepError past `max_depth` nested arrays/objects."""
    if isinstance(text, bytes):
        brackets = text.count(b"[") + text.count(b"{")
    else:
        brackets = text.count("[") + text.count("{")
    if brackets > max_depth:
        depth = nesting_depth(text)
        if depth > max_depth:
            raise JsonTooDeepError(f"JSON nested {depth} deep; at most {max_depth} allowed")
    return json.loads(text)
