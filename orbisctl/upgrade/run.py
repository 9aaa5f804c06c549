"""`orbisctl upgrade`: plan, preflight, apply, roll back; the command prints what these return.

An upgrade moves an install from the release its orbis.yaml names (`images.tag`) to this
checkout's. Forward, in order, each step journaled:

    backup    a pre-upgrade backup (the way back for the database, should it be needed)
    images    the new release's images built next to the old ones; nothing stops
    config    orbis.yaml's images.tag moved (the old file kept); the stack re-rendered
    migrate   the new migrations, while the old release serves (they only expand)
    api       api replaced one replica at a time (a new one healthy before an old one goes)
    gateway   the same for the gateway; each old replica hands its calls over as it drains
    services  the other services whose definition changed recreated, one at a time
    gate      every replica healthy on the new images, the schema the new one; then, from
              inside the stack, api and gateway ready and a tenant's login, agent read and
              call through the model (the gate's own probe tenant: upgrade/gate.py)

Any failure rolls back by itself: orbis.yaml back, the database restored from the pre-upgrade
backup only if the migrations stopped half-way (each runs in its own transaction, so the
first one failing leaves nothing to undo), nginx, api and gateway rolled back, the gate
again. postgres and redis stay on the new release's images (`images.data_tag`): this
orbisctl renders their files, which need what those images carry (pgBackRest). Migrations that all ran stay: the old release serves on the expanded schema,
and the new release's image stays the one that runs the migrate job (`images.migrate_tag`),
since an older migrator refuses a schema newer than it knows. A killed upgrade is continued
by `upgrade --resume` in the direction it was going; `--rollback` turns it back.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from backups.executor import ComposeExecutor
from backups.restore import restore_journals
from backups.schema import code_schema_version
from orbisctl import __version__, nginx, releases, stack
from orbisctl.core import engine
from orbisctl.core.config import OrbisConfig, dump_config, load_config, parse_config
from orbisctl.core.errors import InstallDirError, OrbisError, UserError
from orbisctl.core.fsutil import atomic_write
from orbisctl.core.install import Install, open_install
from orbisctl.core.progress import NO_PROGRESS, Progress
from orbisctl.images import build_all, missing_images
from orbisctl.installer import complete_archive_secrets, render_install
from orbisctl.render import image_refs
from orbisctl.rotation.compose import ComposeRoller
from orbisctl.rotation.core import actor
from orbisctl.rotation.journal import JournalStore, StepRecord, iso
from orbisctl.upgrade import gate
from orbisctl.upgrade.journal import (
    Mode,
    Outcome,
    StepTiming,
    UpgradeJournal,
    UpgradeRecord,
    UpgradeStore,
)
from orbisctl.versions import database_version

ROLLED = ("api", "gateway")
# Recreated before the rolls: they reload it to route to new replicas.
EDGE_SERVICE = "nginx"
EDGE_STOP_SECONDS = 2
MIGRATE_SERVICE = "migrate"
MIGRATE_TIMEOUT_SECONDS = 1800.0
# What a build of new images and a pre-upgrade backup need beside the running install.
MIN_FREE_BYTES = 2 * 1024**3

FORWARD_STEPS: tuple[tuple[str, str], ...] = (
    ("backup", "a pre-upgrade backup"),
    ("images", "the {to} images built beside the {frm} ones (nothing stops)"),
    ("config", "orbis.yaml: images.tag {frm} → {to} (the old file kept), render"),
    ("migrate", "{to}'s migrations while {frm} serves"),
    ("edge", "nginx recreated on {to}'s image and files (open connections restart)"),
    ("api", "api replaced one replica at a time"),
    ("gateway", "gateway replaced one replica at a time (calls handed over)"),
    ("services", "postgres, redis and the others recreated one at a time where they changed"),
    ("gate", "health gate: every replica on {to}, the schema, a login, an agent read, a call"),
)
ROLLBACK_STEPS: tuple[tuple[str, str], ...] = (
    ("config", "orbis.yaml back to images.tag {frm}, render"),
    ("database", "the pre-upgrade backup restored if {to}'s migrations stopped half-way"),
    ("edge", "nginx back on {frm}'s image"),
    ("api", "api back on {frm}, one replica at a time"),
    ("gateway", "gateway back on {frm}, one replica at a time (calls handed over)"),
    ("services", "postgres and redis kept on {to}'s images (images.data_tag), the others back"),
    ("gate", "health gate: every replica on {frm}, a login, an agent read, a call"),
)


class UpgradeFailed(OrbisError):
    pass


@dataclass(frozen=True)
class PlannedStep:
    name: str
    summary: str


@dataclass(frozen=True)
class Plan:
    from_version: str
    to_version: str
    steps: list[PlannedStep]
    # Every reason the upgrade cannot start now, found at once.
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _planned(template: tuple[tuple[str, str], ...], frm: str, to: str) -> list[PlannedStep]:
    return [PlannedStep(name, text.format(frm=frm, to=to)) for name, text in template]


@dataclass(frozen=True)
class BackupPort:
    """What the upgrade needs of the backup engine, wired by the command: take a backup
    (label → id) and restore one's database (id → None)."""

    take: Callable[[str], str]
    restore_database: Callable[[str], None]


