"""`orbisctl doctor`: each check says pass, warn or fail, what it saw and how to fix it.

A check is a plain function `(DoctorContext) -> list[Check]`; `checks()` lists them in order.
`check_backup_age` reads the backup repository: the newest backup (warn past the RPO, fail
past twice it) and the last passed recovery drill (warn past DRILL_WARN_DAYS, or never);
`check_remote_copies` the same RPO for backup.remote's bucket, and backups not copied there.
`check_kept_databases` asks PostgreSQL for the previous databases restores kept.
`check_archiving` reads pg_stat_archiver and `pgbackrest info`: archiving failing or stuck,
and each repository's health, newest base backup and recoverable window (`judge_archiving`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import docker
from cryptography import x509

from backups import drill as backup_drill
from backups import kept as backup_kept
from backups.archive import PgBackRest
from backups.archive_stack import (
    LOCAL_REPOSITORY,
    ArchiveReport,
    RepositoryReport,
    archive_report,
    stack_pgbackrest,
)
from backups.catalog import list_backups
from backups.executor import ComposeExecutor, Executor
from backups.remote_copies import RemoteCopies, bundle_bucket, unpushed
from backups.restore import restore_journals
from backups.restore_lock import locked_backup
from orbisctl import nginx, preflight, stack, tls
from orbisctl.core import engine, secretfiles
from orbisctl.core.config import BackupConfig, TlsMode
from orbisctl.core.errors import EngineError, OrbisError
from orbisctl.core.install import Install
from orbisctl.core.units import format_size
from orbisctl.render import archiving_enabled
from orbisctl.rotation import core as rotation_core

CERT_WARN_DAYS = 21
CERT_FAIL_DAYS = 3
DISK_WARN_GIB = 5.0
DISK_FAIL_GIB = 1.0
# Drills run monthly (backup.drill_schedule): a few days of slack before warning.
DRILL_WARN_DAYS = 35
# Previous databases kept by restores: warn when together they hold more than this, even
# within backup.keep_previous_databases (each is a whole copy of the old data).
KEPT_WARN_BYTES = 1024**3
# A completed WAL segment still waiting this long (five archive_timeouts) means the push is
# stuck, though no attempt has failed yet.
ARCHIVE_STUCK_SECONDS = 300
# A recoverable window this much shorter than backup.archive.window_days is worth a warning
# (full backups come every full_every_days; retention keeps the window at least as long).
WINDOW_SLACK = timedelta(days=1)


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "verdict": str(self.verdict),
            "detail": self.detail,
            "fix": self.fix,
        }


@dataclass
class DoctorContext:
    install: Install
    client: docker.DockerClient | None = None
    statuses: list[stack.ServiceStatus] = field(default_factory=list)
    containers: list[Any] = field(default_factory=list)
    # Where the database tools run; None: the stack's postgres, when it is running.
    database: Executor | None = None
    # pgBackRest for the archiving check; None: the one in the stack's postgres container.
    pgbackrest: PgBackRest | None = None


def check_engine(ctx: DoctorContext) -> list[Check]:
    try:
        ctx.client = engine.connect()
    except EngineError as exc:
        return [Check("engine", Verdict.FAIL, exc.message, exc.hint or "")]
    checks = [Check("engine", Verdict.PASS, f"Docker engine at {engine.engine_address()}")]
    try:
        checks.append(Check("compose", Verdict.PASS, f"Compose {engine.compose_version()}"))
    except EngineError as exc:
        checks.append(Check("compose", Verdict.FAIL, exc.message, exc.hint or ""))
    ctx.containers = ctx.install.containers(ctx.client)
    others = engine.foreign_installs(ctx.client, ctx.install.config.project_name, ctx.install.root)
    if others:
        checks.append(
            Check(
                "project name",
                Verdict.FAIL,
                f"project {ctx.install.config.project_name} is also used by the install in "
                f"{', '.join(others)}; up and down would act on its containers too",
                stack.PROJECT_CLASH_FIX,
            )
        )
    ctx.statuses = [stack.container_status(c) for c in ctx.containers]
    return checks


def _dependency_hint(row: stack.ServiceStatus, statuses: list[stack.ServiceStatus]) -> str:
    """When a service's readiness fails because a dependency is down, say which one."""
    down = sorted(
        {s.service for s in statuses if s.service in ("postgres", "redis") and s.state != "running"}
    )
    if down and row.service not in down:
        return f"{' and '.join(down)} is not running: `orbisctl up` starts it"
    return f"`orbisctl logs {row.service}` shows what it printed; `orbisctl up` restarts it"


