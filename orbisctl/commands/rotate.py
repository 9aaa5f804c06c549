"""`orbisctl rotate-keys`: rotate the install's secrets without downtime; `status` shows ages."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from orbisctl import output
from orbisctl.commands.options import InstallDirOption, JsonOption
from orbisctl.core import engine
from orbisctl.core.config import CONFIG_FILENAME, load_config
from orbisctl.core.errors import EngineError, InstallDirError, UserError
from orbisctl.core.install import open_install
from orbisctl.rotation import compose as compose_ports
from orbisctl.rotation import core
from orbisctl.rotation.journal import JournalStore
from orbisctl.rotation.steps import RotationContext
from orbisctl.rotation.strategies import SecretKind, jwt_keys_due

app = typer.Typer(
    name="rotate-keys",
    help="Rotate secrets with no downtime; `rotate-keys status` shows their ages.",
    invoke_without_command=True,
    no_args_is_help=False,
)


# Kinds whose rotation restarts no service (the backup engine reads its key per run).
_HOST_ONLY = {SecretKind.BACKUP_KEY.value}
_CONNECT_STEP = "find the running stack"


def _context(install_dir: Path) -> RotationContext:
    """A context that can plan, report and rotate host-only secrets (no engine needed)."""
    root = install_dir.resolve()
    return core.install_context(root, load_config(root / CONFIG_FILENAME))


def _host_only_audit(rotation: RotationContext) -> core.AuditSink | None:
    """The API's audit log for a rotation that needs no stack: used when the stack runs,
    else the rotation is recorded in rotation/history.jsonl only."""
    try:
        roller = compose_ports.ComposeRoller(open_install(rotation.install_dir), engine.connect())
        return compose_ports.ExecApiAudit(roller) if roller.running("api") else None
    except (EngineError, InstallDirError):
        return None


def _connect_stack(rotation: RotationContext, kinds: list[str]) -> core.AuditSink | None:
    """Attach the running Compose stack to `rotation` when `kinds` need services restarted
    or data stores administered; refuse rotations the rendered stack cannot follow.
    Returns where the rotation's audit entries go besides rotation/history.jsonl."""
    if set(kinds) <= _HOST_ONLY:
        return _host_only_audit(rotation)
    install = open_install(rotation.install_dir)
    problems = compose_ports.unsupported(install.compose().config(), kinds)
    if problems:
        raise InstallDirError(
            "this stack cannot be rotated without breaking a service: " + "; ".join(problems),
            hint="upgrade and re-render (`orbisctl render`, `orbisctl up`), then rotate",
        )
    roller = compose_ports.ComposeRoller(install, engine.connect())
    if not roller.running("api"):
        raise EngineError("the stack is not running", hint="run `orbisctl up` first")
    rotation.roller = roller
    rotation.postgres = compose_ports.ExecPostgresAdmin(roller)
    rotation.redis = compose_ports.ExecRedisAdmin(roller)
    rotation.gemini = compose_ports.ExecGeminiProbe(roller)
    return compose_ports.ExecApiAudit(roller)


