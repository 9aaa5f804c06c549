"""engine.stream_json joins a build's lines before judging them: the engine relays a step's
output as it comes, and one line may arrive in several chunks (on a busy host apt's error came
as "E", ": ", "Unable to locate …", "\\n", so the line-by-line reading missed it and named
the engine's generic "returned a non-zero code" instead: CI failed 3 builds in a row)."""

from __future__ import annotations

from typing import Any

import pytest

from orbisctl.core import engine
from orbisctl.core.errors import EngineError

RED, PLAIN = "\x1b[91m", "\x1b[0m"
FAILED = {
    "errorDetail": {"code": 100, "message": "The command '/bin/sh -c apt-get …' returned 100"},
    "error": "The command '/bin/sh -c apt-get …' returned a non-zero code: 100",
}


def apt_failing(pieces: list[str]) -> list[dict[str, Any]]:
    """A build stream as the engine sent it (recorded): apt's error line in `pieces`."""
    return [
        {"stream": "Step 2/2 : RUN apt-get install -y no-such-package-xyz\n"},
        {"stream": "Building dependency tree..."},
        {"stream": "\n"},
        *({"stream": f"{RED}{piece}{PLAIN}"} for piece in pieces),
        {"stream": "Removing intermediate container 6145d7013513\n"},
        FAILED,
    ]


@pytest.mark.parametrize(
    "pieces",
    [
        ["E: Unable to locate package no-such-package-xyz\n"],
        ["E", ": Unable to locate package no-such-package-xyz\n"],
        ["E", ": ", "Unable to locate package no-such-package-xyz", "\n"],
    ],
)
def test_the_error_line_is_found_however_it_was_split(pieces: list[str]) -> None:
    with pytest.raises(EngineError) as failed:
        list(engine.stream_json(iter(apt_failing(pieces))))
    assert failed.value.message == (
        "image build failed: E: Unable to locate package no-such-package-xyz"
    )


def test_lines_come_out_whole() -> None:
    chunks = [{"stream": "Step 1/2 : FR"}, {"stream": "OM debian\n ---> 1"}, {"stream": "2ab\n"}]
    assert list(engine.stream_json(iter(chunks))) == ["Step 1/2 : FROM debian", " ---> 12ab"]


def test_without_an_error_line_the_engines_message_is_named() -> None:
    with pytest.raises(EngineError) as failed:
        list(engine.stream_json(iter([{"stream": "Step 1/1 : RUN false\n"}, FAILED])))
    assert failed.value.message == (
        "image build failed: The command '/bin/sh -c apt-get …' returned 100"
    )


def test_stdout_and_stderr_writes_that_interleave_are_read_apart() -> None:
    """stdout and stderr are copied apart: on a busy host (recorded, 2 cores, 3 busy loops)
    a stdout line came between two pieces of apt's error, and the line-by-line join read
    "EBuilding dependency tree..." and ": Unable to locate …" (CI red once more)."""
    chunks = [
        {"stream": "Step 2/2 : RUN apt-get install -y no-such-package-xyz\n"},
        {"stream": "Reading package lists..."},
        {"stream": "\n"},
        {"stream": f"{RED}E{PLAIN}"},
        {"stream": "Building dependency tree...\n"},
        {"stream": f"{RED}: {PLAIN}"},
        {"stream": f"{RED}Unable to locate package no-such-package-xyz\n{PLAIN}"},
        {"stream": "Removing intermediate container 9afd5ffa2a38\n"},
        FAILED,
    ]
    with pytest.raises(EngineError) as failed:
        list(engine.stream_json(iter(chunks)))
    assert failed.value.message == (
        "image build failed: E: Unable to locate package no-such-package-xyz"
    )
