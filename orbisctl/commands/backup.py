"""`orbisctl backup …` and `orbisctl restore`: thin commands over the `backups` engine.

Plain `orbisctl backup` (no sub-command) takes a backup of the install in the current
directory (or `$ORBIS_DIR`), so the muscle-memory form works; the sub-commands are for
everything else.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from backups import schedule
from backups.fs import atomic_write
from orbisctl import output
from orbisctl.commands import backup_remote
from orbisctl.commands.backup_remote import describe_push, on_bundle_copies, raise_after_local
from orbisctl.commands.options import InstallDirOption, JsonOption, YesOption
from orbisctl.core.config import CONFIG_FILENAME, OrbisConfig, load_config
from orbisctl.core.errors import EngineError, UserError
from orbisctl.core.units import format_size

if TYPE_CHECKING:
    from backups.archive_stack import BaseBackupResult
    from backups.executor import Executor
    from backups.keys import BackupKeyRing
    from backups.ports import AppControl
    from backups.remote_copies import RemotePrunePlan
    from backups.restore import FinishedRestore
    from backups.retention import PrunePlan

# The backups engine (psycopg, aiohttp, cryptography, google-genai through the drill's probes)
# and the Docker client are imported inside the commands that use them: `orbisctl --help` must
# not pay for them.

app = typer.Typer(help="Take, list, verify, prune and schedule backups.")
restore_app = typer.Typer()
app.add_typer(backup_remote.app, name="remote")

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        envvar="ORBIS_BACKUP_DATABASE_URL",
        help="Use the PostgreSQL at this URL directly instead of the compose stack's.",
        show_default=False,
    ),
]
RedisUrlOption = Annotated[
    str | None,
    typer.Option(
        envvar="ORBIS_BACKUP_REDIS_URL",
        help="Use the Redis at this URL directly instead of the compose stack's.",
        show_default=False,
    ),
]
PassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        help="File whose first line is the escrow passphrase (for a host without the key); "
        "checked whenever given, a wrong one is refused.",
        show_default=False,
    ),
]


class BackupContext:
    """What every backup command needs, resolved once from --dir and the URL options."""

    def __init__(self, directory: Path, database_url: str | None, redis_url: str | None) -> None:
        from orbisctl.core.install import Install

        self.root = directory.resolve()
        self.config = self._config()
        self.install = Install(self.root, self.config)
        self.database_url = database_url
        self.redis_url = redis_url

    def _config(self) -> OrbisConfig:
        path = self.root / CONFIG_FILENAME
        if not path.exists():
            # A new host restoring from escrow has no orbis.yaml yet: defaults do.
            return OrbisConfig()
        return load_config(path)

    def executor(self) -> Executor:
        from backups.executor import ComposeExecutor, LocalExecutor

        if self.database_url and self.redis_url:
            return LocalExecutor(database_url=self.database_url, redis_url=self.redis_url)
        if self.database_url or self.redis_url:
            raise UserError(
                "--database-url and --redis-url go together",
                hint="give both to use servers outside the stack, or neither",
            )
        return ComposeExecutor(self.install.compose(), self.install.secrets_dir)

    def archiving(self) -> bool:
        """pgBackRest archives this install's stack (not servers given by URL)."""
        from orbisctl.render import archiving_enabled

        return not self.database_url and archiving_enabled(self.config)

    def offline(self) -> bool:
        """No database to reach: neither URLs nor a rendered stack in this directory."""
        return not (self.database_url or self.redis_url) and not self.install.compose_file.exists()

    def app_control(self) -> AppControl:
        from backups.executor import ComposeAppControl
        from backups.ports import NoAppControl
        from orbisctl import nginx, stack
        from orbisctl.core import engine

        if self.database_url:
            return NoAppControl()
        install = self.install
        compose = install.compose()

        def wait_ready() -> None:
            client = engine.connect()
            stack.wait_healthy(
                install, stack.compose_model(compose), timeout=300, client=client, check_now=True
            )
            # Restarted api/gateway containers may have new addresses; nginx resolves
            # upstream names only when it loads its config.
            nginx.reload_nginx(install, client)

        def before_start() -> None:
            stack.ensure_database_login(install, engine.connect())

        return ComposeAppControl(compose, wait_ready=wait_ready, before_start=before_start)

    def running_services(self) -> list[str]:
        """The services of this install's stack that have a running container; none when
        nothing is rendered here or no engine answers (a new host)."""
        return self._services(running=True)

    def created_services(self) -> list[str]:
        """The services of this install's stack that have a container, running or not."""
        return self._services(running=False)

    def _services(self, *, running: bool) -> list[str]:
        from orbisctl.core import engine

        if not self.install.compose_file.exists():
            return []
        try:
            containers = engine.project_containers(
                engine.connect(), self.config.project_name, working_dir=self.install.root
            )
        except EngineError:
            return []
        return sorted(
            {
                c.labels.get(engine.SERVICE_LABEL, "")
                for c in containers
                if c.status == "running" or not running
            }
        )

    def ring(self) -> BackupKeyRing:
        from backups import keys

        return keys.load_key_ring(self.install.secrets_dir)


