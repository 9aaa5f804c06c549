"""`orbisctl up | down | status | logs | scale | doctor`: the running stack."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from orbisctl import output, preflight, swarm
from orbisctl import stack as core
from orbisctl.commands import restore
from orbisctl.commands.options import InstallDirOption, JsonOption, YesOption
from orbisctl.core.errors import CheckFailed, ExitCode, UserError
from orbisctl.core.install import open_install
from orbisctl.core.progress import Progress

app = typer.Typer()

TimeoutOption = Annotated[
    float,
    typer.Option("--timeout", min=10, help="Seconds to wait for every service to be healthy."),
]

_HEALTH_STYLE = {"healthy": "green", "unhealthy": "red", "starting": "yellow"}
_VERDICT_STYLE = {"pass": "green", "warn": "yellow", "fail": "red"}


def _uptime(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _status_table(rows: list[core.ServiceStatus], project: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("service", "state", "health", "uptime", "restarts"):
        table.add_column(column, no_wrap=True)
    table.add_column("image", no_wrap=True)
    for row in rows:
        health_style = _HEALTH_STYLE.get(row.health, "")
        state = row.state if row.state != "exited" else f"exited ({row.exit_code})"
        table.add_row(
            row.container.removeprefix(f"{project}-"),  # service-N: replicas stay apart
            state,
            f"[{health_style}]{row.health}[/]" if health_style else row.health,
            _uptime(row.uptime_seconds),
            str(row.restarts),
            escape(row.image.rsplit("/", 1)[-1]),
        )
    return table


def _health_details(progress: Progress) -> core.StatusCallback:
    """While services start: a detail line each time the count of ready containers or the
    list of those not ready changes (`4/7 ready; waiting for api, gateway`)."""
    last = ""

    def on_status(rows: list[core.ServiceStatus]) -> None:
        nonlocal last
        waiting = sorted({row.service for row in rows if not row.ready})
        ready = sum(row.ready for row in rows)
        line = f"{ready}/{len(rows)} containers ready"
        if waiting:
            line += f"; waiting for {', '.join(waiting)}"
        if line != last:
            last = line
            progress.detail(line)

    return on_status


def _print_problems(problems: list[preflight.Problem]) -> None:
    for problem in problems:
        output.error(problem.message, problem.hint or None)
    raise typer.Exit(int(max(p.exit_code for p in problems)))


@app.command()
def up(
    directory: InstallDirOption = Path(),
    timeout: TimeoutOption = core.DEFAULT_UP_TIMEOUT,
    build: Annotated[
        bool, typer.Option("--build", help="Rebuild images first (cached steps are skipped).")
    ] = False,
) -> None:
    """Check the host, build or load images, migrate, start, and wait until all is healthy."""
    install = open_install(directory)
    if swarm.is_swarm(install.config):
        from orbisctl.commands import swarmstack

        swarmstack.up(install, timeout=timeout)
        return
    restore.refuse_unfinished_switch(install.root)
    problems = preflight.run(
        install_root=install.root,
        secrets_dir=install.secrets_dir,
        compose=install.compose(),
        project=install.config.project_name,
        ports=[install.config.ports.http, install.config.ports.https],
        bind_address=install.config.ports.bind_address,
    )
    if problems:
        _print_problems(problems)
    project = install.config.project_name
    with output.StepReporter() as progress:
        result = core.up(
            install,
            timeout=timeout,
            build=build,
            progress=progress,
            on_status=_health_details(progress),
        )
    output.print_table(_status_table(result.statuses, project))
    restore.converge_restore(install.root)
    for line in result.refreshed:
        output.info(escape(line))
    output.info(f"[green]OrbisVoice is up[/] ({result.seconds:.0f} s)")
    for name, url in result.urls.items():
        output.info(f"  {name:<10} {url}")


@app.command()
def down(
    directory: InstallDirOption = Path(),
    volumes: Annotated[
        bool,
        typer.Option("--volumes", help="Also delete the data volumes (the database!)."),
    ] = False,
    yes: YesOption = False,
) -> None:
    """Stop and remove the containers; data volumes are kept unless --volumes."""
    install = open_install(directory)
    if volumes and not yes:
        if not sys.stdin.isatty():
            raise UserError(
                "--volumes deletes the database and Redis data and needs confirmation",
                hint="pass --yes to confirm without a prompt",
            )
        if not typer.confirm(
            f"Delete the data volumes of {install.config.project_name} (database, Redis)?"
        ):
            raise typer.Exit(int(ExitCode.FAILURE))
    if swarm.is_swarm(install.config):
        from orbisctl.commands import swarmstack

        swarmstack.down(install, volumes=volumes)
        return
    with output.StepReporter() as progress:
        progress.step("docker compose down" + (" --volumes" if volumes else ""))
        core.down(install, volumes=volumes)
    output.info("stopped" + (" and deleted the data volumes" if volumes else " (volumes kept)"))


@app.command()
def status(directory: InstallDirOption = Path(), as_json: JsonOption = False) -> None:
    """One row per container: state, health, uptime, restarts, image."""
    install = open_install(directory)
    if swarm.is_swarm(install.config):
        from orbisctl.commands import swarmstack

        swarmstack.status(install, as_json=as_json)
        return
    restore.converge_restore(install.root, as_json=as_json)
    rows = core.status(install)
    if as_json:
        output.print_json(
            {"project": install.config.project_name, "services": [r.as_json() for r in rows]}
        )
        return
    if not rows:
        output.info("the stack is not running (`orbisctl up` starts it)")
        return
    output.print_table(_status_table(rows, install.config.project_name))


@app.command()
def logs(
    services: Annotated[list[str] | None, typer.Argument(help="Only these services.")] = None,
    directory: InstallDirOption = Path(),
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", "-n", min=0, help="Last N lines per container.")
    ] = None,
) -> None:
    """Print the services' logs (all services unless named)."""
    install = open_install(directory)
    code = core.logs(install, services=services or [], follow=follow, tail=tail)
    if code not in (0, 130):
        raise typer.Exit(code)


