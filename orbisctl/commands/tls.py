"""`orbisctl tls renew | schedule`: the install's own server certificate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from backups import schedule
from orbisctl import output
from orbisctl import stack as core
from orbisctl.commands.options import InstallDirOption
from orbisctl.commands.schedules import schedule_command
from orbisctl.core.install import open_install

app = typer.Typer(help="Renew the install's server certificate, now or on a timer.")


@app.command("renew")
def renew_command(
    directory: InstallDirOption = Path(),
    force: Annotated[
        bool, typer.Option("--force", help="Renew even when it is not due yet.")
    ] = False,
) -> None:
    """Renew the server certificate when due and reload nginx (open calls stay up).

    Due: fewer than 30 days left, or issued for longer than 90 days (before this release).
    The new one is valid 90 days. `tls.mode: files` certificates, and any the install CA did
    not issue, are left alone.
    """
    install = open_install(directory)
    renewal, reloaded = core.renew_certificate(install, force=force)
    until = f"{renewal.expires:%Y-%m-%d %H:%M} UTC"
    if not renewal.renewed:
        output.info(f"tls/server.crt not renewed ({escape(renewal.reason)}): valid until {until}")
        return
    output.info(f"[green]renewed[/] tls/server.crt: valid until {until}")
    if reloaded:
        output.info(f"reloaded nginx ({reloaded} container(s)): it serves the new certificate")
    else:
        output.info("nginx is not running: it reads the new certificate when it starts")


app.command("schedule")(
    schedule_command(
        schedule.TLS_JOB,
        lambda config: config.tls.renew_schedule,
        "Run `tls renew` at tls.renew_schedule (daily by default; systemd timer, else cron).",
    )
)
