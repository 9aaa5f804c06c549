"""What a long-running core function reports while it works, and the reporter that ignores it.

Core functions never print: one that can take more than a few seconds takes a keyword-only
`progress: Progress = NO_PROGRESS` (or an `on_step` callback, where steps are all it has to
say) and tells it what it is doing. The command passes `orbisctl.output.StepReporter`, which
shows the steps on a terminal or writes one line per step to a log.
"""

from __future__ import annotations

from typing import Final, Protocol


class Progress(Protocol):
    def step(self, description: str, total_bytes: int | None = None) -> None:
        """A step begins (the one before it, if any, has ended); `total_bytes` when the step
        moves a known number of bytes."""

    def advance(self, nbytes: int) -> None:
        """`nbytes` more bytes of the current step are done."""

    def detail(self, message: str) -> None:
        """A line of the current step's own progress (pip's `Collecting …`, a build's
        `Step 3/9 …`): shown as it comes, the step goes on."""

    def note(self, message: str) -> None:
        """A fact with nothing to wait for (`…: cached`); the current step, if any, has ended."""


class NoProgress:
    """Reports nothing: the default of every core function that takes a `Progress`."""

    def step(self, description: str, total_bytes: int | None = None) -> None:
        del description, total_bytes

    def advance(self, nbytes: int) -> None:
        del nbytes

    def detail(self, message: str) -> None:
        del message

    def note(self, message: str) -> None:
        del message


NO_PROGRESS: Final = NoProgress()


def no_step(description: str) -> None:
    """The default `on_step` callback: reports nothing."""
    del description
