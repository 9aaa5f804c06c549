"""The one reporter of long verbs' steps (`orbisctl.output.StepReporter`) on a terminal."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from orbisctl import output


def test_on_a_terminal_each_finished_step_stays_with_its_duration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100, color_system=None)
    monkeypatch.setattr(output, "err_console", terminal)
    with pytest.raises(RuntimeError), output.StepReporter() as progress:
        progress.note("orbisvoice/debian:bookworm: cached")
        progress.step("dependency wheels: pip wheel")
        progress.detail("Collecting aiohttp")
        progress.step("dump redis", 2048)
        progress.advance(2048)
        progress.step("orbisvoice/runtime: building")
        raise RuntimeError
    # What stays on the screen once the live line is gone, in order.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()).replace("\r", "\n")
    finals = [line.strip() for line in text.splitlines() if line.strip()[:1] in ("·", "✓", "✗")]
    assert len(finals) == 4, finals
    assert finals[0] == "· orbisvoice/debian:bookworm: cached"
    assert finals[1].startswith("✓ dependency wheels: pip wheel done in ")
    assert finals[2].startswith("✓ dump redis done in ") and finals[2].endswith(", 2.0 kB")
    assert finals[3].startswith("✗ orbisvoice/runtime: building failed after ")
