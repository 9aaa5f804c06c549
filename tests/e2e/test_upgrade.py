"""N-1 → N on a real Compose stack, as issue 17 checks it: the previous release (its own
orbisctl and images, from the commit CHANGELOG.md records) installed and serving data, then
this checkout's `orbisctl upgrade` under a bounded load of API requests and live calls; then
`upgrade --rollback` keeping what was written since; then two broken releases rolled back by
the upgrade itself: an api that never gets healthy, and migrations that stop half-way (the
database restored from the pre-upgrade backup). Each phase prints its duration."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from backups.schema import code_schema_version
from orbisctl import __version__
from orbisctl.core import engine
from orbisctl.core.install import open_install
from orbisctl.releases import RELEASES
from orbisctl.rotation.compose import ComposeRoller
from orbisctl.upgrade.journal import UpgradeStore
from tests.e2e.logs import ServiceLogs
from tests.e2e.support import create_agent, psql, signup
from tests.e2e.traffic import ORBISCTL, ServedStack, Traffic, orbisctl
from tests.releases import extract, in_git_checkout
from tests.services import free_port

pytestmark = pytest.mark.docker

PREVIOUS = RELEASES[-2]
RUNTIME = f"orbisvoice/runtime:{__version__}"
TIMINGS: dict[str, float] = {}


def previous_orbisctl(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The previous release's own orbisctl, from its source tree, on this environment's
    Python packages (its dependencies are a subset of this one's)."""
    return subprocess.run(
        [sys.executable, "-c", "from orbisctl.cli import main; main()", *args],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


@dataclass
class Stack(ServedStack):
    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load((self.root / "orbis.yaml").read_text())
        return data

    def versions(self) -> dict[str, Any]:
        shown = orbisctl("version", "--json", "--dir", str(self.root))
        assert shown.returncode == 0, shown.stderr
        data: dict[str, Any] = json.loads(shown.stdout)
        return data

    def running_refs(self, service: str) -> set[str]:
        return {row["ref"] for row in self.versions()["images"] if row["service"] == service}


def _timed(name: str, started: float) -> None:
    TIMINGS[name] = round(time.monotonic() - started, 1)
    print(f"upgrade e2e: {name} {TIMINGS[name]} s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not in_git_checkout():
        pytest.skip("not a git checkout: the previous release cannot be read")
    started = time.monotonic()
    tree = extract(str(PREVIOUS.commit), [], tmp_path_factory.mktemp("previous") / "tree")
    root = tmp_path_factory.mktemp("e2e") / "orbis"
    https_port = free_port()
    init = previous_orbisctl(
        tree, "init", "--dir", str(root), "--non-interactive", "--model", "emulator",
        "--image-source", "local", "--http-port", str(free_port()),
        "--https-port", str(https_port),
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    project = f"upge2e{secrets.token_hex(3)}"
    config = yaml.safe_load((root / "orbis.yaml").read_text())
    assert config["images"]["tag"] == PREVIOUS.version
    config["project_name"] = project
    config["rate_limits"] = {"public_per_minute": 100_000, "authenticated_per_minute": 100_000}
    config.setdefault("gateway", {}).update(idle_timeout_seconds=3600, max_call_seconds=3600)
    (root / "orbis.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rendered = previous_orbisctl(tree, "render", "--dir", str(root))
    assert rendered.returncode == 0, rendered.stderr
    built = previous_orbisctl(tree, "images", "build", "--dir", str(root))
    assert built.returncode == 0, built.stderr[-3000:]
    _timed(f"build {PREVIOUS.version} images", started)
    logs_dir = tmp_path_factory.mktemp("service-logs")
    with ServiceLogs(project, logs_dir) as logs:
        try:
            started = time.monotonic()
            up = previous_orbisctl(tree, "up", "--dir", str(root), "--timeout", "400")
            assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
            _timed(f"{PREVIOUS.version} up", started)
            yield Stack(root, https_port, project, logs)
        finally:
            orbisctl("down", "--dir", str(root), "--volumes", "--yes", timeout=300)
            print(f"upgrade e2e timings: {TIMINGS}")


async def _owner_and_agent(stack: Stack) -> tuple[dict[str, str], str]:
    connector = aiohttp.TCPConnector(ssl=stack.ssl_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        auth = await signup(http, stack, f"owner-{secrets.token_hex(4)}@example.com")
        return auth, await create_agent(http, stack, auth)


async def _agent_names(stack: Stack, auth: dict[str, str]) -> list[str]:
    connector = aiohttp.TCPConnector(ssl=stack.ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(f"{stack.url}/api/v1/agents", headers=auth) as response,
    ):
        body = await response.json()
        assert response.status == 200, body
    items = body["items"] if isinstance(body, dict) else body
    return sorted(str(item["public_id"]) for item in items)


def _step_windows(record: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {
        f"{item['kind']} {item['name']}": (item["started"], item["started"] + item["seconds"])
        for item in record["timings"]
    }


def _placed(traffic: Traffic, windows: dict[str, tuple[float, float]]) -> dict[str, list[str]]:
    """Each failure or dropped call under the step it happened in (a request's timeout may
    end it up to 15 s after the step that failed it)."""
    placed: dict[str, list[str]] = {}
    for moment, what in traffic.when:
        begun = [(start, name) for name, (start, _) in windows.items() if start <= moment]
        step = max(begun)[1] if begun else "before"
        if moment > windows.get(step, (0.0, 0.0))[1] + 16:
            step = "after"
        placed.setdefault(step, []).append(what)
    return placed


def _containers(stack: Stack, service: str) -> list[Any]:
    return ComposeRoller(open_install(stack.root), engine.connect()).running(service)


def _killed_in_api_surge(stack: Stack) -> int:
    """`orbisctl upgrade` SIGKILLed once its api roll has started a new replica beside the
    old ones; its return code."""
    before = len(_containers(stack, "api"))
    store = UpgradeStore.of_install(stack.root)
    process = subprocess.Popen(
        [*ORBISCTL, "upgrade", "--dir", str(stack.root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 900
        while process.poll() is None and time.monotonic() < deadline:
            journal = store.load()
            steps = journal.steps if journal else []
            if any(step.name == "api" and step.status == "started" for step in steps) and (
                len(_containers(stack, "api")) > before
            ):
                break
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)  # a no-op when it has ended by itself
    return process.wait(timeout=60)


def test_the_previous_release_upgrades_under_load_and_keeps_its_data(stack: Stack) -> None:
    auth, public_id = asyncio.run(_owner_and_agent(stack))
    planned = orbisctl("upgrade", "--dry-run", "--json", "--dir", str(stack.root))
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["problems"] == []
    api_replicas = len(_containers(stack, "api"))
    started = time.monotonic()
    with Traffic(stack, public_id) as traffic:
        killed = _killed_in_api_surge(stack)
        again = orbisctl("upgrade", "--json", "--dir", str(stack.root))
        upgraded = orbisctl("upgrade", "--resume", "--json", "--dir", str(stack.root))
    _timed(f"upgrade {PREVIOUS.version} → {__version__} (killed once, resumed)", started)
    assert killed == -signal.SIGKILL
    assert again.returncode != 0 and "upgrade --resume" in again.stderr, again.stderr
    assert upgraded.returncode == 0, upgraded.stdout[-2000:] + upgraded.stderr[-3000:]
    record = json.loads(upgraded.stdout)
    assert record["outcome"] == "upgraded", record
    # The gate's probe tenant logged in, read its agent and held a call through the model.
    assert {"api login", "agent read", "call through the gateway"} <= set(
        record["facts"]["gate"].split(", ")
    ), record["facts"]
    placed = _placed(traffic, _step_windows(record))
    print(f"upgrade e2e: steps {[(t['name'], t['seconds']) for t in record['timings']]}")
    print(f"upgrade e2e: failures by step { ({k: len(v) for k, v in placed.items()}) }")
    # Rolling api and gateway, and migrating while the old release serves, fail nothing.
    for step in ("upgrade migrate", "upgrade api", "upgrade gateway"):
        assert step not in placed, (step, placed[step][:5], stack.logs.notable())
    assert traffic.answered["GET"] > 5 and traffic.answered["POST"] > 5, traffic.answered

    versions = stack.versions()
    assert versions["database"]["schema"] == code_schema_version()
    for service in ("api", "gateway"):
        rows = [row for row in versions["images"] if row["service"] == service]
        assert [row["version"] for row in rows] == [__version__], rows
    # The resumed roll ended at the size the stack had, not one replica more.
    assert len(_containers(stack, "api")) == api_replicas
    assert stack.config()["images"]["tag"] == __version__
    assert asyncio.run(_agent_names(stack, auth)) == [public_id]
    history = orbisctl("upgrade", "--history", "--json", "--dir", str(stack.root))
    assert [entry["outcome"] for entry in json.loads(history.stdout)] == ["upgraded"]


def test_rollback_returns_to_the_previous_release_and_keeps_what_was_written(
    stack: Stack,
) -> None:
    auth, written_after = asyncio.run(_owner_and_agent(stack))
    started = time.monotonic()
    rolled = orbisctl("upgrade", "--rollback", "--json", "--dir", str(stack.root))
    _timed(f"rollback to {PREVIOUS.version}", started)
    assert rolled.returncode == 0, rolled.stdout[-2000:] + rolled.stderr[-3000:]
    assert json.loads(rolled.stdout)["outcome"] == "rolled back"
    previous = f"orbisvoice/runtime:{PREVIOUS.version}"
    assert stack.running_refs("api") == stack.running_refs("gateway") == {previous}
    # The schema stays expanded; the migrate job runs on the release that knows it.
    images = stack.config()["images"]
    assert (images["tag"], images["migrate_tag"]) == (PREVIOUS.version, __version__)
    assert images["data_tag"] == __version__  # postgres and redis stay on the new images
    assert stack.versions()["database"]["schema"] == code_schema_version()
    assert asyncio.run(_agent_names(stack, auth)) == [written_after]
    up = orbisctl("up", "--dir", str(stack.root), "--timeout", "400")
    assert up.returncode == 0, up.stderr[-2000:]


@contextmanager
def _broken_release(build_dir: Path, change: str) -> Iterator[None]:
    """This release's runtime image replaced, while the block runs, by one that runs the
    Python `change` at build time (as root); the good image is tagged back after."""
    client = engine.connect()
    good = client.images.get(RUNTIME)
    (build_dir / "Dockerfile").write_text(
        f"FROM {good.id}\nUSER root\nRUN python -c {json.dumps(change)}\n"
    )
    broken, _ = client.images.build(path=str(build_dir), tag=RUNTIME, rm=True)
    try:
        yield
    finally:
        good.tag(RUNTIME)
        client.images.remove(broken.id, force=True)


def test_a_release_whose_api_never_gets_healthy_is_rolled_back_by_itself(
    stack: Stack, tmp_path: Path
) -> None:
    auth, public_id = asyncio.run(_owner_and_agent(stack))
    # Every readiness probe of this image fails: its api replicas never get healthy.
    never_healthy = (
        "import healthchecks, pathlib; "
        "(pathlib.Path(healthchecks.__file__).parent / '__main__.py')"
        ".write_text('raise SystemExit(1)')"
    )
    with _broken_release(tmp_path, never_healthy):
        started = time.monotonic()
        with Traffic(stack, public_id) as traffic:
            failed = orbisctl("upgrade", "--json", "--dir", str(stack.root))
        _timed("broken api rolled back", started)
    assert failed.returncode != 0, failed.stdout[-2000:]
    record = json.loads(failed.stdout)
    assert record["outcome"] == "rolled back" and "step api" in record["detail"], record
    previous = f"orbisvoice/runtime:{PREVIOUS.version}"
    assert stack.running_refs("api") == stack.running_refs("gateway") == {previous}
    assert stack.config()["images"]["tag"] == PREVIOUS.version
    assert "upgrade gateway" not in _placed(traffic, _step_windows(record))
    assert asyncio.run(_agent_names(stack, auth)) == [public_id]


def test_a_release_whose_migrations_stop_half_way_is_rolled_back_to_the_backup(
    stack: Stack, tmp_path: Path
) -> None:
    """Two new migrations, the second failing: the first's table is in the database when the
    migrate job stops, so the rollback restores the pre-upgrade backup."""
    auth, public_id = asyncio.run(_owner_and_agent(stack))
    schema = code_schema_version()
    half_way = (
        "import runtime.api, pathlib; "
        "d = pathlib.Path(runtime.api.__file__).parent / 'migrations'; "
        f"(d / '{schema + 1:04d}_upgrade_probe.sql').write_text('CREATE TABLE upgrade_probe (id int);'); "
        f"(d / '{schema + 2:04d}_broken.sql').write_text('SELECT no_such_function();')"
    )
    with _broken_release(tmp_path, half_way):
        started = time.monotonic()
        failed = orbisctl("upgrade", "--json", "--dir", str(stack.root))
        _timed("half-way migrations rolled back", started)
    assert failed.returncode != 0, failed.stdout[-2000:]
    record = json.loads(failed.stdout)
    assert record["outcome"] == "rolled back" and "step migrate" in record["detail"], record
    facts = record["facts"]
    assert facts["database_restored"] == facts["backup"] and facts["schema_after"], facts
    assert stack.versions()["database"]["schema"] == schema
    assert psql(stack, "SELECT to_regclass('public.upgrade_probe') IS NULL") == "t"
    previous = f"orbisvoice/runtime:{PREVIOUS.version}"
    assert stack.running_refs("api") == stack.running_refs("gateway") == {previous}
    assert asyncio.run(_agent_names(stack, auth)) == [public_id]
    history = orbisctl("upgrade", "--history", "--json", "--dir", str(stack.root))
    outcomes = [entry["outcome"] for entry in json.loads(history.stdout)]
    assert outcomes == ["upgraded", "rolled back", "rolled back", "rolled back"]
