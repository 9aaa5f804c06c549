"""The recovery drill: restore a backup into a scratch stack, prove it serves, measure, tear down.

The scratch stack is the install's own rendered compose file with one override
(`compose.drill.yaml`): its own compose project name (so its own volumes and networks, none
shared with production), and nginx's published ports removed, so nothing of it is reachable
from outside the host. Its services sit on the scratch project's `internal` network, which
has no route out (Docker `internal: true`): the restored copy cannot call a tenant's webhook
or reach any production service. Only the gateway of a Gemini install has an egress network,
and the drill places no call there.

Steps, each timed: restore orbis.yaml, secrets/ and tls/ from the backup into a scratch
directory (the config component is exercised too), render the stack from that config, start
PostgreSQL and Redis, restore the data with the normal restore path (row counts checked
against the manifest), start everything and wait until healthy, then run the smoke checks of
`runtime.api.drill_probe` inside the scratch api container. RTO is the wall time from the start to
the last check; RPO the backup's age when the drill started. The scratch stack is always torn
down (also on failure or Ctrl-C) and a report is written to `<repository>/drills/`.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backups.executor import ComposeExecutor
from backups.fs import atomic_write
from backups.keys import BackupKeyRing
from backups.manifest import MANIFEST_FILE, load
from backups.ports import NoAppControl
from backups.process import psql_session, quote_literal
from backups.restore import restore_backup, restore_config_only
from backups.restore_lock import pid_alive
from orbisctl import stack
from orbisctl.core import engine
from orbisctl.core.config import CONFIG_FILENAME, ModelProvider, OrbisConfig, load_config
from orbisctl.core.errors import DataError, EngineError, OrbisError
from orbisctl.core.fsutil import write_tree
from orbisctl.core.install import COMPOSE_FILENAME, Install
from orbisctl.render import render_stack

DRILLS_DIR = "drills"
SCRATCH_PREFIX = ".scratch-"
OVERRIDE_FILE = "compose.drill.yaml"
DRILL_PID_FILE = "drill.pid"  # a scratch directory whose drill is alive is not a leftover
# The report as the drill began, in its scratch directory: a drill killed before writing its
# own report (SIGKILL, power loss) still gets a history entry when its leftovers are removed.
STARTED_REPORT_FILE = "report.json"
REPORT_FORMAT = 1
START_TIMEOUT_SECONDS = 300.0
PROBE_TIMEOUT_SECONDS = 300.0
_PROJECT_BASE_MAX = 50  # compose project names stop at 63 characters

# `!reset` (Compose 2.24+) empties a list the base file sets: nginx keeps running, unpublished.
OVERRIDE_TEXT = """\
# Written by `orbisctl drill`: the scratch stack publishes no port.
services:
  nginx:
    ports: !reset []