def preflight_problems(install: Install, client: docker.DockerClient | None) -> list[str]:
    """What stops an upgrade of this install now, besides the version path."""
    problems = []
    if client is None:
        problems.append("no Docker engine answers: start it (`systemctl start docker`)")
    elif not ComposeRoller(install, client).running("api"):
        problems.append("the stack is not running: `orbisctl up` first (upgrade rolls a live one)")
    if JournalStore.of_install(install.root).journal_path.is_file():
        problems.append(
            "a key rotation is unfinished: `orbisctl rotate-keys --resume` (or --abort) first"
        )
    if restore_journals(install).journal_path.is_file():
        problems.append("a restore is unfinished: `orbisctl restore --resume` (or --abort) first")
    free = shutil.disk_usage(install.root).free
    if free < MIN_FREE_BYTES:
        problems.append(
            f"{free // 1024**2} MiB free under {install.root}; an upgrade needs "
            f"{MIN_FREE_BYTES // 1024**3} GiB for its backup and images: free some space"
        )
    return problems


def plan(install: Install, client: docker.DockerClient | None) -> Plan:
    """The steps an upgrade to this checkout's release would run, and what stops it."""
    frm, to = install.config.images.tag, __version__
    problems = releases.path_problems(frm, to) if frm != to else []
    notes = []
    if frm == to:
        notes.append(f"the install already runs {to}: nothing to upgrade")
    problems += preflight_problems(install, client)
    return Plan(frm, to, _planned(FORWARD_STEPS, frm, to) if frm != to else [], problems, notes)


def _now() -> str:
    return iso(datetime.now(UTC))


