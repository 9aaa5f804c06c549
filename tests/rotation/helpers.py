"""Put an install into the state a rotation killed at a given step leaves behind."""

from __future__ import annotations

from orbisctl.rotation import core
from orbisctl.rotation.journal import JournalStore
from orbisctl.rotation.steps import RotationContext
from orbisctl.rotation.strategies import SecretKind


def kill_during_step(
    ctx: RotationContext, kinds: list[SecretKind], index: int, *, after_effects: bool
) -> str:
    """Begin a rotation, run steps before `index`, then leave step `index` as a SIGKILL would:
    marked started, with its effects either not yet made or all made but not marked done.
    Returns the name of the interrupted step."""
    core.begin(ctx, kinds)
    runner = core.open_runner(ctx)
    for _ in range(index):
        assert runner.run_next() is not None
    store = JournalStore.of_install(ctx.install_dir)
    if after_effects:
        record = runner.run_next()
        assert record is not None
    journal = store.load()
    assert journal is not None
    journal.steps[index].status = "started"
    store.save(journal)
    return journal.steps[index].name


def step_count(ctx: RotationContext, kinds: list[SecretKind]) -> int:
    return len(core.plan(ctx, kinds))