"""

# Checks reported as passed, failed, or skipped (ok None, with the reason as detail).
CHECK_ISOLATION = "isolation"
CHECK_ROWS = "row counts"
CHECK_LOGIN = "api login"
CHECK_AGENT = "agent read"
CHECK_CALL = "call through the gateway"


@dataclass
class DrillCheck:
    name: str
    ok: bool | None  # None: skipped, `detail` says why
    detail: str
    seconds: float = 0.0


@dataclass
class DrillReport:
    drill_id: str
    backup_id: str
    backup_created_at: str
    started_at: str
    finished_at: str = ""
    ok: bool = False
    rto_seconds: float | None = None  # None: the stack never got to healthy and checked
    rpo_seconds: float = 0.0
    rto_objective_seconds: int = 0
    rpo_objective_seconds: int = 0
    checks: list[DrillCheck] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds
    teardown_seconds: float = 0.0
    error: str = ""
    format: int = REPORT_FORMAT

    @property
    def rto_met(self) -> bool:
        return self.rto_seconds is not None and self.rto_seconds <= self.rto_objective_seconds

    @property
    def rpo_met(self) -> bool:
        return self.rpo_seconds <= self.rpo_objective_seconds

    @property
    def failed_checks(self) -> list[DrillCheck]:
        return [check for check in self.checks if check.ok is False]

    def conclude(self) -> None:
        self.ok = not self.error and not self.failed_checks and self.rto_met and self.rpo_met

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "rto_met": self.rto_met, "rpo_met": self.rpo_met}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DrillReport:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["checks"] = [DrillCheck(**check) for check in data.get("checks", [])]
        return cls(**fields)


def drills_dir(install: Install) -> Path:
    return install.repository / DRILLS_DIR


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def render_markdown(report: DrillReport) -> str:
    verdict = "PASSED" if report.ok else "FAILED"
    rto = _minutes(report.rto_seconds) if report.rto_seconds is not None else "not reached"
    rto_verdict = "met" if report.rto_met else "NOT met"
    rpo_verdict = "met" if report.rpo_met else "NOT met"
    rpo_objective = _hours(report.rpo_objective_seconds)
    lines = [
        f"# Recovery drill {report.drill_id}: {verdict}",
        "",
        f"- Backup: `{report.backup_id}` (taken {report.backup_created_at})",
        f"- Started: {report.started_at}; finished: {report.finished_at}",
        f"- RTO: {rto} (objective {_minutes(report.rto_objective_seconds)}: {rto_verdict})",
        f"- RPO: {_hours(report.rpo_seconds)} (objective {rpo_objective}: {rpo_verdict})",
    ]
    if report.error:
        lines.append(f"- Error: {report.error}")
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    for check in report.checks:
        result = "skipped" if check.ok is None else ("pass" if check.ok else "FAIL")
        lines.append(f"| {check.name} | {result} | {check.detail.replace('|', '/')} |")
    lines += ["", "| step | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in report.steps.items()]
    lines.append(f"| tear down (not in the RTO) | {report.teardown_seconds:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(install: Install, report: DrillReport) -> Path:
    directory = drills_dir(install)
    path = directory / f"{report.drill_id}.json"
    atomic_write(path, (json.dumps(report.as_json(), indent=2) + "\n").encode(), mode=0o600)
    atomic_write(directory / f"{report.drill_id}.md", render_markdown(report).encode(), mode=0o600)
    return path


def history(install: Install) -> list[DrillReport]:
    """Past drills, oldest first (ids sort by time); unreadable reports are skipped."""
    directory = drills_dir(install)
    if not directory.is_dir():
        return []
    reports = []
    for path in sorted(directory.glob("*.json")):
        try:
            reports.append(DrillReport.from_json(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return reports


def last_successful(install: Install) -> DrillReport | None:
    passed = [report for report in history(install) if report.ok]
    return passed[-1] if passed else None


# --- the scratch stack -----------------------------------------------------------------------


@dataclass
class _Scratch:
    root: Path
    config: OrbisConfig
    compose: engine.Compose

    @property
    def stack(self) -> Install:
        return Install(self.root, self.config)

    def tear_down(self) -> None:
        try:
            self.compose.run("down", "--volumes", "--remove-orphans", timeout=300)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _scratch_compose(root: Path, project: str, profiles: tuple[str, ...]) -> engine.Compose:
    return engine.Compose(
        root / COMPOSE_FILENAME, project, profiles, overrides=(root / OVERRIDE_FILE,)
    )


def _record_killed(install: Install, root: Path) -> None:
    """The history entry of a drill that died without writing its report: failed, saying so."""
    try:
        report = DrillReport.from_json(json.loads((root / STARTED_REPORT_FILE).read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return  # killed before it wrote even this: nothing is known of it
    if (drills_dir(install) / f"{report.drill_id}.json").exists():
        return
    report.finished_at = _utc(datetime.now(UTC))
    report.error = (
        "killed before it finished (no teardown, no report); its scratch stack was removed "
        "later (finished_at) by the next drill or `orbisctl drill cleanup`"
    )
    report.conclude()
    write_report(install, report)


def remove_leftovers(install: Install) -> list[str]:
    """Scratch stacks of drills that were killed before their own teardown (SIGKILL, reboot);
    each such drill is recorded in the history as failed."""
    removed: list[str] = []
    directory = drills_dir(install)
    if not directory.is_dir():
        return removed
    for root in sorted(directory.glob(f"{SCRATCH_PREFIX}*")):
        try:
            owner = int((root / DRILL_PID_FILE).read_text())
        except (OSError, ValueError):
            owner = None
        if owner is not None and pid_alive(owner):
            continue  # another drill, still running
        project = root.name.removeprefix(SCRATCH_PREFIX)
        if (root / COMPOSE_FILENAME).is_file() and (root / OVERRIDE_FILE).is_file():
            _scratch_compose(root, project, ()).run(
                "down", "--volumes", "--remove-orphans", timeout=300
            )
        _record_killed(install, root)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(project)
    return removed


def _project_name(production: OrbisConfig) -> str:
    return f"{production.project_name[:_PROJECT_BASE_MAX]}-drill-{secrets.token_hex(3)}"


def _isolation(compose: engine.Compose) -> DrillCheck:
    """Read back from `docker compose config`: nothing published, nothing external or shared."""
    model = compose.config()
    problems = [
        f"{name} publishes {spec['ports']}"
        for name, spec in (model.get("services") or {}).items()
        if spec.get("ports")
    ]
    for kind in ("networks", "volumes"):
        for name, spec in (model.get(kind) or {}).items():
            if (spec or {}).get("external"):
                problems.append(f"{kind[:-1]} {name} is external")
            elif not str((spec or {}).get("name", "")).startswith(compose.project_name):
                problems.append(f"{kind[:-1]} {name} is not the scratch project's own")
    if problems:
        return DrillCheck(CHECK_ISOLATION, False, "; ".join(problems))
    return DrillCheck(
        CHECK_ISOLATION,
        True,
        f"project {compose.project_name}: no published port, own networks and volumes",
    )


# --- smoke checks ----------------------------------------------------------------------------


# The probe runs in the scratch api container (`python -c` of its source, so any image of the
# install runs it), never here: the operator's CLI part has no aiohttp, so the module is found,
# not imported.
PROBE_PACKAGE, PROBE_FILE = "runtime.api", "drill_probe.py"


def run_probe(compose: engine.Compose, params: dict[str, Any]) -> dict[str, Any]:
    source = importlib.resources.files(PROBE_PACKAGE).joinpath(PROBE_FILE).read_text("utf-8")
    try:
        result = subprocess.run(
            compose.exec_command("api", ["python", "-c", source]),
            input=json.dumps(params),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
            env=compose.env(),
        )
    except subprocess.TimeoutExpired:
        raise EngineError(f"the smoke checks hung for {PROBE_TIMEOUT_SECONDS:.0f} s") from None
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise EngineError(
            f"the smoke checks did not run in the api container: "
            f"{engine.last_error_line(result.stderr)}"
        )
    data: dict[str, Any] = json.loads(lines[-1])
    return data


@dataclass(frozen=True)
class _Subject:
    """The restored user and agent the checks use (empty strings: the backup has none)."""

    user_id: str
    email: str
    agent_id: str
    agent_name: str
    public_id: str
    origin: str


_SUBJECT_SQL = """
SELECT u.id, u.email, coalesce(a.id::text, ''), coalesce(a.name, ''),
       coalesce(a.public_id, ''), coalesce(a.allowed_origins[1], '')
