"""The one way the operator side runs a command in a service's container through Compose
(`Compose.exec_command` / `Compose.exec`); the Docker suite runs them against real stacks."""

from __future__ import annotations

from pathlib import Path

from orbisctl.core.engine import Compose


def test_exec_command_is_compose_exec_without_a_tty_in_the_project() -> None:
    compose = Compose(Path("/srv/orbis/compose.yaml"), "orbis-1234abcd")
    argv = compose.exec_command("postgres", ["pg_dump", "--username", "orbis"])
    assert argv[argv.index("compose") :] == [
        "compose",
        "--project-name", "orbis-1234abcd",
        "--project-directory", "/srv/orbis",
        "--file", "/srv/orbis/compose.yaml",
        "exec", "-T", "postgres", "pg_dump", "--username", "orbis",
    ]  # fmt: skip


def test_environment_is_passed_by_name_never_by_value() -> None:
    compose = Compose(Path("/srv/orbis/compose.yaml"), "orbis-1234abcd")
    argv = compose.exec_command("redis", ["redis-cli", "PING"], env_names=["REDISCLI_AUTH"])
    assert argv[argv.index("exec") :] == [
        "exec", "-T", "--env", "REDISCLI_AUTH", "redis", "redis-cli", "PING",
    ]  # fmt: skip
