"""The `orbisctl` command: mounts one typer sub-app per verb group and shows errors.

Errors from core code (`OrbisError`) are shown here and only here: one red line per
problem, an optional hint, and the error's exit code. Nothing else prints tracebacks for
user errors.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from orbisctl import __version__, output
from orbisctl.core.errors import USER_ERRNOS, ConfigError, ExitCode, OrbisError, storage_error


class OrbisGroup(TyperGroup):
    """Root command group that turns OrbisErrors into one-line messages and exit codes."""

    # ctx is typed Any: typer vendors its own click, whose Context type is private.
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


def _mount() -> None:
    """Mount the verb groups. Each module exposes `app` (a typer.Typer).

    Groups mounted without a name add their commands at the top level (`orbisctl init`).
    """
    # One import and one add_typer line per verb group.
    from orbisctl.commands import backup, drill, images, install, rotate, stack, tls

    app.add_typer(install.app)
    app.add_typer(backup.app, name="backup")
    app.add_typer(backup.restore_app)
    app.add_typer(drill.app, name="drill")
    app.add_typer(stack.app)
    app.add_typer(images.app, name="images")
    app.add_typer(rotate.app, name="rotate-keys")
    app.add_typer(tls.app, name="tls")


_mount()


def main() -> None:
    app()
