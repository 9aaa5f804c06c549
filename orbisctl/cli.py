"""The `orbisctl` command: mounts one typer sub-app per verb group (imported when it runs)
and shows errors.

Errors from core code (`OrbisError`) are shown here and only here: one red line per
problem, an optional hint, and the error's exit code. Nothing else prints tracebacks for
user errors.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from orbisctl import __version__, output
from orbisctl.core.errors import USER_ERRNOS, ConfigError, ExitCode, OrbisError, storage_error


@dataclass(frozen=True)
class Verb:
    """Where a top-level command lives: `app` (a typer.Typer) in `orbisctl.commands.<module>`,
    mounted whole as a group (`orbisctl backup create`) or as its command of this name
    (`orbisctl init`). `help` is the line `orbisctl --help` lists without importing it."""

    module: str
    help: str
    whole_app: bool = True


# The top-level commands in the order `orbisctl --help` lists them. Each command module (and
# what it imports: docker, the engines) is imported only when its command runs or shows its
# own help, so `orbisctl --help` starts in a fraction of the time (docs/benchmarks.md).
VERBS = {
    "init": Verb(
        "install",
        "Create the install directory: orbis.yaml, secrets, certificates, rendered files.",
        whole_app=False,
    ),
    "render": Verb(
        "install",
        "Re-render compose.yaml and the nginx config from orbis.yaml (byte-identical on repeat).",
        whole_app=False,
    ),
    "backup": Verb("backup", "Take, list, verify, prune and schedule backups."),
    "restore": Verb(
        "restore",
        "Restore a backup; the current data keeps serving until all is ready to switch.",
        whole_app=False,
    ),
    "drill": Verb(
        "drill", "Recovery drills: restore a backup into a scratch stack and prove it serves."
    ),
    "up": Verb(
        "stack",
        "Check the host, build or load images, migrate, start, and wait until all is healthy.",
        whole_app=False,
    ),
    "down": Verb(
        "stack",
        "Stop and remove the containers; data volumes are kept unless --volumes.",
        whole_app=False,
    ),
    "status": Verb(
        "stack", "One row per container: state, health, uptime, restarts, image.", whole_app=False
    ),
    "logs": Verb("stack", "Print the services' logs (all services unless named).", whole_app=False),
    "scale": Verb(
        "stack",
        "Run N replicas of a stateless service, then reload nginx so it routes to all of them.",
        whole_app=False,
    ),
    "doctor": Verb(
        "stack",
        "Check the engine, containers, nginx config, certificate, disk and secrets; "
        "say how to fix.",
        whole_app=False,
    ),
    "version": Verb(
        "version",
        "Versions of this orbisctl, each service's image and digest, the schema and PostgreSQL.",
        whole_app=False,
    ),
    "images": Verb("images", "Build the stack's images, or save/load them for air-gapped hosts."),
    "rotate-keys": Verb(
        "rotate", "Rotate secrets with no downtime; `rotate-keys status` shows their ages."
    ),
    "upgrade": Verb(
        "upgrade",
        "Upgrade to this checkout's release: checked, backed up, rolled, rolled back on failure.",
        whole_app=False,
    ),
    "tls": Verb("tls", "Renew the install's server certificate, now or on a timer."),
}


class DeferredCommand(TyperCommand):
    """A top-level command listed by its name and help line; `load` imports the real one."""

    def __init__(self, name: str, verb: Verb) -> None:
        super().__init__(name=name, help=verb.help)
        self.verb_name = name
        self.verb = verb

    # Any: the loaded command is a click.Command of typer's private vendored click.
    def load(self) -> Any:
        module = importlib.import_module(f"orbisctl.commands.{self.verb.module}")
        group = typer.main.get_group(module.app)
        return group if self.verb.whole_app else group.commands[self.verb_name]


class OrbisGroup(TyperGroup):
    """Root command group that turns OrbisErrors into one-line messages and exit codes, and
    imports a command's module only when that command is the one run."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, verb in VERBS.items():
            self.add_command(DeferredCommand(name, verb))

    # ctx is typed Any: typer vendors its own click, whose Context type is private.
    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, DeferredCommand):
            command = command.load()
        return name, command, rest

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            if exc.problems:
                source = (
                    exc.source if exc.source is not None else exc.message.split(" is invalid", 1)[0]
                )
                for problem in exc.problems:
                    output.error(f"{source}: {problem}" if source else problem)
                if exc.hint:
                    output.err_console.print(f"  [dim]hint:[/] {exc.hint}", markup=True)
            else:
                output.error(exc.message, exc.hint)
            raise typer.Exit(int(exc.exit_code)) from None
        except OrbisError as exc:
            output.error(exc.message, exc.hint)
            raise typer.Exit(int(exc.exit_code)) from None
        except OSError as exc:
            # A full, read-only or forbidden file system that core code did not name more
            # precisely: still one line with the path. Any other OSError is a bug: traceback.
            if exc.errno not in USER_ERRNOS:
                raise
            shown = storage_error(exc)
            output.error(shown.message, shown.hint)
            raise typer.Exit(int(shown.exit_code)) from None
        except KeyboardInterrupt:
            output.error("interrupted")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


app = typer.Typer(
    cls=OrbisGroup,
    name="orbisctl",
    help="Operate an OrbisVoice appliance: init, up, backup, restore, drill, rotate keys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        output.console.print(f"orbisctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print debug logs.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    output.setup_logging(quiet=quiet, verbose=verbose)


def main() -> None:
    app()