@dataclass
class Upgrader:
    """Runs one journal's steps against the live stack."""

    install_dir: Path
    store: UpgradeStore
    journal: UpgradeJournal
    backups: BackupPort
    progress: Progress = NO_PROGRESS
    client: docker.DockerClient = field(default_factory=engine.connect)

    # --- the install as it is on disk now (steps change orbis.yaml) ---------------------------

    @property
    def install(self) -> Install:
        return open_install(self.install_dir)

    def _save(self) -> None:
        self.store.save(self.journal)

    def _runtime_image_id(self) -> str:
        """The id of the image api and gateway should run now (orbis.yaml's images.tag)."""
        ref = image_refs(self.install.config).runtime
        try:
            return str(self.client.images.get(ref).id)
        except docker.errors.ImageNotFound:
            raise UpgradeFailed(
                f"the image {ref} is not on this engine", hint="`orbisctl images build`"
            ) from None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise engine.api_error(f"inspecting {ref}", exc) from None

    def _schema(self) -> int | None:
        install = self.install
        return database_version(ComposeExecutor(install.compose(), install.secrets_dir)).schema

    # --- steps ----------------------------------------------------------------------------------

    def step_backup(self) -> None:
        label = f"before upgrade {self.journal.from_version} → {self.journal.to_version}"
        self.journal.facts["backup"] = self.backups.take(label)
        schema = self._schema()
        self.journal.facts["schema_before"] = "" if schema is None else str(schema)

    def step_images(self) -> None:
        target = _with_tag(self.install.config, self.journal.to_version, migrate_tag=None)
        missing = missing_images(self.client, image_refs(target))
        if missing:
            build_all(target, progress=self.progress)

    def step_config(self) -> None:
        install = self.install
        if self.journal.mode == "upgrade":
            current = install.config_file.read_bytes()
            if not self.store.previous_config.is_file() or install.config.images.tag != (
                self.journal.to_version
            ):
                self.store.keep_previous_config(current)
            target = _with_tag(install.config, self.journal.to_version, migrate_tag=None)
        else:
            previous = load_config(self.store.previous_config)
            migrated = self.journal.forward_done("migrate")
            target = _with_tag(
                previous,
                self.journal.from_version,
                migrate_tag=self.journal.to_version if migrated else None,
                data_tag=self.journal.to_version,
            )
            self._check_images_kept(target)
        atomic_write(install.config_file, dump_config(target).encode())
        render_install(install.root, check=False)
        # A release from before continuous archiving gets its pgBackRest secrets, as `up`
        # gives them.
        for created in complete_archive_secrets(install.root):
            self.progress.note(f"created {created} (continuous archiving)")

    def _check_images_kept(self, config: OrbisConfig) -> None:
        refs = image_refs(config)
        gone = missing_images(self.client, refs)
        if gone:
            # Building them here would build this checkout's code under the old tag.
            raise UpgradeFailed(
                f"the images of {config.images.tag} are no longer on this engine: "
                f"{', '.join(gone)}",
                hint=f"`orbisctl images load` the {config.images.tag} release bundle, then "
                "`orbisctl upgrade --resume`",
            )

    def step_migrate(self) -> None:
        compose = self.install.compose()
        try:
            compose.run(
                "run", "--rm", "--no-deps", "-T", MIGRATE_SERVICE, timeout=MIGRATE_TIMEOUT_SECONDS
            )
        finally:
            # Saved with the step's end, or with the rollback it turns into.
            schema = self._schema()
            self.journal.facts["schema_after"] = "" if schema is None else str(schema)

    def step_database(self) -> None:
        """Rollback only: a migration run that stopped half-way leaves a schema neither release's
        migrator accepts; the pre-upgrade backup's database replaces it."""
        if self.journal.forward_done("migrate"):
            return
        before = self.journal.facts.get("schema_before", "")
        schema = self._schema()
        if schema is None or str(schema) == before:
            return
        backup = self.journal.facts.get("backup")
        if not backup:
            raise UpgradeFailed(
                f"the schema moved from {before or 'none'} to {schema} and no pre-upgrade "
                "backup was recorded",
                hint="restore the newest backup taken before the upgrade: `orbisctl restore ID`",
            )
        self.progress.note(
            f"the migrations stopped half-way (schema {before} → {schema}): restoring the "
            f"pre-upgrade backup {backup}"
        )
        self.backups.restore_database(backup)
        self.journal.facts["database_restored"] = backup

    def _roll(self, service: str) -> None:
        roller = ComposeRoller(self.install, self.client)
        wanted = self._runtime_image_id()
        # Counted before the first surge and kept: a run killed mid-roll leaves one replica
        # more, which the resumed roll must not count as the service's size.
        size = f"replicas_{service}"
        if size not in self.journal.facts:
            self.journal.facts[size] = str(len(roller.running(service)))
            self._save()
        roller.roll(
            service,
            outdated=lambda container: container.attrs.get("Image") != wanted,
            replicas=int(self.journal.facts[size]),
        )

    def step_api(self) -> None:
        self._roll("api")

    def step_gateway(self) -> None:
        self._roll("gateway")

    def step_edge(self) -> None:
        """nginx first, so the rolls reload an nginx that reads this release's files (an old
        nginx container keeps the files it was started with: they are bind mounts)."""
        # Compose stops the old nginx gracefully: it stops listening at once but waits for its
        # open connections (the calls' WebSockets) to close; nothing answers meanwhile.
        self.install.compose().run(
            "up", "--detach", "--no-deps", "--wait", "--timeout", str(EDGE_STOP_SECONDS),
            EDGE_SERVICE, timeout=300,
        )  # fmt: skip
        nginx.reload_nginx(self.install, self.client)

    def step_services(self) -> None:
        install = self.install
        compose = install.compose()
        model = stack.compose_model(compose)
        for service in model.long_running:
            if service in ROLLED or service == EDGE_SERVICE:
                continue
            if service == stack.POSTGRES_SERVICE:
                # Its login roles and, from a release before continuous archiving on, the
                # pgBackRest stanza, as `up` has them.
                stack.start_postgres(install, self.client, timeout=300, progress=self.progress)
                continue
            # Compose recreates a container only when its definition (its image) changed.
            compose.run("up", "--detach", "--no-deps", "--wait", service, timeout=300)
        nginx.reload_nginx(install, self.client)

    def step_gate(self) -> None:
        install = self.install
        stack.wait_healthy(
            install, stack.compose_model(install.compose()), timeout=300, client=self.client
        )
        roller = ComposeRoller(install, self.client)
        wanted = self._runtime_image_id()
        for service in ROLLED:
            stale = [c.name for c in roller.running(service) if c.attrs.get("Image") != wanted]
            if stale:
                raise UpgradeFailed(f"{', '.join(stale)} still run an image of another release")
        schema = self._schema()
        if self.journal.mode == "upgrade" and schema != code_schema_version():
            raise UpgradeFailed(
                f"the database's schema is {schema}, {self.journal.to_version} needs "
                f"{code_schema_version()}"
            )
        checks = gate.tenant_checks(install)
        self.journal.facts["gate"] = ", ".join(check["name"] for check in checks if check["ok"])
        failed = [f"{check['name']}: {check['detail']}" for check in checks if not check["ok"]]
        if failed or not checks:
            raise UpgradeFailed(f"the health gate failed: {'; '.join(failed) or 'no checks ran'}")

    def action(self, name: str) -> Callable[[], None]:
        found: Callable[[], None] = getattr(self, f"step_{name}")
        return found

    # --- running a journal ----------------------------------------------------------------------

    def run(self) -> None:
        """Run every step not done yet, in the journal's direction."""
        for record in self.journal.steps:
            if record.status == "done":
                continue
            self.progress.step(_summary(self.journal, record.name))
            record.status, record.at = "started", _now()
            self._save()
            started, began = time.time(), time.monotonic()
            self.action(record.name)()
            record.status, record.at = "done", _now()
            self.journal.timings.append(
                StepTiming(record.kind, record.name, started, round(time.monotonic() - began, 2))
            )
            self._save()

    def turn_back(self, reason: str, *, requested: bool = False) -> None:
        """Switch the journal to a rollback (keeping what the forward steps recorded)."""
        if requested:
            self.journal.facts["requested"] = "yes"
        if self.journal.mode == "upgrade":
            steps = self.journal.steps
            done = [record.name for record in steps if record.status == "done"]
            begun = [record.name for record in steps if record.status != "pending"]
            self.journal.facts["forward_done"] = ",".join(done)
            self.journal.facts["forward_begun"] = ",".join(begun)
        self.journal.facts["failure"] = reason
        self.journal.mode = "rollback"
        # Before orbis.yaml moved, nothing serving has changed: there is nothing to undo (the
        # backup and the new images are kept).
        changed = self.journal.forward_begun("config")
        self.journal.steps = [StepRecord("rollback", name) for name, _ in ROLLBACK_STEPS if changed]
        self._save()


