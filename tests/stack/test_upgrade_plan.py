"""`orbisctl upgrade` before it touches anything: the version path, the plan, preflight, the
journal it keeps, and the errors of the verb (the upgrade itself: tests/e2e/test_upgrade.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from orbisctl import __version__
from orbisctl.core.config import load_config
from orbisctl.core.errors import InstallDirError
from orbisctl.core.install import open_install
from orbisctl.installer import render_install
from orbisctl.releases import RELEASES, Release, path_problems, release_of
from orbisctl.rotation.journal import StepRecord
from orbisctl.upgrade import run
from orbisctl.upgrade.journal import UpgradeJournal, UpgradeRecord, UpgradeStore
from tests.stack.conftest import invoke


def _set_tag(install: Path, tag: str) -> None:
    path = install / "orbis.yaml"
    data = yaml.safe_load(path.read_text())
    data["images"]["tag"] = tag
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_an_upgrade_may_jump_releases_but_not_back_nor_past_a_required_stop() -> None:
    assert path_problems("0.1.0", "0.2.0.dev0") == []
    assert path_problems("0.1.0", "0.2.0") == []
    assert "older than the running" in path_problems("0.2.0", "0.1.0")[0]
    assert "not a release number" in path_problems("latest", "0.2.0")[0]
    stops = (
        Release("0.1.0", 3, False, "5e692f2"),
        Release("0.2.0", 5, True, None),
        Release("0.3.0", 6, False, None),
    )
    skipped = path_problems("0.1.0", "0.3.0", stops)
    assert skipped and "skips the required stop 0.2.0: upgrade to 0.2.0 first" in skipped[0]
    assert path_problems("0.2.0", "0.3.0", stops) == []
    assert path_problems("0.1.0", "0.2.0", stops) == []  # to the stop itself


def test_this_checkout_is_a_known_release() -> None:
    found = release_of(__version__)
    assert found is not None and found is RELEASES[-1]
    assert release_of("9.9.9") is None


def test_the_plan_lists_every_step_and_every_problem_at_once(
    install: Path, dead_engine: dict[str, str]
) -> None:
    _set_tag(install, "0.1.0")
    result = invoke("upgrade", "--dry-run", "--json", "--dir", str(install), env=dead_engine)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert (plan["from"], plan["to"]) == ("0.1.0", __version__)
    names = [step["name"] for step in plan["steps"]]
    assert names == [name for name, _ in run.FORWARD_STEPS]
    assert names.index("backup") < names.index("images") < names.index("migrate")
    assert names.index("migrate") < names.index("api") < names.index("gate")
    assert plan["problems"] == ["no Docker engine answers: start it (`systemctl start docker`)"]
    # Nothing changed.
    assert load_config(install / "orbis.yaml").images.tag == "0.1.0"
    assert not (install / "upgrade").exists()


def test_an_install_on_this_release_has_nothing_to_upgrade(
    install: Path, dead_engine: dict[str, str]
) -> None:
    result = invoke("upgrade", "--dry-run", "--dir", str(install), env=dead_engine)
    assert result.exit_code == 0, result.output
    assert f"already runs {__version__}" in result.stdout


def test_an_unfinished_rotation_and_a_newer_install_are_refused_before_anything(
    install: Path,
) -> None:
    _set_tag(install, "9.0.0")
    (install / "rotation").mkdir()
    (install / "rotation" / "journal.json").write_text("{}")
    found = run.plan(open_install(install), client=None)
    assert any("older than the running 9.0.0" in problem for problem in found.problems)
    assert any("rotate-keys --resume" in problem for problem in found.problems)


def test_the_verb_s_own_errors_are_one_line(install: Path, dead_engine: dict[str, str]) -> None:
    both = invoke("upgrade", "--dry-run", "--resume", "--dir", str(install), env=dead_engine)
    assert both.exit_code != 0 and "one at a time" in both.stderr
    nothing = invoke("upgrade", "--rollback", "--dir", str(install), env=dead_engine)
    assert nothing.exit_code != 0
    assert "no finished upgrade to roll back" in nothing.stderr
    assert "Traceback" not in nothing.stderr + nothing.stdout
    resume = invoke("upgrade", "--resume", "--dir", str(install), env=dead_engine)
    assert resume.exit_code != 0 and "no upgrade is unfinished" in resume.stderr


def test_the_journal_survives_a_round_trip_and_a_torn_one_is_named(install: Path) -> None:
    store = UpgradeStore.of_install(install)
    journal = UpgradeJournal(
        "abc",
        "op@host",
        "2026-12-07T10:00:00Z",
        "0.1.0",
        "0.2.0",
        [StepRecord("upgrade", "backup")],
    )
    journal.facts["forward_done"] = "backup,images,config,migrate"
    store.save(journal)
    loaded = store.load()
    assert loaded == journal and loaded.forward_done("migrate") and not loaded.forward_done("api")
    assert (store.journal_path.stat().st_mode & 0o777) == 0o600
    store.journal_path.write_text('{"version": 1, "steps": [')
    with pytest.raises(InstallDirError, match=r"upgrade journal .* is unreadable"):
        store.load()


def test_history_keeps_every_finished_upgrade_and_skips_a_torn_line(install: Path) -> None:
    store = UpgradeStore.of_install(install)
    first = UpgradeRecord("a", "op", "0.1.0", "0.2.0", "t0", "t1", "rolled back", "step api: x")
    second = UpgradeRecord("b", "op", "0.1.0", "0.2.0", "t2", "t3", "upgraded")
    store.append_history(first)
    with store.history_path.open("a") as torn:
        torn.write('{"id": "c", "act')
    store.append_history(second)
    assert store.history() == [first, second]
    listed = invoke("upgrade", "--history", "--json", "--dir", str(install))
    assert [row["outcome"] for row in json.loads(listed.stdout)] == ["rolled back", "upgraded"]


def test_a_second_upgrade_waits_for_the_first(install: Path) -> None:
    store = UpgradeStore.of_install(install)
    with (
        store.lock(),
        pytest.raises(InstallDirError, match="another `orbisctl upgrade`"),
        store.lock(),
    ):
        pass


def test_pinned_migrate_and_data_tags_keep_those_on_the_newer_release_s_images(
    install: Path,
) -> None:
    path = install / "orbis.yaml"
    data = yaml.safe_load(path.read_text())
    data["images"]["tag"] = "0.1.0"
    data["images"]["migrate_tag"] = __version__
    data["images"]["data_tag"] = __version__
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    render_install(install, check=False)
    services = yaml.safe_load((install / "compose.yaml").read_text())["services"]
    assert services["migrate"]["image"] == f"orbisvoice/runtime:{__version__}"
    assert services["postgres"]["image"] == f"orbisvoice/postgres:15-{__version__}"
    assert services["redis"]["image"] == f"orbisvoice/redis:7-{__version__}"
    assert services["nginx"]["image"] == "orbisvoice/nginx:0.1.0"
    assert services["api"]["image"] == services["gateway"]["image"] == "orbisvoice/runtime:0.1.0"
    rendered = invoke("render", "--dir", str(install))
    assert rendered.exit_code == 0
    data["images"]["migrate_tag"] = "no spaces allowed"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    refused = invoke("render", "--dir", str(install))
    assert refused.exit_code != 0 and "images.migrate_tag" in refused.stderr


def _turned_back(install: Path, statuses: dict[str, str]) -> UpgradeJournal:
    store = UpgradeStore.of_install(install)
    steps = [StepRecord("upgrade", name, statuses.get(name, "pending")) for name, _ in FORWARD]
    journal = UpgradeJournal("id", "op", "t0", "0.1.0", __version__, steps)
    port = run.BackupPort(take=lambda label: "unused", restore_database=lambda backup: None)
    # turn_back only rewrites the journal: no engine is reached.
    upgrader = run.Upgrader(install, store, journal, port, client=cast(Any, None))
    upgrader.turn_back("step api: it failed")
    loaded = store.load()
    assert loaded is not None
    return loaded


FORWARD = run.FORWARD_STEPS


def test_a_failure_before_orbis_yaml_moved_has_nothing_to_roll_back(install: Path) -> None:
    journal = _turned_back(install, {"backup": "done", "images": "started"})
    assert journal.mode == "rollback" and journal.steps == []
    assert journal.facts["failure"] == "step api: it failed"


def test_a_failure_after_it_moved_rolls_back_every_part_and_knows_what_ran(install: Path) -> None:
    done = dict.fromkeys(("backup", "images", "config", "migrate", "edge"), "done")
    journal = _turned_back(install, {**done, "api": "started"})
    assert [step.name for step in journal.steps] == [name for name, _ in run.ROLLBACK_STEPS]
    assert {step.kind for step in journal.steps} == {"rollback"}
    assert journal.forward_done("migrate") and not journal.forward_done("api")
    assert journal.forward_begun("api") and not journal.forward_begun("gateway")