@app.command()
def scale(
    spec: Annotated[str, typer.Argument(metavar="SERVICE=N", help="For example gateway=3.")],
    directory: InstallDirOption = Path(),
    timeout: TimeoutOption = core.DEFAULT_UP_TIMEOUT,
) -> None:
    """Run N replicas of a stateless service, then reload nginx so it routes to all of them."""
    service, replicas = core.parse_scale(spec)
    install = open_install(directory)
    with output.StepReporter() as progress:
        rows = core.scale(
            install,
            service,
            replicas,
            timeout=timeout,
            progress=progress,
            on_status=_health_details(progress),
        )
    output.print_table(_status_table(rows, install.config.project_name))
    output.info(f"{service}: {replicas} replica(s) healthy; nginx reloaded")
    if replicas != install.config.gateway.replicas and service == "gateway":
        output.info(
            f"[dim]`orbisctl up` goes back to gateway.replicas={install.config.gateway.replicas}"
            " from orbis.yaml: set it there to keep this[/]"
        )


@app.command()
def doctor(directory: InstallDirOption = Path(), as_json: JsonOption = False) -> None:
    """Check the engine, containers, nginx config, certificate, disk and secrets; say how to fix."""
    # Imported here: doctor's backup and drill checks load the backups engine, which
    # `orbisctl --help` and the other commands do not need.
    from orbisctl import doctor as doctor_core

    install = open_install(directory)
    results = doctor_core.run(install)
    failed = [c for c in results if c.verdict is doctor_core.Verdict.FAIL]
    if as_json:
        output.print_json({"checks": [c.as_json() for c in results], "ok": not failed})
    else:
        for check in results:
            style = _VERDICT_STYLE[check.verdict]
            output.console.print(
                f"[{style}]{check.verdict.value:>4}[/] {escape(check.name)}: {escape(check.detail)}"
            )
            if check.fix and check.verdict is not doctor_core.Verdict.PASS:
                output.console.print(f"      [dim]fix:[/] {escape(check.fix)}")
    if failed:
        raise CheckFailed(f"doctor found {len(failed)} failing check(s)")