def _summary(journal: UpgradeJournal, name: str) -> str:
    template = dict(FORWARD_STEPS if journal.mode == "upgrade" else ROLLBACK_STEPS)[name]
    return template.format(frm=journal.from_version, to=journal.to_version)


def _with_tag(
    config: OrbisConfig, tag: str, *, migrate_tag: str | None, data_tag: str | None = None
) -> OrbisConfig:
    """`config` with its images moved to `tag`, validated as `load_config` will read it back."""
    data = config.model_dump(mode="json")
    data["images"].update(tag=tag, migrate_tag=migrate_tag, data_tag=data_tag)
    return parse_config(data)


@dataclass(frozen=True)
class Finished:
    record: UpgradeRecord
    facts: dict[str, str]


def _finish(store: UpgradeStore, journal: UpgradeJournal, detail: str = "") -> Finished:
    outcome: Outcome = "upgraded" if journal.mode == "upgrade" else "rolled back"
    record = UpgradeRecord(
        journal.id,
        journal.actor,
        journal.from_version,
        journal.to_version,
        journal.started_at,
        _now(),
        outcome,
        detail or journal.facts.get("failure", ""),
        list(journal.timings),
    )
    store.append_history(record)
    store.remove()
    return Finished(record, dict(journal.facts))


def _drive(upgrader: Upgrader) -> Finished:
    """Run the journal; a forward failure turns into a rollback, run at once."""
    journal = upgrader.journal
    try:
        upgrader.run()
    except (OrbisError, OSError) as exc:
        message = exc.message if isinstance(exc, OrbisError) else str(exc)
        if journal.mode == "rollback":
            raise UpgradeFailed(
                f"the rollback to {journal.from_version} stopped: {message}",
                hint="fix the cause, then `orbisctl upgrade --resume` continues the rollback",
            ) from None
        failed = next((r.name for r in journal.steps if r.status == "started"), "?")
        upgrader.progress.note(f"upgrade step {failed} failed: {message}; rolling back")
        upgrader.turn_back(f"step {failed}: {message}")
        return _drive(upgrader)
    return _finish(upgrader.store, journal)