def _read_passphrase(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
    if not lines or not lines[0]:
        raise UserError(f"the passphrase file {path} is empty")
    return lines[0]


def _create(
    directory: Path, database_url: str | None, redis_url: str | None, label: str, as_json: bool
) -> None:
    from backups.create import create_backup
    from backups.remote_copies import push_pending

    ctx = BackupContext(directory, database_url, redis_url)
    # Back up what serves, not a half-switched install; a scheduled backup so finishes an
    # interrupted restore unattended.
    converge(ctx, as_json=as_json)
    started = time.monotonic()
    bases: list[BaseBackupResult] = []
    with output.StepReporter() as progress:
        result = create_backup(
            ctx.install,
            ctx.executor(),
            ctx.ring(),
            label=label,
            progress=progress,
        )
        if ctx.archiving():
            from backups.archive_stack import take_base_backups

            bases = take_base_backups(ctx.install, progress=progress)
        # Every local backup the bucket lacks: the new one and any an outage kept from it.
        pushed, copy_error = on_bundle_copies(
            ctx.install,
            lambda copies: push_pending(copies, ctx.install.repository, progress=progress),
        )
    copies = pushed or []
    elapsed = time.monotonic() - started
    size = sum(component.size for component in result.components.values())
    if as_json:
        described = [
            {
                "repo": base.repo,
                "label": base.label,
                "type": base.kind.value,
                "seconds": round(base.seconds, 2),
            }
            for base in bases
        ]
        output.print_json(
            {
                "id": result.backup_id,
                "size": size,
                "seconds": round(elapsed, 2),
                "row_counts": result.row_counts,
                # The local repository's (repository 1), and every repository's.
                "base_backup": described[0] if described else None,
                "base_backups": described,
                "remote_copies": [
                    {"id": copy.backup_id, "uploaded_bytes": copy.uploaded_bytes} for copy in copies
                ],
            }
        )
    else:
        escrow_note = "" if result.has_escrow else " (no passphrase escrow: see `backup escrow`)"
        output.info(
            f"[green]backup {escape(result.backup_id)}[/] {format_size(size)} in "
            f"{elapsed:.1f} s, {sum(result.row_counts.values())} rows in "
            f"{len(result.row_counts)} tables{escrow_note}"
        )
        for base in bases:
            output.info(
                f"[green]pgBackRest {base.kind.value} base backup {escape(base.label)}[/] "
                f"into repository {base.repo} in {base.seconds:.1f} s"
            )
        for copy in copies:
            if copy.uploaded_bytes:
                output.info(describe_push(copy))
    raise_after_local(
        copy_error,
        done=f"backup {result.backup_id} is kept here",
        failed="copying it to backup.remote",
        retry="`orbisctl backup remote push` copies it",
    )


@app.callback(invoke_without_command=True)
def _backup_group(
    ctx: typer.Context,
    directory: InstallDirOption = Path(),
    database_url: DatabaseUrlOption = None,
    redis_url: RedisUrlOption = None,
) -> None:
    """Take, list, verify, prune and schedule backups (plain `backup` takes one)."""
    if ctx.invoked_subcommand is None:
        _create(directory, database_url, redis_url, "", as_json=False)
        return
    given = [
        name
        for name in ("directory", "database_url", "redis_url")
        if (source := ctx.get_parameter_source(name)) is not None and source.name == "COMMANDLINE"
    ]
    if given:
        raise UserError(
            f"options before `{ctx.invoked_subcommand}` apply only to a plain `orbisctl backup`",
            hint=f"put them after it: orbisctl backup {ctx.invoked_subcommand} --dir …",
        )


@app.command("create")
def create_command(
    directory: InstallDirOption = Path(),
    database_url: DatabaseUrlOption = None,
    redis_url: RedisUrlOption = None,
    label: Annotated[str, typer.Option(help="A note stored in the manifest.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Back up the database, Redis and the config + secrets, encrypted, into backups/."""
    _create(directory, database_url, redis_url, label, as_json)


@app.command("list")
def list_command(directory: InstallDirOption = Path(), as_json: JsonOption = False) -> None:
    """List the backups in the repository, oldest first."""
    from backups.catalog import list_backups

    ctx = BackupContext(directory, None, None)
    entries = list_backups(ctx.install.repository)
    if as_json:
        output.print_json(
            [
                {
                    "id": entry.backup_id,
                    "path": str(entry.path),
                    "size": entry.size,
                    "created_at": entry.manifest.created_at.isoformat() if entry.manifest else None,
                    "label": entry.manifest.label if entry.manifest else None,
                    "schema_version": entry.manifest.schema_version if entry.manifest else None,
                    "key_ids": entry.manifest.key_ids if entry.manifest else [],
                    "escrow": entry.manifest.has_escrow if entry.manifest else False,
                    "problem": entry.problem or None,
                }
                for entry in entries
            ]
        )
        return
    if not entries:
        output.info(f"no backups in {escape(str(ctx.install.repository))}")
        return
    # The id is the creation time (UTC), so no separate time column: room for the label.
    table = Table(output.id_column("id (UTC time)"), "size", "schema", "opens with", "label")
    for column in table.columns[1:4]:
        column.no_wrap = True
    for entry in entries:
        info = entry.manifest
        if info is None:
            table.add_row(escape(entry.path.name), "", "", "", f"[red]{escape(entry.problem)}[/]")
            continue
        opens_with = ", ".join(info.key_ids) + (" + passphrase" if info.has_escrow else "")
        table.add_row(
            escape(info.backup_id),
            format_size(entry.size),
            str(info.schema_version or "-"),
            escape(opens_with),
            escape(info.label),
        )
    output.print_table(table)


@app.command("status")
def status_command(directory: InstallDirOption = Path(), as_json: JsonOption = False) -> None:
    """Continuous archiving: what each repository can restore to, the archive lag, the
    newest base backup."""
    from backups.archive_stack import archive_report, stack_pgbackrest

    ctx = BackupContext(directory, None, None)
    if not ctx.archiving():
        raise UserError(
            "continuous archiving is off for this install",
            hint="set backup.archive.enabled: true (target compose) in orbis.yaml, then "
            "`orbisctl render` and `orbisctl up`",
        )
    report = archive_report(stack_pgbackrest(ctx.install), ctx.executor())
    if as_json:
        output.print_json(report.to_json())
        return
    archiver = report.archiver
    if archiver.failing:
        output.info(
            f"[red]archiving is failing[/]: segment {escape(archiver.last_failed_wal or '')} "
            f"last failed at {archiver.last_failed_at:%Y-%m-%d %H:%M:%S} UTC; it waits in "
            "pg_wal and is retried (see `orbisctl logs postgres`)"
        )
    lag = "none archived yet" if archiver.lag_seconds is None else f"{archiver.lag_seconds:.0f} s"
    output.info(
        f"archived {archiver.archived_count} WAL segments, the last {lag} ago "
        f"(now writing {escape(archiver.current_wal)})"
    )
    table = Table("repository", "status", "restorable window (UTC)", "newest base backup")
    for repo in report.repositories:
        newest = repo.state.newest
        table.add_row(
            str(repo.state.repo),
            escape(repo.state.status),
            repo.window.describe() if repo.window else "[yellow]none: no base backup yet[/]",
            "-"
            if newest is None
            else f"{escape(newest.label)} ({newest.kind.value}, {newest.stopped:%Y-%m-%d %H:%M:%S})",
        )
    output.print_table(table)


@app.command("verify")
def verify_command(
    backup: Annotated[
        str | None, typer.Argument(help="Backup id or path (default: the newest).")
    ] = None,
    directory: InstallDirOption = Path(),
    deep: Annotated[
        bool, typer.Option("--deep", help="Also restore into a throwaway database and count rows.")
    ] = False,
    passphrase_file: PassphraseFileOption = None,
    database_url: DatabaseUrlOption = None,
    redis_url: RedisUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a backup: checksums, decryption and authentication, dump readable (--deep: restore).

    With continuous archiving, pgBackRest's repositories are verified as well.
    """
    from backups.catalog import latest_backup, resolve
    from backups.verify import open_backup, verify_backup

    ctx = BackupContext(directory, database_url, redis_url)
    path = resolve(ctx.install, backup) if backup else latest_backup(ctx.install)
    passphrase = _read_passphrase(passphrase_file)
    offline = not deep and ctx.offline()
    with output.StepReporter() as progress:
        if offline:
            # A backup copied to a machine without the stack: everything but pg_restore --list.
            verified = open_backup(path, ctx.ring(), passphrase=passphrase, progress=progress)
        else:
            verified = verify_backup(
                path,
                ctx.ring(),
                ctx.executor(),
                passphrase=passphrase,
                deep=deep,
                progress=progress,
            )
        repositories: list[int] = []
        if not offline and ctx.archiving():
            from backups.archive_stack import verify_repositories

            repositories = verify_repositories(ctx.install, progress=progress)
    if as_json:
        output.print_json(
            {
                "id": verified.manifest.backup_id,
                "ok": True,
                "opened_with": verified.opened_with,
                "archive_entries": verified.archive_entries,
                "deep_row_counts": verified.deep_row_counts,
                "repositories_verified": repositories,
            }
        )
        return
    depth = (
        f", restored {sum((verified.deep_row_counts or {}).values())} rows that match the manifest"
        if deep
        else ""
    )
    listing = (
        "dump not listed (no stack here)" if offline else f"{verified.archive_entries} dump entries"
    )
    output.info(
        f"[green]ok[/] {escape(verified.manifest.backup_id)}: checksums, authentication "
        f"({escape(verified.opened_with)}), {listing}{depth}"
    )
    for repo in repositories:
        output.info(
            f"[green]ok[/] pgBackRest repository {repo}: every base backup file and WAL "
            "segment matches its checksum"
        )


@app.command("prune")
def prune_command(
    directory: InstallDirOption = Path(),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go.")] = False,
    include_labelled: Annotated[
        bool,
        typer.Option(
            "--include-labelled",
            help="Apply the policy to labelled backups too (by default they are kept).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete backups outside backup.retention (keep-daily/weekly/monthly; never the newest,
    never a labelled one unless --include-labelled)."""
    from backups import retention

    ctx = BackupContext(directory, None, None)
    plan = retention.plan_prune(
        ctx.install.repository, ctx.config.backup.retention, include_labelled=include_labelled
    )
    if not dry_run:
        retention.apply_prune(ctx.install.repository, plan)
    remote, remote_error = on_bundle_copies(
        ctx.install,
        lambda copies: copies.prune(
            ctx.config.backup.retention, include_labelled=include_labelled, dry_run=dry_run
        ),
    )
    if as_json:
        output.print_json(
            {
                "dry_run": dry_run,
                "keep": plan.keep,
                "delete": plan.delete,
                "labelled": plan.labelled,
                "unreadable": plan.unreadable,
                "partial": [path.name for path in plan.partial],
                "remote": None
                if remote is None
                else {
                    "keep": remote.keep,
                    "delete": remote.delete,
                    "labelled": remote.labelled,
                    "incomplete": remote.incomplete,
                },
            }
        )
    else:
        _describe_prune(plan, remote, dry_run=dry_run)
    raise_after_local(
        remote_error,
        done="this host's plan is shown" if dry_run else "the backups here are pruned",
        failed="pruning backup.remote",
        retry="`orbisctl backup prune` again prunes it",
    )


def _describe_prune(plan: PrunePlan, remote: RemotePrunePlan | None, *, dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    for backup_id in plan.delete:
        output.info(f"{verb} {escape(backup_id)}")
    for path in plan.partial:
        output.info(f"{verb} {escape(path.name)} (an interrupted backup)")
    for name in plan.unreadable:
        output.warn(f"kept {name}: its manifest is unreadable (delete it by hand if unwanted)")
    labelled = (
        f" ({len(plan.labelled)} labelled, kept whatever the policy: `--include-labelled` "
        "applies it to them too)"
        if plan.labelled
        else ""
    )
    output.info(f"kept {len(plan.keep)} backup(s){labelled}, {verb} {len(plan.delete)}")
    if remote is not None:
        for backup_id in remote.delete:
            output.info(f"{verb} {escape(backup_id)} in backup.remote")
        for backup_id in remote.incomplete:
            output.info(f"{verb} {escape(backup_id)} in backup.remote (an interrupted copy)")
        output.info(
            f"backup.remote: kept {len(remote.keep)} backup(s), {verb} {len(remote.delete)}"
        )


ScheduleDirOption = Annotated[Path, typer.Option(help="Where systemd units go.")]
CronDirOption = Annotated[Path, typer.Option(help="Where the cron entry goes.")]
PrintOnlyOption = Annotated[
    bool, typer.Option("--print", help="Print the files instead of installing them.")
]
CronOption = Annotated[
    bool, typer.Option("--cron", help="Write a cron entry even where systemd runs.")
]


def install_schedule(
    directory: Path,
    job: schedule.Job,
    expression_of: Callable[[OrbisConfig], str],
    *,
    print_only: bool,
    cron: bool,
    unit_dir: Path,
    cron_dir: Path,
) -> None:
    """Write (or print) the systemd timer or cron entry running `job` at the schedule
    `expression_of` reads from orbis.yaml."""
    ctx = BackupContext(directory, None, None)
    expression = expression_of(ctx.config)
    use_systemd = not cron and schedule.systemd_running()
    kwargs: dict[str, Any] = {
        "project": ctx.config.project_name,
        "install_root": ctx.root,
        "expression": expression,
        "orbisctl": schedule.orbisctl_command(),
        "job": job,
    }
    files = schedule.systemd_units(**kwargs) if use_systemd else schedule.cron_entry(**kwargs)
    target = unit_dir if use_systemd else cron_dir
    if print_only:
        for name, text in files.items():
            output.console.print(f"# {escape(str(target / name))}\n{escape(text)}")
    else:
        for name, text in files.items():
            atomic_write(target / name, text.encode(), mode=0o644)
            output.info(f"wrote {escape(str(target / name))}")
        if use_systemd:
            timer = f"{schedule.unit_name(ctx.config.project_name, job)}.timer"
            for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", timer]):
                result = subprocess.run(argv, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    raise EngineError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    when = schedule.next_run_text(expression, datetime.now().astimezone())
    output.info(f"{job.name} schedule {escape(expression)!r}: {when}")


def schedule_command(
    job: schedule.Job, expression_of: Callable[[OrbisConfig], str], summary: str
) -> Callable[..., None]:
    """The `schedule` command of a verb group: installs `job` at the schedule in orbis.yaml."""

    def command(
        directory: InstallDirOption = Path(),
        print_only: PrintOnlyOption = False,
        cron: CronOption = False,
        unit_dir: ScheduleDirOption = schedule.SYSTEMD_UNIT_DIR,
        cron_dir: CronDirOption = schedule.CRON_DIR,
    ) -> None:
        install_schedule(
            directory,
            job,
            expression_of,
            print_only=print_only,
            cron=cron,
            unit_dir=unit_dir,
            cron_dir=cron_dir,
        )

    command.__doc__ = summary
    return command


app.command("schedule")(
    schedule_command(
        schedule.BACKUP_JOB,
        lambda config: config.backup.schedule,
        "Run `backup create` + `backup prune` at backup.schedule (systemd timer, else cron).",
    )
)


app.command("on-boot")(
    schedule_command(
        schedule.BOOT_JOB,
        lambda config: schedule.AT_BOOT,
        "Run `status` after every boot: it finishes or undoes a restore the reboot interrupted.",
    )
)


@app.command("escrow")
def escrow_command(
    directory: InstallDirOption = Path(),
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Set the passphrase that can open future backups on a host that lost secrets/.

    Only a public key derived from it is stored; keep the passphrase itself offline.
    """
    from backups import keys

    ctx = BackupContext(directory, None, None)
    passphrase = _read_passphrase(passphrase_file)
    if passphrase is None:
        if not sys.stdin.isatty():
            raise UserError("no passphrase given", hint="pass --passphrase-file FILE")
        passphrase = typer.prompt("Escrow passphrase", hide_input=True, confirmation_prompt=True)
    if len(passphrase) < 12:
        raise UserError("the passphrase is shorter than 12 characters", hint="choose a longer one")
    keys.save_escrow(ctx.install.secrets_dir, passphrase)
    output.info("escrow set: backups from now on can also be opened with this passphrase")


def _confirm(question: str, *, yes: bool, doing: str = "restore replaces live data") -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(
            f"{doing} and needs confirmation", hint="pass --yes to confirm without a prompt"
        )
    if not typer.confirm(question):
        raise UserError(f"{doing.split()[0]} cancelled")


def _restore_secrets_only(
    ctx: BackupContext, path: Path, *, yes: bool, passphrase_file: Path | None
) -> None:
    from backups.restore import restore_config_only

    running = ctx.running_services()
    if running:
        # Running containers keep the files they mounted, and `up` would not recreate them:
        # the stack would go on with the old secrets while secrets/ holds the restored ones.
        raise UserError(
            f"the stack is running ({', '.join(running)}); --secrets-only is for a new host, "
            "before `orbisctl up`",
            hint=f"on a running stack use `orbisctl restore {path.name} --with-secrets`",
        )
    _confirm(f"Replace orbis.yaml, secrets/ and tls/ in {ctx.root} from {path.name}?", yes=yes)
    with output.StepReporter() as progress:
        restored = restore_config_only(
            ctx.install,
            ctx.ring(),
            path,
            passphrase=_read_passphrase(passphrase_file),
            progress=progress,
        )
    output.info(
        f"[green]restored orbis.yaml, secrets/ and tls/[/] of {escape(restored.backup_id)}; "
        f"next: orbisctl render, orbisctl up, orbisctl restore {escape(str(path))}"
    )


def finish_unfinished_restore(
    ctx: BackupContext, *, abort: bool = False, say: Callable[[str], None] = output.info
) -> FinishedRestore | None:
    """Finish or undo the install's interrupted restore, saying which (None: there is none)."""
    from backups import pitr
    from backups.restore import FinishedRestore, finish_restore

    if pitr.journals(ctx.install).load() is not None:
        with output.StepReporter() as progress:
            done = pitr.finish_pitr(
                ctx.install,
                ctx.app_control(),
                abort=abort,
                keep_previous=ctx.config.backup.keep_previous_databases,
                progress=progress,
            )
        if done is not None:
            say(
                f"[green]finished the interrupted restore {escape(done.label)}[/]: the restored "
                "cluster serves"
                if done.outcome == "finished"
                else f"[green]undid the interrupted restore {escape(done.label)}[/]: the "
                "previous data serves"
            )
            return FinishedRestore(done.label, done.outcome)
    with output.StepReporter() as progress:
        finished = finish_restore(
            ctx.install,
            ctx.executor(),
            ctx.app_control(),
            abort=abort,
            keep_previous_databases=ctx.config.backup.keep_previous_databases,
            progress=progress,
        )
    if finished is not None:
        say(
            f"[green]finished the interrupted restore of {escape(finished.backup_id)}[/]: "
            "the restored data serves"
            if finished.outcome == "finished"
            else f"[green]undid the interrupted restore of {escape(finished.backup_id)}[/]: "
            "the previous data serves"
        )
    return finished


def converge_restore(directory: Path, *, as_json: bool = False) -> None:
    """For `up` and `status`: an interrupted restore is finished or undone now, not left
    with api and gateway stopped until someone notices; one that is running is left alone.
    With `as_json` what it says goes to stderr."""
    converge(BackupContext(directory, None, None), as_json=as_json)


def refuse_unfinished_switch(directory: Path) -> None:
    """For `up`: postgres must not start while a point-in-time restore's switch is unfinished
    (on a half-renamed volume its entrypoint would make a new, empty cluster)."""
    from backups import pitr

    journal = pitr.PitrJournalStore(directory.resolve()).load()
    if journal is not None and journal.phase == "verified":
        raise UserError(
            f"the switch of the point-in-time restore {journal.label} is unfinished",
            hint="`orbisctl restore --resume` finishes it and starts the stack",
        )


def converge(ctx: BackupContext, *, as_json: bool = False) -> None:
    """`converge_restore` on the servers of `ctx` (the stack's, or those of the URLs)."""
    from backups import pitr
    from backups.restore import restore_journals
    from backups.restore_lock import locked_backup

    point_in_time = pitr.journals(ctx.install).load()
    if restore_journals(ctx.install).load() is None and point_in_time is None:
        return
    say = output.aside if as_json else output.info
    holder = locked_backup(ctx.install.repository)
    if holder is not None:
        say(f"a restore (of {escape(holder)}) is running")
        return
    needed = {"postgres", "redis"}
    stopped = [] if ctx.database_url else sorted(needed - set(ctx.running_services()))
    # A point-in-time restore starts postgres itself, and only once its volume is whole.
    if stopped and point_in_time is None:
        if not needed <= set(ctx.created_services()):
            output.warn(
                "a restore was interrupted; it is finished or undone once the stack runs: "
                "`orbisctl up` starts it and does it"
            )
            return
        # The interrupted restore may have stopped Redis to install its snapshot.
        ctx.install.compose().run("start", *stopped, timeout=120)
    finish_unfinished_restore(ctx, say=say)


def _kept_databases(ctx: BackupContext, *, drop_kept: str | None, yes: bool, as_json: bool) -> None:
    """`restore --list-kept` / `--drop-kept NAME|all`: the previous databases restores kept."""
    from backups import kept
    from backups.restore_lock import locked_backup

    executor = ctx.executor()
    if drop_kept is not None:
        holder = locked_backup(ctx.install.repository)
        if holder is not None:
            raise UserError(
                f"a restore (of {holder}) is running", hint="wait for it to finish, then retry"
            )
        dropped = kept.select(executor, drop_kept)  # refuses a name that is not one
        if dropped:
            _confirm(
                f"Drop {', '.join(dropped)} ({executor.describe()})?",
                yes=yes,
                doing="dropping a previous database deletes its data",
            )
            kept.drop(executor, dropped)
        if as_json:
            output.print_json({"dropped": dropped})
            return
        for name in dropped:
            output.info(f"dropped {escape(name)}")
        if not dropped:
            output.info("no previous databases kept by restores")
        return
    rows = kept.list_kept(executor)
    if as_json:
        output.print_json([row.as_json() for row in rows])
        return
    if not rows:
        output.info("no previous databases kept by restores")
        return
    table = Table(output.id_column("name"), "kept at (UTC)", "size")
    for row in rows:
        table.add_row(
            escape(row.name), row.kept_at.strftime("%Y-%m-%d %H:%M:%S"), format_size(row.size)
        )
    output.print_table(table)
    output.info(
        f"{len(rows)} kept, {format_size(sum(row.size for row in rows))} in all; restores keep the "
        f"newest {ctx.config.backup.keep_previous_databases} (backup.keep_previous_databases)"
    )


@restore_app.command("restore")
def restore_command(
    backup: Annotated[
        str | None,
        typer.Argument(help="Backup id (see `backup list`) or a path.", show_default=False),
    ] = None,
    directory: InstallDirOption = Path(),
    yes: YesOption = False,
    with_secrets: Annotated[
        bool, typer.Option("--with-secrets", help="Also restore orbis.yaml, secrets/ and tls/.")
    ] = False,
    passphrase_file: PassphraseFileOption = None,
    secrets_only: Annotated[
        bool,
        typer.Option(
            "--secrets-only",
            help="Only restore orbis.yaml, secrets/ and tls/ (a new host, before `up`).",
        ),
    ] = False,
    no_safety_backup: Annotated[
        bool,
        typer.Option("--no-safety-backup", help="Skip the backup of the current state first."),
    ] = False,
    list_kept: Annotated[
        bool,
        typer.Option(
            "--list-kept", help="List the previous databases restores kept (name, when, size)."
        ),
    ] = False,
    drop_kept: Annotated[
        str | None,
        typer.Option(
            "--drop-kept",
            metavar="NAME|all",
            help="Drop a previous database a restore kept, or all of them.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Finish a restore that was interrupted (or undo it)."),
    ] = False,
    abort: Annotated[
        bool,
        typer.Option(
            "--abort", help="Undo a restore that was interrupted before its database switch."
        ),
    ] = False,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time",
            metavar="'YYYY-MM-DD HH:MM:SS[+TZ]'",
            help="Restore the database to this moment from the archived WAL (UTC without a zone).",
            show_default=False,
        ),
    ] = None,
    to_latest: Annotated[
        bool,
        typer.Option(
            "--to-latest",
            help="Restore the database to the last archived WAL (api and gateway stop first).",
        ),
    ] = False,
    repo: Annotated[
        int,
        typer.Option(
            "--repo",
            min=1,
            help="The pgBackRest repository --to-time/--to-latest read: 1 local, 2 backup.remote.",
        ),
    ] = 1,
    database_url: DatabaseUrlOption = None,
    redis_url: RedisUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a backup; the current data keeps serving until all is ready to switch.

    The switch (database, Redis, with --with-secrets the files) stops api and gateway.

    For those seconds nginx answers 503 with Retry-After; calls reconnect after.

    An interrupted restore is finished or undone by `restore --resume`, `up` or `status`.

    The replaced database is kept as orbis_pre_restore_<time>, bounded by
    backup.keep_previous_databases.
    """
    from backups.catalog import resolve
    from backups.restore import restore_backup

    ctx = BackupContext(directory, database_url, redis_url)
    if resume or abort:
        if backup is not None or (resume and abort):
            raise UserError(
                "--resume and --abort go alone: no backup, not both",
                hint="orbisctl restore --resume; orbisctl restore --abort",
            )
        finished = finish_unfinished_restore(ctx, abort=abort)
        if as_json:
            output.print_json(finished.__dict__ if finished else None)
        elif finished is None:
            output.info("no unfinished restore")
        return
    if list_kept or drop_kept is not None:
        if backup is not None or (list_kept and drop_kept is not None):
            raise UserError(
                "--list-kept and --drop-kept go alone: no backup, not both",
                hint="orbisctl restore --list-kept; orbisctl restore --drop-kept NAME|all",
            )
        _kept_databases(ctx, drop_kept=drop_kept, yes=yes, as_json=as_json)
        return
    if to_time is not None or to_latest:
        if backup is not None or with_secrets or secrets_only or (to_time and to_latest):
            raise UserError(
                "--to-time and --to-latest restore the database from the archive: no backup, "
                "no --with-secrets or --secrets-only, not both",
                hint="orbisctl restore --to-time '2026-01-31 13:45:00'; orbisctl restore "
                "--to-latest",
            )
        _restore_to_time(
            ctx, to_time, repo=repo, yes=yes, safety_backup=not no_safety_backup, as_json=as_json
        )
        return
    if backup is None:
        raise UserError(
            "which backup? give its id (`orbisctl backup list`) or a path",
            hint="`orbisctl restore --list-kept` lists the previous databases restores kept",
        )
    path = resolve(ctx.install, backup)
    if secrets_only:
        _restore_secrets_only(ctx, path, yes=yes, passphrase_file=passphrase_file)
        return
    executor = ctx.executor()
    _confirm(f"Replace the data of {executor.describe()} with backup {path.name}?", yes=yes)
    with output.StepReporter() as progress:
        result = restore_backup(
            ctx.install,
            executor,
            ctx.ring(),
            path,
            app=ctx.app_control(),
            passphrase=_read_passphrase(passphrase_file),
            with_secrets=with_secrets,
            safety_backup=not no_safety_backup,
            keep_previous_databases=ctx.config.backup.keep_previous_databases,
            progress=progress,
        )
    if as_json:
        output.print_json(result.__dict__)
        return
    output.info(
        f"[green]restored {escape(result.backup_id)}[/] into {escape(result.database)}: "
        f"{sum(result.row_counts.values())} rows match the manifest"
    )
    if not ctx.database_url:  # the stack's api and gateway were stopped for the switch
        output.info(
            f"api and gateway were unavailable for {result.switch_seconds:.1f} s "
            "(nginx answered 503 with Retry-After meanwhile)"
        )
    if result.safety_backup:
        output.info(f"safety backup of the previous state: {escape(result.safety_backup)}")
    if result.previous_database and result.previous_database not in result.dropped_databases:
        output.info(
            f"previous database kept as {escape(result.previous_database)} "
            "(`orbisctl restore --drop-kept NAME` drops it once you are satisfied)"
        )
    for name in result.dropped_databases:
        output.info(
            f"dropped {escape(name)}: beyond backup.keep_previous_databases "
            f"({ctx.config.backup.keep_previous_databases})"
        )
    if result.restored_config:
        output.info("orbis.yaml, secrets/ and tls/ restored: run `orbisctl render` and `up`")


def _restore_to_time(
    ctx: BackupContext,
    to_time: str | None,
    *,
    repo: int,
    yes: bool,
    safety_backup: bool,
    as_json: bool,
) -> None:
    """`restore --to-time` / `--to-latest`: the stack's cluster from pgBackRest's archive."""
    from backups import pitr

    if ctx.database_url:
        raise UserError(
            "point-in-time restore works on the install's own stack, not on servers given by URL",
            hint="drop --database-url and --redis-url (and ORBIS_BACKUP_*_URL)",
        )
    if not ctx.archiving():
        raise UserError(
            "point-in-time restore needs continuous archiving, which is off for this install",
            hint="set backup.archive.enabled: true (target compose) in orbis.yaml, then "
            "`orbisctl render`, `orbisctl up` and `orbisctl backup create`",
        )
    target = pitr.parse_target(to_time) if to_time is not None else None
    executor = ctx.executor()
    moment = f"{target:%Y-%m-%d %H:%M:%S %Z}" if target else "the latest archived WAL"
    _confirm(
        f"Restore the database of {executor.describe()} to {moment}? What was written after "
        "it is kept only in the safety backup and the previous data directory.",
        yes=yes,
    )
    with output.StepReporter() as progress:
        result = pitr.restore_stack_to_time(
            ctx.install,
            executor,
            ctx.app_control(),
            ctx.ring(),
            target,
            repo=repo,
            safety_backup=safety_backup,
            keep_previous=ctx.config.backup.keep_previous_databases,
            progress=progress,
        )
    if as_json:
        output.print_json(result.__dict__)
        return
    output.info(
        f"[green]restored the database to {escape(moment)}[/]: the newest transaction "
        f"replayed is of {escape(result.recovered_to or 'unknown time')}; "
        f"{sum(result.row_counts.values())} rows in {len(result.row_counts)} tables"
    )
    output.info(
        f"api and gateway were unavailable for {result.switch_seconds:.1f} s "
        "(nginx answered 503 with Retry-After meanwhile)"
    )
    if result.safety_backup:
        output.info(f"safety backup of the previous state: {escape(result.safety_backup)}")
    output.info(
        f"previous data directory kept in the postgres volume as {escape(result.kept_as)} "
        f"(the newest {ctx.config.backup.keep_previous_databases} are kept)"
    )
    if result.full_backup:
        output.info(f"full base backup of the new timeline: {escape(result.full_backup)}")
    else:
        output.warn(
            f"the full base backup after the restore failed ({escape(result.full_backup_error)});"
            " run `orbisctl backup create`"
        )