def _live_probe(container: Any) -> engine.ExecResult | None:
    if container.status != "running":
        return None
    return engine.run_healthcheck(container)


def _container_check(
    row: stack.ServiceStatus, probe: engine.ExecResult | None, statuses: list[stack.ServiceStatus]
) -> Check:
    name = f"container {row.container}"
    if row.state != "running":
        state = f"{row.state} (exit code {row.exit_code})" if row.state == "exited" else row.state
        return Check(name, Verdict.FAIL, state, _dependency_hint(row, statuses))
    if probe is not None and probe.exit_code != 0:
        said = probe.output.splitlines()[-1] if probe.output else f"exit code {probe.exit_code}"
        return Check(
            name, Verdict.FAIL, f"health probe fails now: {said}", _dependency_hint(row, statuses)
        )
    if row.health == "starting":
        return Check(
            name, Verdict.WARN, "running, health check still starting", "wait, then re-run"
        )
    if row.health == "unhealthy":
        detail = row.health_detail.splitlines()[-1] if row.health_detail else "unhealthy"
        return Check(
            name, Verdict.WARN, f"recovering: probe passes now, was {detail}", "re-run in a minute"
        )
    return Check(name, Verdict.PASS, f"running, {row.health}")


def check_containers(ctx: DoctorContext) -> list[Check]:
    """Each container's state, and its own health probe run now (Docker's status lags)."""
    if ctx.client is None:
        return []
    if not ctx.statuses:
        return [Check("containers", Verdict.FAIL, "the stack is not running", "run `orbisctl up`")]
    model = stack.compose_model(ctx.install.compose())
    checks = []
    long_running = [
        (container, row)
        for container, row in zip(ctx.containers, ctx.statuses, strict=True)
        if row.service not in model.one_shot
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        probes = list(pool.map(_live_probe, [container for container, _ in long_running]))
    for (_, row), probe in zip(long_running, probes, strict=True):
        checks.append(_container_check(row, probe, ctx.statuses))
    for row in ctx.statuses:
        if row.service in model.one_shot and row.state == "exited" and row.exit_code != 0:
            checks.append(
                Check(
                    f"container {row.container}",
                    Verdict.FAIL,
                    f"{row.service} exited with code {row.exit_code}",
                    f"`orbisctl logs {row.service}` shows why",
                )
            )
    present = {row.service for row in ctx.statuses}
    for service in model.long_running:
        if service not in present:
            checks.append(
                Check(f"service {service}", Verdict.FAIL, "no container", "run `orbisctl up`")
            )
    return checks


def check_restart_loops(ctx: DoctorContext) -> list[Check]:
    looping = [row for row in ctx.statuses if row.restarts >= stack.RESTART_LOOP_COUNT]
    if not ctx.statuses:
        return []
    if not looping:
        return [Check("restart loops", Verdict.PASS, "no container restarted repeatedly")]
    return [
        Check(
            f"restart loop {row.container}",
            Verdict.FAIL if row.state == "restarting" else Verdict.WARN,
            f"restarted {row.restarts} times (now {row.state})",
            f"`orbisctl logs --tail 50 {row.service}` shows why it exits",
        )
        for row in looping
    ]


def check_nginx_config(ctx: DoctorContext) -> list[Check]:
    running = [
        c
        for c in ctx.containers
        if c.labels.get(engine.SERVICE_LABEL) == nginx.NGINX_SERVICE and c.status == "running"
    ]
    if not running:
        return []
    result = engine.exec_in(running[0], nginx.nginx_test_command(running[0]))
    if result.exit_code == 0:
        return [Check("nginx config", Verdict.PASS, "`nginx -t` in the container: ok")]
    errors = [line for line in result.output.splitlines() if "emerg" in line or "failed" in line]
    return [
        Check(
            "nginx config",
            Verdict.FAIL,
            (errors or result.output.splitlines() or ["nginx -t failed"])[0],
            "run `orbisctl render`, then `orbisctl up`",
        )
    ]


def gateway_load_check(container: str, probe_output: str, replicas: int) -> Check:
    """What a gateway's readiness probe said of its load (`URL: 200: {json}`), as a check."""
    name = f"load {container}"
    try:
        said = json.loads(probe_output.split(": ", 2)[2])
        calls, overloaded, refused = said["calls"], said["overloaded"], said["refused_calls"]
    except (IndexError, ValueError, KeyError, TypeError):
        return Check(name, Verdict.WARN, f"no load figures in its probe: {probe_output!r}")
    fix = (
        f"add a gateway: `orbisctl scale gateway={replicas + 1}`, and set gateway.replicas "
        'in orbis.yaml to keep it (docs/operations.md, "Capacity")'
    )
    if overloaded:
        detail = f"overloaded now: {calls} calls, new calls refused (event loop running late)"
        return Check(name, Verdict.WARN, detail, fix)
    if refused:
        detail = f"{calls} calls; refused {refused} since it started (full or overloaded)"
        return Check(name, Verdict.WARN, detail, fix)
    return Check(name, Verdict.PASS, f"{calls} calls, taking new ones")


def check_gateway_load(ctx: DoctorContext) -> list[Check]:
    """Each running gateway's load, from its readiness probe run now."""
    gateways = [
        c
        for c in ctx.containers
        if c.labels.get(engine.SERVICE_LABEL) == stack.GATEWAY_SERVICE and c.status == "running"
    ]
    checks = []
    for container in gateways:
        probe = engine.run_healthcheck(container)
        if probe is not None and probe.exit_code == 0:  # a failing probe: check_containers says
            checks.append(gateway_load_check(container.name, probe.output, len(gateways)))
    return checks


def check_certificate(ctx: DoctorContext, now: datetime | None = None) -> list[Check]:
    path = ctx.install.tls_dir / "server.crt"
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return [
            Check("certificate", Verdict.FAIL, f"cannot read {path}: {exc}", "run `orbisctl init`")
        ]
    days = (cert.not_valid_after_utc - (now or datetime.now(UTC))).days
    expiry = cert.not_valid_after_utc.date().isoformat()
    ours = _issued_by_install_ca(ctx.install, path.read_bytes())
    if ours:
        renews = (cert.not_valid_after_utc - timedelta(days=tls.RENEW_DAYS)).date().isoformat()
        who = f"renewed from {renews} by `orbisctl up` and `orbisctl tls renew`"
        fix = "run `orbisctl tls renew`; `orbisctl tls schedule` installs its daily timer"
    else:
        who = "the operator's own: renew it before then"
        fix = "renew: replace tls/server.crt and server.key with the new ones, then `orbisctl up`"
    lifespan = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    if days < CERT_FAIL_DAYS:
        verdict = Verdict.FAIL
    elif days < CERT_WARN_DAYS:
        verdict = Verdict.WARN
    elif ours and lifespan > tls.SERVER_DAYS:
        detail = (
            f"{path.name} is valid for {lifespan} days (until {expiry}); Mozilla's TLS profiles "
            f"allow at most 366 and `tls renew` issues {tls.SERVER_DAYS}"
        )
        return [Check("certificate", Verdict.WARN, detail, fix)]
    else:
        detail = f"{path.name} valid until {expiry} ({days} days; {who})"
        return [Check("certificate", Verdict.PASS, detail)]
    state = "expired" if days < 0 else f"expires in {days} days"
    return [Check("certificate", verdict, f"{path.name} {state} ({expiry}; {who})", fix)]


def _issued_by_install_ca(install: Install, chain: bytes) -> bool:
    try:
        ca = (install.tls_dir / "ca.crt").read_bytes()
    except OSError:
        return False
    return install.config.tls.mode is TlsMode.SELF_SIGNED and tls.issued_by(chain, ca)


def check_disk(ctx: DoctorContext) -> list[Check]:
    places = {"install directory": ctx.install.root}
    if ctx.client is not None:
        try:
            root = str(ctx.client.info().get("DockerRootDir", ""))
        except docker.errors.DockerException:
            root = ""
        if root:
            places["Docker data"] = type(ctx.install.root)(root)
    checks = []
    for what, path in places.items():
        if not path.is_dir():
            continue
        free = shutil.disk_usage(path).free / preflight.GIB
        detail = f"{free:.1f} GiB free on {path} ({what})"
        fix = "free disk space (`docker system prune` removes unused images and build cache)"
        if free < DISK_FAIL_GIB:
            checks.append(Check(f"disk {what}", Verdict.FAIL, detail, fix))
        elif free < DISK_WARN_GIB:
            checks.append(Check(f"disk {what}", Verdict.WARN, detail, fix))
        else:
            checks.append(Check(f"disk {what}", Verdict.PASS, detail))
    return checks


def check_secret_modes(ctx: DoctorContext) -> list[Check]:
    install = ctx.install
    files = sorted(p for p in install.secrets_dir.glob("*") if p.is_file())
    files += sorted(p for p in install.tls_dir.glob("*.key") if p.is_file())
    problems = preflight.check_secret_files(install.secrets_dir, files)
    if not problems:
        return [Check("secret modes", Verdict.PASS, f"{len(files)} secret files are mode 0600")]
    return [Check("secret modes", Verdict.FAIL, p.message, p.hint) for p in problems]


def check_secret_ages(ctx: DoctorContext) -> list[Check]:
    """Secrets older than rotation.max_age_days, and a rotation left unfinished."""
    report = rotation_core.status(
        rotation_core.install_context(ctx.install.root, ctx.install.config)
    )
    overdue = [row for row in report.secrets if row.overdue]
    checks = []
    if overdue:
        names = ", ".join(f"{row.kind} ({row.age_days} days)" for row in overdue)
        checks.append(
            Check(
                "secret ages",
                Verdict.WARN,
                f"older than {overdue[0].max_age_days} days: {names}",
                "`orbisctl rotate-keys --all` (or the secrets named); "
                "`orbisctl rotate-keys status` shows every age",
            )
        )
    else:
        checks.append(Check("secret ages", Verdict.PASS, "no secret is overdue for rotation"))
    if report.in_progress is not None:
        checks.append(
            Check(
                "rotation",
                Verdict.WARN,
                f"rotation {report.in_progress.id} is unfinished",
                "`orbisctl rotate-keys --resume` finishes it, --abort rolls it back",
            )
        )
    return checks


def check_backup_age(ctx: DoctorContext, now: datetime | None = None) -> list[Check]:
    """The newest backup against the RPO objective, and the last passed recovery drill."""
    now = now or datetime.now(UTC)
    config = ctx.install.config
    repository = ctx.install.repository
    rpo_hours = config.backup.objectives.rpo_hours
    backups = [e.manifest for e in list_backups(repository) if e.manifest]
    if not backups:
        backup = Check(
            "backup age", Verdict.WARN, "no backup yet", "`orbisctl backup` takes one now"
        )
    else:
        newest = max(backups, key=lambda m: m.created_at)
        hours = (now - newest.created_at).total_seconds() / 3600
        verdict = _age_verdict(hours, rpo_hours)
        backup = Check(
            "backup age",
            verdict,
            f"newest backup {newest.backup_id} is {hours:.1f} h old (RPO {rpo_hours} h)",
            ""
            if verdict is Verdict.PASS
            else "`orbisctl backup` now; `orbisctl backup schedule` runs it daily",
        )
    passed = backup_drill.last_successful(ctx.install)
    fix = "`orbisctl drill` runs one; `orbisctl drill schedule` runs it monthly"
    if passed is None:
        drill = Check("drill age", Verdict.WARN, "no recovery drill has passed yet", fix)
    else:
        days = (now - datetime.fromisoformat(passed.started_at)).total_seconds() / 86400
        drill = Check(
            "drill age",
            Verdict.PASS if days <= DRILL_WARN_DAYS else Verdict.WARN,
            f"last passed drill {passed.drill_id} was {days:.0f} days ago",
            "" if days <= DRILL_WARN_DAYS else fix,
        )
    return [backup, drill]


def _age_verdict(hours: float, rpo_hours: int) -> Verdict:
    """Pass within the RPO, warn within twice it, fail beyond."""
    if hours <= rpo_hours:
        return Verdict.PASS
    return Verdict.WARN if hours <= 2 * rpo_hours else Verdict.FAIL


def check_remote_copies(ctx: DoctorContext, now: datetime | None = None) -> list[Check]:
    """With backup.remote: the newest complete copy in the bucket against the RPO, and the
    local backups not copied there yet (the store was down when they were taken)."""
    name = "remote copies"
    now = now or datetime.now(UTC)
    try:
        bucket = bundle_bucket(ctx.install)
        if bucket is None:
            return []
        copies = RemoteCopies(bucket)
        complete = copies.complete()
        pending = unpushed(ctx.install.repository, complete)
    except OrbisError as exc:
        return [Check(name, Verdict.FAIL, exc.message, exc.hint or "")]
    push = "`orbisctl backup remote push` copies them"
    if pending:
        listed = ", ".join(path.name for path in pending[:3]) + (", …" if len(pending) > 3 else "")
        return [
            Check(
                name, Verdict.WARN, f"{len(pending)} backups not in backup.remote: {listed}", push
            )
        ]
    if not complete:
        return [
            Check(
                name,
                Verdict.WARN,
                f"no backup in {bucket.describe()} yet",
                "`orbisctl backup` takes one and copies it",
            )
        ]
    newest = complete[-1]
    created = newest.created_at or newest.modified
    rpo_hours = ctx.install.config.backup.objectives.rpo_hours
    hours = (now - created).total_seconds() / 3600
    verdict = _age_verdict(hours, rpo_hours)
    return [
        Check(
            name,
            verdict,
            f"newest copy {newest.backup_id} is {hours:.1f} h old (RPO {rpo_hours} h), "
            f"{len(complete)} in {bucket.describe()}",
            "" if verdict is Verdict.PASS else "`orbisctl backup` takes one and copies it",
        )
    ]


def _existing(path: Path) -> Path:
    """`path`, or its nearest existing parent (a location the first backup will create)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_backup_space(ctx: DoctorContext) -> list[Check]:
    """Room at backup.location for the next backup: at least what the newest one took, on a
    file system that takes writes."""
    repository = ctx.install.repository
    place = _existing(repository)
    elsewhere = "or set backup.location in orbis.yaml to a directory on another file system"
    if not os.access(place, os.W_OK):
        read_only = bool(os.statvfs(place).f_flag & os.ST_RDONLY)
        reason = "is on a read-only file system" if read_only else "is not writable"
        fix = "remount it read-write" if read_only else "let orbisctl's user write to it"
        return [Check("backup space", Verdict.FAIL, f"{place} {reason}", f"{fix}, {elsewhere}")]
    free = shutil.disk_usage(place).free
    entries = [e for e in list_backups(repository) if e.manifest is not None]
    if not entries:
        return [Check("backup space", Verdict.PASS, f"{format_size(free)} free on {place}")]
    newest = entries[-1]  # ids sort by time
    needed = newest.size
    detail = f"{format_size(free)} free on {place}; the last backup ({newest.backup_id}) took {format_size(needed)}"
    if free < needed:
        return [
            Check(
                "backup space",
                Verdict.WARN,
                detail + ": the next one may not fit",
                f"free space on that file system (`df -h {place}`; `orbisctl backup prune`), "
                + elsewhere,
            )
        ]
    return [Check("backup space", Verdict.PASS, detail)]


def _database(ctx: DoctorContext) -> Executor | None:
    """Where to run database tools: None while the stack's postgres is down (check_containers
    says so)."""
    if ctx.database is not None:
        return ctx.database
    postgres_up = any(
        row.service == stack.POSTGRES_SERVICE and row.state == "running" for row in ctx.statuses
    )
    if not postgres_up:
        return None
    return ComposeExecutor(ctx.install.compose(), ctx.install.secrets_dir)


def check_kept_databases(ctx: DoctorContext) -> list[Check]:
    """The previous databases restores kept: how many and how much disk they hold."""
    executor = _database(ctx)
    if executor is None:
        return []
    kept = backup_kept.list_kept(executor)
    if not kept:
        return [Check("kept databases", Verdict.PASS, "no previous databases kept by restores")]
    keep = ctx.install.config.backup.keep_previous_databases
    total = sum(k.size for k in kept)
    detail = (
        f"{len(kept)} previous database(s) kept by restores take {format_size(total)}: "
        + ", ".join(f"{k.name} ({format_size(k.size)})" for k in kept)
    )
    fix = (
        "`orbisctl restore --drop-kept NAME` (or `--drop-kept all`) once the restored data "
        "is right; `orbisctl restore --list-kept` lists them"
    )
    if len(kept) > keep:
        return [
            Check(
                "kept databases",
                Verdict.WARN,
                f"{detail}; more than backup.keep_previous_databases ({keep})",
                fix,
            )
        ]
    if total > KEPT_WARN_BYTES:
        return [
            Check(
                "kept databases",
                Verdict.WARN,
                f"{detail}; over {format_size(KEPT_WARN_BYTES)}",
                fix,
            )
        ]
    return [Check("kept databases", Verdict.PASS, detail)]


def check_archiving(ctx: DoctorContext) -> list[Check]:
    """Continuous archiving in the compose stack (docs/operations.md, "Continuous archiving")."""
    config = ctx.install.config
    if not archiving_enabled(config):
        return []
    executor = _database(ctx)
    if executor is None:
        return []
    try:
        report = archive_report(ctx.pgbackrest or stack_pgbackrest(ctx.install), executor)
    except OrbisError as exc:
        return [Check("wal archiving", Verdict.FAIL, exc.message, exc.hint or "")]
    return judge_archiving(
        report,
        config.backup,
        now=datetime.now(UTC),
        archiving_since=_archiving_since(ctx.install),
    )


def _archiving_since(install: Install) -> datetime | None:
    """When this install began archiving: its cipher passphrase was written then (by `init`,
    or by the first `up` of an older install), and it is never rotated."""
    try:
        mtime = (install.secrets_dir / secretfiles.ARCHIVE_KEY).stat().st_mtime
    except OSError:
        return None
    return datetime.fromtimestamp(mtime, UTC)


def _segment_number(wal: str | None) -> int | None:
    """A WAL segment's place in the timeline's sequence (16 MiB segments, 256 per log file);
    None for other archived files (a timeline's .history)."""
    if wal is None or len(wal) < 24 or not all(c in "0123456789ABCDEF" for c in wal[:24]):
        return None
    return int(wal[8:16], 16) * 0x100 + int(wal[16:24], 16)


def judge_archiving(
    report: ArchiveReport,
    backup: BackupConfig,
    *,
    now: datetime,
    archiving_since: datetime | None,
) -> list[Check]:
    """The archiver's verdict, then one per repository."""
    return [
        _archiver_check(report),
        *(_repository_check(repo, backup, now, archiving_since) for repo in report.repositories),
    ]


def _archiver_check(report: ArchiveReport) -> Check:
    archiver = report.archiver
    if archiver.failing:
        at = f"{archiver.last_failed_at:%Y-%m-%d %H:%M:%S} UTC"
        return Check(
            "wal archiving",
            Verdict.FAIL,
            f"archiving WAL fails: segment {archiver.last_failed_wal} last failed at {at} "
            f"({archiver.failed_count} failures); it waits in pg_wal and is retried",
            "`orbisctl logs postgres` shows pgBackRest's error; `orbisctl backup status` shows "
            "which repository refuses (for backup.remote: the endpoint, the bucket and "
            "secrets/remote_*_key)",
        )
    if archiver.lag_seconds is None:
        return Check(
            "wal archiving",
            Verdict.WARN,
            "no WAL segment archived yet",
            "`orbisctl up` creates the stanza and archives a first segment",
        )
    current = _segment_number(archiver.current_wal)
    archived = _segment_number(archiver.last_archived_wal)
    waiting = current - archived - 1 if current is not None and archived is not None else 0
    if waiting > 0 and archiver.lag_seconds > ARCHIVE_STUCK_SECONDS:
        return Check(
            "wal archiving",
            Verdict.WARN,
            f"{waiting} completed WAL segment(s) wait; the last one archived "
            f"{archiver.lag_seconds:.0f} s ago",
            "`orbisctl logs postgres` shows pgBackRest's async push; `orbisctl backup status`",
        )
    return Check(
        "wal archiving",
        Verdict.PASS,
        f"{archiver.archived_count} segments archived, the last {archiver.lag_seconds:.0f} s ago",
    )


def _repository_check(
    repo: RepositoryReport, backup: BackupConfig, now: datetime, archiving_since: datetime | None
) -> Check:
    number = repo.state.repo
    local = number == LOCAL_REPOSITORY
    name = f"backup repository {number} ({'local' if local else 'backup.remote'})"
    take = "`orbisctl backup create` takes a base backup into every repository"
    if not repo.state.readable:
        fix = (
            "`orbisctl backup status`; `orbisctl backup verify` checks what it holds"
            if local
            else "check that the object store is reachable from this host and backup.remote "
            "(endpoint, bucket, region, ca_file) and secrets/remote_*_key are right"
        )
        return Check(name, Verdict.FAIL, repo.state.status, fix)
    newest, window = repo.state.newest, repo.window
    if newest is None or window is None:
        return Check(name, Verdict.WARN, "no base backup yet: nothing to restore from", take)
    hours = (now - newest.stopped).total_seconds() / 3600
    rpo_hours = backup.objectives.rpo_hours
    detail = f"window {window.describe()}; newest base backup {newest.label} is {hours:.1f} h old"
    if hours > rpo_hours:
        return Check(
            name,
            Verdict.WARN if hours <= 2 * rpo_hours else Verdict.FAIL,
            f"{detail} (RPO {rpo_hours} h)",
            f"{take}; `orbisctl backup schedule` runs it daily",
        )
    configured = timedelta(days=backup.archive.window_days)
    span = window.latest - window.earliest
    archived_long_enough = archiving_since is not None and now - archiving_since > configured
    if span < configured - WINDOW_SLACK and archived_long_enough:
        return Check(
            name,
            Verdict.WARN,
            f"{detail}: {span.total_seconds() / 86400:.1f} days, shorter than "
            f"backup.archive.window_days ({backup.archive.window_days})",
            "base backups were missed or removed: `orbisctl backup status` lists those kept; "
            "the window grows back as new ones age",
        )
    return Check(name, Verdict.PASS, detail)


def check_unfinished_restore(ctx: DoctorContext) -> list[Check]:
    """A restore that was interrupted and not yet finished or undone."""
    journal = restore_journals(ctx.install).load()
    if journal is None:
        return []
    running = locked_backup(ctx.install.repository)
    if running is not None:
        return [Check("restore", Verdict.WARN, f"a restore of {running} is running")]
    return [
        Check(
            "restore",
            Verdict.FAIL,
            f"the restore of {journal.backup_id} was interrupted "
            f"({'after' if journal.phase == 'switched' else 'at or before'} its database switch)",
            "`orbisctl restore --resume` finishes or undoes it (so do `up` and `status`)",
        )
    ]


CheckFunction = Callable[[DoctorContext], list[Check]]

# Order matters: check_engine fills the context the container checks read.
CHECKS: tuple[CheckFunction, ...] = (
    check_engine,
    check_containers,
    check_restart_loops,
    check_nginx_config,
    check_gateway_load,
    check_certificate,
    check_disk,
    check_secret_modes,
    check_secret_ages,
    check_backup_age,
    check_remote_copies,
    check_backup_space,
    check_kept_databases,
    check_archiving,
    check_unfinished_restore,
)


def checks() -> tuple[CheckFunction, ...]:
    """Every doctor check, in the order they run."""
    return CHECKS


def run(install: Install) -> list[Check]:
    ctx = DoctorContext(install)
    results: list[Check] = []
    for check in checks():
        try:
            results.extend(check(ctx))
        except EngineError as exc:
            results.append(
                Check(
                    check.__name__.removeprefix("check_"), Verdict.FAIL, exc.message, exc.hint or ""
                )
            )
    return results
