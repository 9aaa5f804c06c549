"""`orbisctl rotate-keys` in-process: plan, status, refusals, and no secret in any output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orbisctl.cli import app
from orbisctl.core.config import ModelConfig, ModelProvider, OrbisConfig, load_config
from orbisctl.core.errors import ExitCode, UserError
from orbisctl.core.install import open_install
from orbisctl.output import STEP_MARK
from orbisctl.rotation import core
from orbisctl.rotation.compose import unsupported
from orbisctl.rotation.steps import RotationContext
from orbisctl.rotation.strategies import ROTATION_ORDER, SecretKind
from tests.rotation.conftest import make_install, secret_values


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_dry_run_prints_the_plan_and_changes_nothing(install: Path) -> None:
    before = _tree(install)
    result = CliRunner().invoke(
        app,
        ["rotate-keys", "--dir", str(install), "--all", "--dry-run", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    kinds = {step["kind"] for step in plan}
    assert kinds == {
        "backup_key",
        "jwt",
        "internal_token",
        "redis_password",
        "postgres_password",
        "gemini_api_key",
    }
    assert _tree(install) == before
    assert not (install / "rotation").exists()


def test_backup_key_rotation_and_status_show_no_secret(install: Path) -> None:
    old_values = secret_values(install)
    runner = CliRunner()
    rotated = runner.invoke(
        app, ["rotate-keys", "--dir", str(install), "--backup-key"], catch_exceptions=False
    )
    assert rotated.exit_code == 0, rotated.output
    assert "completed" in rotated.stdout
    status = runner.invoke(
        app, ["rotate-keys", "--dir", str(install), "status", "--json"], catch_exceptions=False
    )
    assert status.exit_code == 0, status.output
    rows = {row["kind"]: row for row in json.loads(status.stdout)["secrets"]}
    assert rows["backup_key"]["last_rotated"] is not None and rows["jwt"]["last_rotated"] is None
    assert all(not row["overdue"] for row in rows.values())
    outputs = rotated.output + status.output
    leaked = [value for value in old_values + secret_values(install) if value in outputs]
    assert leaked == []


def test_rotations_that_restart_services_need_the_stack_and_touch_nothing_without_it(
    install: Path,
) -> None:
    before = _tree(install)
    result = CliRunner().invoke(app, ["rotate-keys", "--dir", str(install), "--jwt"])
    assert result.exit_code == ExitCode.CONFIG
    assert "compose.yaml does not exist" in result.output
    assert _tree(install) == before


def test_stacks_that_cannot_follow_a_rotation_are_named() -> None:
    password_file_health = {"test": ["CMD-SHELL", "cat /run/secrets/redis_password | x"]}
    old_stack = {
        "services": {
            "api": {"environment": {"ORBIS_DATABASE_URL": "postgresql://orbis@postgres/orbis"}},
            "redis": {"healthcheck": password_file_health},
        }
    }
    problems = unsupported(old_stack, ["postgres_password", "redis_password", "jwt"])
    assert len(problems) == 2
    assert "ORBIS_DATABASE_USER_FILE" in problems[0] and "healthcheck" in problems[1]
    ready = {
        "services": {
            "api": {"environment": ["ORBIS_DATABASE_USER_FILE=/run/secrets/postgres_user"]},
            "redis": {"healthcheck": {"test": ["CMD-SHELL", "redis-cli ping"]}},
        }
    }
    assert unsupported(ready, ["postgres_password", "redis_password"]) == []
    assert unsupported(old_stack, ["jwt", "internal_token"]) == []


def test_nothing_chosen_is_a_usage_error(install: Path) -> None:
    result = CliRunner().invoke(app, ["rotate-keys", "--dir", str(install)])
    assert result.exit_code == ExitCode.USAGE
    assert "nothing to rotate" in result.output


def test_resume_without_a_rotation_says_so(install: Path) -> None:
    result = CliRunner().invoke(app, ["rotate-keys", "--dir", str(install), "--resume"])
    assert result.exit_code == ExitCode.USAGE
    assert "no rotation is in progress" in result.output


def test_all_with_google_gemini_needs_the_new_key_file(tmp_path: Path) -> None:
    install = make_install(
        tmp_path / "install", config=OrbisConfig(model=ModelConfig(provider=ModelProvider.GEMINI))
    )
    result = CliRunner().invoke(app, ["rotate-keys", "--dir", str(install), "--all", "--dry-run"])
    assert result.exit_code == ExitCode.USAGE
    assert "--gemini-key-file" in result.output
    assert not (install / "rotation").exists()


def _bad_key_file(directory: Path, case: str) -> Path:
    directory.mkdir()
    contents = {"empty": "\n", "two keys": "key-one\nkey-two\n"}
    if case in contents:
        (directory / "key").write_text(contents[case])
        return directory / "key"
    return directory if case == "a directory" else directory / "missing"


@pytest.mark.parametrize("case", ["missing", "a directory", "empty", "two keys"])
def test_a_bad_gemini_key_file_is_refused_before_anything(
    install: Path, tmp_path: Path, case: str
) -> None:
    """Refused up front (exit 2, the file named), not after the journal was written and the
    stack contacted: nothing is left for --abort to clear (issue 15, item 4)."""
    key_file = _bad_key_file(tmp_path / "keys", case)
    before = _tree(install)
    for extra in ([], ["--dry-run"], ["--all"]):
        result = CliRunner().invoke(
            app, ["rotate-keys", "--dir", str(install), "--gemini-key-file", str(key_file), *extra]
        )
        assert result.exit_code == ExitCode.USAGE, result.output
        assert f"the Gemini API key file {key_file}" in result.output
        assert "Traceback" not in result.output
    assert _tree(install) == before
    assert not (install / "rotation").exists()


def test_core_rotate_checks_the_key_file_before_writing_the_journal(
    ctx: RotationContext, install: Path, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="cannot read the Gemini API key file"):
        core.rotate(ctx, [SecretKind.GEMINI_API_KEY], gemini_key_file=tmp_path / "missing")
    assert not (install / "rotation" / "journal.json").exists()
    # Nothing to finish or roll back: the next rotation starts at once.
    assert core.status(ctx).in_progress is None


@pytest.mark.integration
def test_the_stack_init_renders_can_follow_every_rotation(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    init = CliRunner().invoke(
        app, ["init", "--dir", str(root), "--non-interactive", "--model", "emulator"]
    )
    assert init.exit_code == 0, init.output
    assert (root / "secrets" / "postgres_user").read_text() == "orbis\n"
    model = open_install(root).compose().config()
    assert unsupported(model, [kind.value for kind in ROTATION_ORDER]) == []


STEP_LINE = re.compile(rf"^{STEP_MARK} (?P<step>.+)… done in \d+\.\d s$")


def test_rotate_keys_shows_each_step_as_it_runs_and_json_stays_valid(install: Path) -> None:
    # Off a terminal (CliRunner), one line per step on stderr, in the journal's order, each
    # with its duration; stdout holds the JSON result alone. --quiet shows no step.
    rotation = core.install_context(install, load_config(install / "orbis.yaml"))
    planned = [
        f"{step.kind}: {step.summary}" for step in core.plan(rotation, [SecretKind.BACKUP_KEY])
    ]
    result = CliRunner().invoke(
        app,
        ["rotate-keys", "--dir", str(install), "--backup-key", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"] == "completed"
    steps = [m["step"] for line in result.stderr.splitlines() if (m := STEP_LINE.match(line))]
    assert steps == [
        "find the running stack",
        *planned,
        "record the rotation in the history",
    ], result.stderr
    assert len(planned) == 5  # generate, keep_old, switch, verify, finish
    quiet = CliRunner().invoke(
        app, ["--quiet", "rotate-keys", "--dir", str(install), "--backup-key"]
    )
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""


def test_abort_shows_each_undo_as_it_runs(install: Path) -> None:
    rotation = core.install_context(install, load_config(install / "orbis.yaml"))
    journal = core.begin(rotation, [SecretKind.BACKUP_KEY])
    runner = core.open_runner(rotation)
    runner.run_next()  # killed after the first step
    result = CliRunner().invoke(
        app, ["rotate-keys", "--dir", str(install), "--abort"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert f"rotation {journal.id} aborted" in result.stdout
    steps = [m["step"] for line in result.stderr.splitlines() if (m := STEP_LINE.match(line))]
    first = runner.step_of(journal.steps[0])
    assert steps == [
        "find the running stack",
        f"backup_key: undo: {first.summary}",
        "record the rotation in the history",
    ], result.stderr
