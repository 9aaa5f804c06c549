"""What the backup, restore and drill commands share: the options naming servers outside the
stack and the escrow passphrase file, and `BackupContext`, resolved once per command from
--dir and those options."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orbisctl.core.config import CONFIG_FILENAME, OrbisConfig, load_config
from orbisctl.core.errors import EngineError, UserError

if TYPE_CHECKING:
    from backups.executor import Executor
    from backups.keys import BackupKeyRing
    from backups.ports import AppControl


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


def read_passphrase(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
    if not lines or not lines[0]:
        raise UserError(f"the passphrase file {path} is empty")
    return lines[0]