def _new_journal(
    frm: str, to: str, *, steps: list[StepRecord], mode: Mode = "upgrade", **facts: str
) -> UpgradeJournal:
    return UpgradeJournal(uuid.uuid4().hex[:12], actor(), _now(), frm, to, steps, mode, dict(facts))


def start(install: Install, backups: BackupPort, *, progress: Progress = NO_PROGRESS) -> Finished:
    """Upgrade the install to this checkout's release; on failure, roll back by itself."""
    store = UpgradeStore.of_install(install.root)
    with store.lock():
        if store.load() is not None:
            raise UserError(
                "an upgrade is unfinished on this install",
                hint="`orbisctl upgrade --resume` continues it; `--rollback` turns it back",
            )
        client = engine.connect()
        found = plan(install, client)
        if found.problems:
            raise UserError(
                "the upgrade cannot start: " + "; ".join(found.problems),
                hint="fix each of these, then run `orbisctl upgrade` again",
            )
        if not found.steps:
            raise UserError(found.notes[0], hint="`orbisctl version` shows what runs")
        journal = _new_journal(
            found.from_version,
            found.to_version,
            steps=[StepRecord("upgrade", step.name) for step in found.steps],
        )
        store.save(journal)
        return _drive(Upgrader(install.root, store, journal, backups, progress, client))


def resume(
    install_dir: Path, backups: BackupPort, *, mode: Mode | None, progress: Progress = NO_PROGRESS
) -> Finished:
    """Continue an unfinished upgrade (mode None), or turn it back (mode "rollback")."""
    store = UpgradeStore.of_install(install_dir)
    with store.lock():
        journal = store.load()
        if journal is None:
            raise UserError(
                "no upgrade is unfinished on this install", hint="`orbisctl upgrade` starts one"
            )
        upgrader = Upgrader(install_dir, store, journal, backups, progress)
        if mode == "rollback" and journal.mode == "upgrade":
            upgrader.turn_back("turned back by `orbisctl upgrade --rollback`", requested=True)
        return _drive(upgrader)


def roll_back_finished(
    install_dir: Path, backups: BackupPort, *, progress: Progress = NO_PROGRESS
) -> Finished:
    """`upgrade --rollback` after a finished upgrade: back to the release it came from, data
    written since kept (the schema stays expanded; see the module docstring)."""
    store = UpgradeStore.of_install(install_dir)
    history = store.history()
    last = history[-1] if history else None
    install = open_install(install_dir)
    if last is None or last.outcome != "upgraded" or install.config.images.tag != last.to_version:
        raise UserError(
            "there is no finished upgrade to roll back on this install",
            hint="`orbisctl upgrade --history` lists what happened",
        )
    if not store.previous_config.is_file():
        raise InstallDirError(
            f"the orbis.yaml from before the upgrade is missing ({store.previous_config})",
            hint="set images.tag in orbis.yaml by hand, then `orbisctl up`",
        )
    with store.lock():
        journal = _new_journal(
            last.from_version,
            last.to_version,
            steps=[],
            # Every forward step ran: turn_back keeps these facts rather than reading steps.
            mode="rollback",
            forward_done=",".join(name for name, _ in FORWARD_STEPS),
            forward_begun=",".join(name for name, _ in FORWARD_STEPS),
        )
        upgrader = Upgrader(install_dir, store, journal, backups, progress)
        upgrader.turn_back("rolled back by `orbisctl upgrade --rollback`", requested=True)
        return _drive(upgrader)


def history(install_dir: Path) -> list[UpgradeRecord]:
    return UpgradeStore.of_install(install_dir).history()


def unfinished(install_dir: Path) -> UpgradeJournal | None:
    return UpgradeStore.of_install(install_dir).load()