@app.callback()
def rotate_keys(
    ctx: typer.Context,
    install_dir: InstallDirOption = Path(),
    jwt: Annotated[
        bool, typer.Option("--jwt", help="JWT signing key (old kept verify-only).")
    ] = False,
    db_password: Annotated[
        bool, typer.Option("--db-password", help="PostgreSQL login (alternating roles).")
    ] = False,
    redis_password: Annotated[
        bool, typer.Option("--redis-password", help="Redis ACL password.")
    ] = False,
    internal_token: Annotated[
        bool, typer.Option("--internal-token", help="gateway → api service token.")
    ] = False,
    backup_key: Annotated[
        bool, typer.Option("--backup-key", help="Backup key (old kept in the ring).")
    ] = False,
    gemini_key_file: Annotated[
        Path | None,
        typer.Option(
            "--gemini-key-file",
            help="File holding the new Gemini key (with the emulator, omit to generate one "
            "under --all).",
            show_default=False,
        ),
    ] = None,
    all_secrets: Annotated[bool, typer.Option("--all", help="Every secret.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish an interrupted rotation (or due key drops).")
    ] = False,
    abort: Annotated[
        bool, typer.Option("--abort", help="Roll an interrupted rotation back.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    if ctx.invoked_subcommand is not None:
        ctx.obj = install_dir  # `rotate-keys --dir X status` means X
        return
    chosen = [
        kind
        for kind, wanted in (
            (SecretKind.JWT, jwt),
            (SecretKind.POSTGRES_PASSWORD, db_password),
            (SecretKind.REDIS_PASSWORD, redis_password),
            (SecretKind.INTERNAL_TOKEN, internal_token),
            (SecretKind.BACKUP_KEY, backup_key),
        )
        if wanted
    ]
    selecting = bool(chosen or all_secrets or gemini_key_file)
    if resume and abort:
        raise UserError("--resume and --abort exclude each other")
    if (resume or abort) and (selecting or dry_run):
        raise UserError(
            "--resume/--abort continue the rotation in progress; they take no secret choice",
            hint="run them alone; `orbisctl rotate-keys status` shows what is in progress",
        )
    rotation = _context(install_dir)
    if resume or abort:
        journal = JournalStore.of_install(rotation.install_dir).load()
        due = [SecretKind.JWT_RETIRE.value] if jwt_keys_due(rotation) else []
        with output.StepReporter() as progress:
            progress.step(_CONNECT_STEP)
            audit = _connect_stack(rotation, journal.kinds if journal else due)
            finish = core.abort if abort else core.resume
            outcome = finish(rotation, audit=audit, on_step=progress.step)
        _print_outcome(outcome, json_output)
        return
    kinds = core.choose_kinds(
        rotation, chosen, all_secrets=all_secrets, gemini_key_file=gemini_key_file
    )
    if dry_run:
        _print_plan(core.plan(rotation, kinds, gemini_key_file=gemini_key_file), json_output)
        return
    with output.StepReporter() as progress:
        progress.step(_CONNECT_STEP)
        audit = _connect_stack(rotation, [kind.value for kind in kinds])
        outcome = core.rotate(
            rotation, kinds, gemini_key_file=gemini_key_file, audit=audit, on_step=progress.step
        )
    _print_outcome(outcome, json_output)


def _print_plan(steps: list[core.PlannedStep], json_output: bool) -> None:
    if json_output:
        output.print_json({"plan": [asdict(step) for step in steps]})
        return
    table = Table("secret", "step", "what happens", title="rotation plan (nothing changed)")
    for step in steps:
        table.add_row(step.kind, step.name, escape(step.summary))
    output.console.print(table)


def _print_outcome(outcome: core.Outcome, json_output: bool) -> None:
    if json_output:
        output.print_json(asdict(outcome))
        return
    output.info(
        f"rotation {outcome.rotation_id} {outcome.result}: {', '.join(outcome.kinds)} "
        f"({outcome.steps_run} steps)"
    )


@app.command("status")
def status_command(
    ctx: typer.Context,
    install_dir: Annotated[
        Path | None,
        typer.Option(
            "--dir", "-d", envvar="ORBIS_DIR", help="The install directory.", show_default=False
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Each secret's age against rotation.max_age_days, its last rotation, pending key drops."""
    report = core.status(_context(install_dir or ctx.obj or Path()))
    if json_output:
        data: dict[str, Any] = asdict(report)
        data["in_progress"] = (
            None
            if report.in_progress is None
            else {
                "id": report.in_progress.id,
                "kinds": report.in_progress.kinds,
                "mode": report.in_progress.mode,
                "steps_done": sum(s.status == "done" for s in report.in_progress.steps),
                "steps": len(report.in_progress.steps),
            }
        )
        output.print_json(data)
        return
    table = Table("secret", "file", "last rotated", "age (days)", "max", "state")
    for row in report.secrets:
        state = (
            "[red]missing[/]"
            if not row.present
            else "[red]overdue[/]"
            if row.overdue
            else "[green]ok[/]"
        )
        table.add_row(
            row.kind,
            row.file,
            row.last_rotated or "never",
            "-" if row.age_days is None else str(row.age_days),
            str(row.max_age_days),
            state,
        )
    output.console.print(table)
    for drop in report.jwt_drops:
        when = "due now: `orbisctl rotate-keys --resume` drops it" if drop.due else drop.due_at
        output.info(f"JWT key {drop.kid} is verify-only; drop {when}")
    if report.in_progress is not None:
        done = sum(step.status == "done" for step in report.in_progress.steps)
        output.warn(
            f"rotation {report.in_progress.id} ({', '.join(report.in_progress.kinds)}) is "
            f"unfinished at step {done}/{len(report.in_progress.steps)}; "
            "run `orbisctl rotate-keys --resume` or `--abort`"
        )