FROM users u
LEFT JOIN LATERAL (
    SELECT id, name, public_id, allowed_origins FROM agents
    WHERE org_id = u.org_id AND deleted_at IS NULL ORDER BY created_at LIMIT 1
) a ON true
ORDER BY a.id IS NULL, u.created_at LIMIT 1
"""


def _subject(executor: ComposeExecutor) -> _Subject | None:
    with psql_session(executor, executor.database) as session:
        rows = session.query(" ".join(_SUBJECT_SQL.split()))
    return _Subject(*rows[0][:6]) if rows else None


def _smoke_checks(
    scratch: _Scratch, executor: ComposeExecutor, config: OrbisConfig
) -> list[DrillCheck]:
    subject = _subject(executor) or _Subject("", "", "", "", "", "")
    skipped: dict[str, str] = {}
    password = ""
    if subject.user_id:
        # A known password for one restored user, in the scratch database only: a real login
        # of a restored account, with the image's own hashing; production never changes.
        password = secrets.token_urlsafe(24)
        hashed = run_probe(scratch.compose, {"mode": "hash", "password": password})["hash"]
        with psql_session(executor, executor.database) as session:
            session.query(
                f"UPDATE users SET password_hash = {quote_literal(hashed)} "  # noqa: S608
                f"WHERE id = {quote_literal(subject.user_id)}"
            )
    else:
        skipped[CHECK_LOGIN] = "the backup holds no user"
    if not subject.agent_id:
        skipped[CHECK_AGENT] = "the backup holds no agent"
    origin = subject.origin or next(iter(config.widget.allowed_origins), "")
    if config.model.provider is not ModelProvider.EMULATOR:
        skipped[CHECK_CALL] = "model.provider is gemini: no call placed (it would reach Google)"
    elif not subject.agent_id:
        skipped[CHECK_CALL] = "the backup holds no agent to call"
    elif not origin or "*" in origin:
        skipped[CHECK_CALL] = "the agent allows no literal origin to call from"
    params = {
        "mode": "check",
        "email": subject.email,
        "password": password,
        "agent_id": subject.agent_id,
        "agent_name": subject.agent_name,
        "public_id": subject.public_id,
        "origin": origin,
        "call": CHECK_CALL not in skipped,
    }
    checks = [DrillCheck(**check) for check in run_probe(scratch.compose, params)["checks"]]
    return checks + [DrillCheck(name, None, reason) for name, reason in skipped.items()]


# --- the drill -------------------------------------------------------------------------------


StepCallback = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


@contextmanager
def _timed(report: DrillReport, name: str, on_step: StepCallback) -> Iterator[None]:
    on_step(name)
    started = time.monotonic()
    try:
        yield
    finally:
        report.steps[name] = round(time.monotonic() - started, 2)


def run_drill(
    install: Install,
    production: OrbisConfig,
    ring: BackupKeyRing,
    backup_path: Path,
    *,
    on_step: StepCallback = _quiet,
    now: datetime | None = None,
) -> DrillReport:
    """Restore `backup_path` into a scratch stack, check it, tear it down; the report says how.

    Failures of the restored service are recorded in the report (not raised); the report is
    written whatever happens, and an interrupt still tears the scratch stack down.
    """
    started = time.monotonic()
    started_at = now or datetime.now(UTC)
    backup = load(backup_path / MANIFEST_FILE).manifest
    objectives = production.backup.objectives
    report = DrillReport(
        drill_id=started_at.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3),
        backup_id=backup.backup_id,
        backup_created_at=_utc(backup.created_at),
        started_at=_utc(started_at),
        rpo_seconds=round(max(0.0, (started_at - backup.created_at).total_seconds()), 1),
        rto_objective_seconds=objectives.rto_minutes * 60,
        rpo_objective_seconds=objectives.rpo_hours * 3600,
    )
    remove_leftovers(install)
    project = _project_name(production)
    root = drills_dir(install) / f"{SCRATCH_PREFIX}{project}"
    root.mkdir(parents=True, mode=0o700)
    (root / DRILL_PID_FILE).write_text(str(os.getpid()))
    atomic_write(root / STARTED_REPORT_FILE, json.dumps(report.as_json()).encode(), mode=0o600)
    scratch: _Scratch | None = None
    try:
        # Defaults until the backup's own orbis.yaml is restored: the repository under the root.
        scratch_install = Install(root, OrbisConfig())
        with _timed(report, "restore config and secrets", on_step):
            restore_config_only(scratch_install, ring, backup_path)
        with _timed(report, "render the scratch stack", on_step):
            restored = load_config(root / CONFIG_FILENAME)
            # The backup's settings, this install's images: a recovery runs today's release.
            # No archiving: the scratch has no stanza, and its WAL is no one's history.
            unarchived = restored.backup.model_copy(
                update={"archive": restored.backup.archive.model_copy(update={"enabled": False})}
            )
            config = restored.model_copy(
                update={"project_name": project, "images": production.images, "backup": unarchived}
            )
            write_tree(render_stack(config), root)
            atomic_write(root / OVERRIDE_FILE, OVERRIDE_TEXT.encode())
            scratch = _Scratch(
                root, config, _scratch_compose(root, project, tuple(config.profiles))
            )
            report.checks.append(_isolation(scratch.compose))
        if report.failed_checks:
            raise DataError("the scratch stack would not be isolated: not started")
        executor = ComposeExecutor(scratch.compose, scratch.root / "secrets")
        with _timed(report, "start postgres and redis", on_step):
            scratch.compose.run(
                "up", "--detach", "--wait", "postgres", "redis", timeout=START_TIMEOUT_SECONDS
            )
            # The login role the restored secrets name (orbis_a/orbis_b after a rotation).
            stack.ensure_database_login(scratch.stack, engine.connect())
        with _timed(report, "restore data", on_step):
            try:
                result = restore_backup(
                    scratch_install,
                    executor,
                    ring,
                    backup_path,
                    app=NoAppControl(),
                    safety_backup=False,
                )
            except DataError as exc:
                report.checks.append(DrillCheck(CHECK_ROWS, False, exc.message))
                raise
        rows = sum(result.row_counts.values())
        report.checks.append(
            DrillCheck(
                CHECK_ROWS,
                True,
                f"{rows} rows in {len(result.row_counts)} tables match the manifest",
            )
        )
        with _timed(report, "start the stack and wait healthy", on_step):
            _start(scratch)
        with _timed(report, "smoke checks", on_step):
            report.checks += _smoke_checks(scratch, executor, config)
        report.rto_seconds = round(time.monotonic() - started, 1)
    except OrbisError as exc:
        report.error = exc.message
    except BaseException:
        report.error = "interrupted"
        raise
    finally:
        teardown_started = time.monotonic()
        on_step("tear down the scratch stack")
        try:
            if scratch is not None:
                scratch.tear_down()
            else:
                shutil.rmtree(root, ignore_errors=True)
        finally:
            report.teardown_seconds = round(time.monotonic() - teardown_started, 1)
            report.finished_at = _utc(datetime.now(UTC))
            report.conclude()
            write_report(install, report)
    return report


def _start(scratch: _Scratch) -> None:
    """`up` the whole scratch stack (migrations included) and wait for every service."""
    compose = scratch.compose
    model = stack.compose_model(compose)
    process = subprocess.Popen(
        compose.command("up", "--detach"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=compose.env(),
    )
    stack.wait_healthy(
        scratch.stack,
        model,
        timeout=START_TIMEOUT_SECONDS,
        client=engine.connect(),
        running=process,
    )
