"""The appliance on a real Docker engine, end to end: `up` healthy, HTTPS and a voice call
through nginx, `status --json`, hardening read back with `docker inspect`, `scale`, faults
(a killed container, a stopped database) and recovery, `down --volumes`.

The tests share one stack and run in file order: each leaves it healthy for the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import docker.errors
import pytest

from backups.schema import code_schema_version
from orbisctl import __version__ as orbisctl_version
from orbisctl import images
from orbisctl.core import engine
from orbisctl.core.config import parse_config
from orbisctl.core.errors import ExitCode
from orbisctl.render import image_refs
from tests.e2e.conftest import Stack, orbisctl
from tests.e2e.support import create_agent, ended_session, signup, widget_call

pytestmark = pytest.mark.docker

LONG_RUNNING = {"api", "emulator", "gateway", "nginx", "postgres", "redis"}
ONE_SHOT = {"migrate", "volume-init"}
# The one container that runs as root: it only chowns fresh volumes (CHOWN, no network).
ROOT_ONE_SHOT = "volume-init"
WAIT_SECONDS = 120


def _status(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    result = stack.cli("status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["project"] == stack.project
    by_service: dict[str, list[dict[str, Any]]] = {}
    for row in data["services"]:
        by_service.setdefault(row["service"], []).append(row)
    return by_service


def _wait(condition: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s: {what}")
        time.sleep(1)


def _all_healthy(stack: Stack) -> bool:
    rows = _status(stack)
    return all(
        row["state"] == "running" and row["health"] == "healthy"
        for service in LONG_RUNNING
        for row in rows.get(service, [{"state": "absent", "health": "-"}])
    )


def _get(stack: Stack, path: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{stack.url}{path}")  # noqa: S310 - https to our stack
    context = context or stack.ssl_context()
    try:
        with urllib.request.urlopen(request, context=context, timeout=15) as r:  # noqa: S310
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_every_service_is_healthy_and_status_json_says_so(stack: Stack) -> None:
    rows = _status(stack)
    assert set(rows) == LONG_RUNNING | ONE_SHOT
    for service in LONG_RUNNING:
        (row,) = rows[service]
        assert (row["state"], row["health"]) == ("running", "healthy"), row
        assert row["uptime_seconds"] >= 0
        assert row["restarts"] == 0
        assert row["container"] == f"{stack.project}-{service}-1"
    for service in ONE_SHOT:
        (row,) = rows[service]
        assert (row["state"], row["exit_code"]) == ("exited", 0), row
    assert rows["postgres"][0]["image"] == f"orbisvoice/postgres:15-{orbisctl_version}"
    assert rows["api"][0]["image"] == f"orbisvoice/runtime:{orbisctl_version}"


def test_version_reads_each_image_and_the_database(stack: Stack) -> None:
    result = stack.cli("version", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["cli"] == orbisctl_version
    assert shown["database"]["postgres_major"] == 15
    assert shown["database"]["schema"] == shown["code_schema"] == code_schema_version()
    by_service = {row["service"]: row for row in shown["images"]}
    assert set(by_service) == LONG_RUNNING  # the one-shot jobs have exited
    for service, row in by_service.items():
        # Every image of a local install is built here, stamped with this release.
        assert row["version"] == orbisctl_version, (service, row)
        assert row["image_id"].startswith("sha256:") and row["containers"] == 1
    assert shown["notes"] == []  # nothing mismatched


def test_up_again_is_idempotent(stack: Stack) -> None:
    before = {c.name: c.id for c in stack.containers() if c.status == "running"}
    result = stack.cli("up")
    assert result.exit_code == 0, result.output
    after = {c.name: c.id for c in stack.containers() if c.status == "running"}
    assert after == before  # nothing changed, so nothing was recreated


def test_https_through_nginx_with_the_generated_ca(stack: Stack) -> None:
    status, _ = _get(stack, "/healthz")
    assert status == 200
    status, body = _get(stack, "/api/v1/widget/agents/no-such-agent")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "agent_not_found"  # the API's error shape
    status, body = _get(stack, "/widget.js")
    assert status == 200
    assert len(body) > 1000
    # A client that does not trust the install's CA refuses the certificate.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(stack, "/healthz", ssl.create_default_context())
    # Plain HTTP answers only with a redirect to HTTPS.
    request = urllib.request.Request(f"http://localhost:{stack.http_port}/dashboard/")
    opener = urllib.request.build_opener(_NoRedirect())
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(request, timeout=15)
    assert redirect.value.code == 301
    assert redirect.value.headers["Location"] == f"https://localhost:{stack.https_port}/dashboard/"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_hardening_read_back_with_docker_inspect(stack: Stack) -> None:
    seen = set()
    for container in stack.containers():
        service = container.labels[engine.SERVICE_LABEL]
        seen.add(service)
        host = container.attrs["HostConfig"]
        config = container.attrs["Config"]
        assert host["ReadonlyRootfs"] is True, service
        assert host["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in host["SecurityOpt"], service
        assert host["Memory"] > 0, service
        assert host["PidsLimit"] and host["PidsLimit"] > 0, service
        assert host["LogConfig"]["Config"].get("max-size") == "10m", service
        published = {port: b for port, b in (host.get("PortBindings") or {}).items() if b}
        if service == "nginx":
            assert sorted(int(b[0]["HostPort"]) for b in published.values()) == sorted(
                [stack.http_port, stack.https_port]
            )
        else:
            assert published == {}, f"{service} publishes {published}"
        if service == ROOT_ONE_SHOT:
            assert host["CapAdd"] == ["CAP_CHOWN"]
            assert host["NetworkMode"] == "none"
            continue
        assert config["User"] == "10001:10001", service
        assert not host.get("CapAdd"), service
        if service in LONG_RUNNING:
            assert config["Healthcheck"]["Test"][0] in ("CMD", "CMD-SHELL"), service
            assert host["RestartPolicy"]["Name"] == "unless-stopped", service
    assert seen == LONG_RUNNING | ONE_SHOT
    # The processes really are not root: ask the kernel inside two of them.
    for service in ("api", "postgres", "nginx"):
        (container,) = stack.containers(service)
        assert engine.exec_in(container, ["id", "-u"]).output == "10001"


async def test_voice_call_through_nginx_gateway_and_emulator_stores_the_transcript(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    auth = await signup(http, stack, f"owner-{os.urandom(4).hex()}@example.com")
    public_id = await create_agent(http, stack, auth)
    call_id = await widget_call(http, stack, public_id)
    session = await ended_session(http, stack, auth, call_id)
    assert session["end_reason"] == "hangup"
    assert [(s["seq"], s["role"], s["text"]) for s in session["transcript"]] == [
        (1, "user", "Hello there."),
        (2, "agent", "Hi! How can I help?"),
    ]


async def test_scale_gateway_to_two_and_calls_reach_both(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    result = stack.cli("scale", "gateway=2")
    assert result.exit_code == 0, result.output
    gateways = _status(stack)["gateway"]
    assert len(gateways) == 2
    assert {(g["state"], g["health"]) for g in gateways} == {("running", "healthy")}
    auth = await signup(http, stack, f"owner-{os.urandom(4).hex()}@example.com")
    public_id = await create_agent(http, stack, auth)
    instances = set()
    for _ in range(6):  # nginx round-robins; two replicas show up within a few calls
        call_id = await widget_call(http, stack, public_id)
        instances.add((await ended_session(http, stack, auth, call_id))["instance_id"])
        if len(instances) == 2:
            break
    assert len(instances) == 2, instances


def test_a_killed_container_is_restarted_by_its_policy(stack: Stack) -> None:
    (api,) = stack.containers("api")
    os.kill(api.attrs["State"]["Pid"], signal.SIGKILL)  # a crash, not a `docker stop`

    def restarted_and_healthy() -> bool:
        (row,) = _status(stack)["api"]
        return bool(row["restarts"] >= 1 and row["health"] == "healthy")

    _wait(restarted_and_healthy, "api restarted by its restart policy and healthy again")


def test_stopped_postgres_fails_api_readiness_doctor_says_why_and_up_recovers(
    stack: Stack,
) -> None:
    (postgres,) = stack.containers("postgres")
    postgres.stop(timeout=30)
    (api,) = stack.containers("api")
    probe = engine.run_healthcheck(api)
    assert probe is not None
    assert probe.exit_code != 0, probe.output
    assert "/readyz" in probe.output
    result = stack.cli("doctor", "--json")
    assert result.exit_code == ExitCode.FAILURE
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    pg = checks[f"container {stack.project}-postgres-1"]
    assert pg["verdict"] == "fail"
    assert pg["detail"].startswith("exited")
    api_check = checks[f"container {stack.project}-api-1"]
    assert api_check["verdict"] == "fail"
    assert "health probe fails now" in api_check["detail"]
    assert api_check["fix"].startswith("postgres is not running")
    result = stack.cli("up")
    assert result.exit_code == 0, result.output
    _wait(lambda: _all_healthy(stack), "every service healthy again after up")
    result = stack.cli("doctor")
    assert result.exit_code == 0, result.output
    assert "pass nginx config" in result.output


def test_logs_of_one_service(stack: Stack) -> None:
    # `logs` hands the terminal to `docker compose logs`, so run the real console script.
    orbisctl = Path(sys.executable).parent / "orbisctl"
    result = subprocess.run(
        [str(orbisctl), "logs", "nginx", "--tail", "5", "--dir", str(stack.root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 0 < len(lines) <= 5
    assert all(line.startswith("nginx-1") for line in lines), lines


def test_down_with_volumes_leaves_nothing(stack: Stack) -> None:
    result = stack.cli("down", "--volumes", "--yes")
    assert result.exit_code == 0, result.output
    assert stack.containers() == []
    label = f"com.docker.compose.project={stack.project}"
    assert stack.client.volumes.list(filters={"label": label}) == []
    result = stack.cli("status")
    assert "not running" in result.output


def test_images_save_and_load_round_trip(stack: Stack, tmp_path: Path) -> None:
    """A bundle carries the images to an offline host: save under a tag no container uses,
    delete that tag, load the bundle, and the same images are back."""
    tag = f"roundtrip-{os.urandom(3).hex()}"
    refs = images.all_refs(image_refs(parse_config({"images": {"source": "local", "tag": tag}})))
    originals = images.all_refs(image_refs(parse_config({"images": {"source": "local"}})))
    ids = {}
    for original, ref in zip(originals, refs, strict=True):
        image = stack.client.images.get(original)
        repository, _, new_tag = ref.partition(":")
        assert image.tag(repository, new_tag)
        ids[ref] = image.id
    try:
        bundle = tmp_path / "images.tar"
        result = orbisctl("images", "save", str(bundle), "--source", "local", "--tag", tag)
        assert result.exit_code == 0, result.output
        for ref in refs:
            stack.client.images.remove(ref)
        assert (
            images.missing_images(
                stack.client, image_refs(parse_config({"images": {"source": "local", "tag": tag}}))
            )
            == refs
        )
        result = orbisctl("images", "load", str(bundle))
        assert result.exit_code == 0, result.output
        assert f"loaded {len(refs)} images" in result.output
        assert {ref: stack.client.images.get(ref).id for ref in refs} == ids
    finally:
        for ref in refs:
            with contextlib.suppress(docker.errors.ImageNotFound):
                stack.client.images.remove(ref)


def test_a_second_image_build_with_nothing_changed_is_all_cached(stack: Stack) -> None:
    if images.hash_inputs([], images.project_sources(images.source_root())) != stack.source_key:
        pytest.skip("the source tree changed during the run (someone is editing it)")
    started = time.monotonic()
    result = stack.cli("images", "build")
    assert result.exit_code == 0, result.output
    steps = [line for line in result.output.splitlines() if line.startswith("· ")]
    assert len(steps) == 8, steps  # base, python, 2 wheelhouse parts, 4 images
    assert all(line.endswith("cached") or "cached (" in line for line in steps), steps
    assert time.monotonic() - started < 30
