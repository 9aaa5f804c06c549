"""User errors of the stack verbs: one clear line (plus a hint) and a named exit code, checked
in-process with no engine (DOCKER_HOST points at a dead socket) or with a real one."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from orbisctl import preflight
from orbisctl.core.errors import ExitCode
from orbisctl.output import STEP_MARK
from tests.stack.conftest import invoke


def _lines(text: str) -> list[str]:
    """The lines of an output but the steps' progress lines (`· docker compose down… failed
    after 0.0 s`): the error is one line of its own."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith(STEP_MARK)]


@pytest.mark.parametrize(
    "verb", [["status"], ["doctor"], ["down"], ["logs"], ["scale", "gateway=2"], ["up"]]
)
def test_dead_engine_is_one_line(
    install: Path, dead_engine: dict[str, str], verb: list[str]
) -> None:
    result = invoke(*verb, "--dir", str(install), env=dead_engine)
    socket_path = dead_engine["DOCKER_HOST"]
    if verb == ["doctor"]:
        # doctor reports the engine as a failing check and still checks the files.
        assert result.exit_code == ExitCode.FAILURE
        assert f"fail engine: cannot reach the Docker engine at {socket_path}" in result.output
        assert "pass certificate" in result.output
        assert "pass secret modes" in result.output
        return
    assert result.exit_code == ExitCode.ENGINE
    first = _lines(result.output)[0]
    assert (
        first
        == f"error: cannot reach the Docker engine at {socket_path}: No such file or directory"
    )
    assert "Traceback" not in result.output


def test_preflight_reports_every_problem_at_once(
    install: Path, dead_engine: dict[str, str]
) -> None:
    config = yaml.safe_load((install / "orbis.yaml").read_text())
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))  # noqa: S104 - preflight checks every address, as nginx binds
        busy.listen()
        busy_port = busy.getsockname()[1]
        config["ports"]["https"] = busy_port
        (install / "orbis.yaml").write_text(yaml.safe_dump(config))
        assert invoke("render", "--dir", str(install)).exit_code == 0
        (install / "secrets" / "internal_token").chmod(0o644)
        (install / "secrets" / "redis_password").unlink()
        result = invoke("up", "--dir", str(install), env=dead_engine)
    lines = _lines(result.output)
    errors = [line for line in lines if line.startswith("error:")]
    assert errors[0].startswith("error: cannot reach the Docker engine at unix://")
    assert "hint: start the engine (`systemctl start docker`" in lines[1]
    # Without the engine, who holds a busy port cannot be told (this install's own nginx may
    # hold it): no port is blamed on "another program" (issue 15, item 9).
    about_ports = [line for line in lines if "in use" in line or f"port {busy_port}" in line]
    assert about_ports == [], lines
    assert f"error: secret {install}/secrets/internal_token is mode 0644, not 0600" in errors
    assert f"error: secret {install}/secrets/redis_password is missing" in errors
    assert any(
        line.strip() == f"hint: chmod 600 {install}/secrets/internal_token" for line in lines
    )
    # The worst problem names the exit code: the engine.
    assert result.exit_code == ExitCode.ENGINE


def test_up_outside_an_install(tmp_path: Path) -> None:
    result = invoke("up", "--dir", str(tmp_path))
    assert result.exit_code == ExitCode.USAGE
    assert _lines(result.output)[0] == f"error: {tmp_path}/orbis.yaml does not exist"


def test_missing_compose_file(install: Path) -> None:
    (install / "compose.yaml").unlink()
    result = invoke("logs", "--dir", str(install))
    assert result.exit_code == ExitCode.CONFIG
    assert _lines(result.output)[0] == f"error: {install}/compose.yaml does not exist"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gateway", "error: 'gateway' is not SERVICE=N"),
        ("gateway=two", "error: 'gateway=two' is not SERVICE=N"),
        ("postgres=2", "error: 'postgres' cannot be scaled"),
        ("gateway=0", "error: 0 replicas is out of range"),
    ],
)
def test_scale_rejects_bad_specs(install: Path, spec: str, message: str) -> None:
    result = invoke("scale", spec, "--dir", str(install))
    assert result.exit_code == ExitCode.USAGE
    assert _lines(result.output)[0] == message


def test_down_volumes_needs_confirmation_without_a_terminal(install: Path) -> None:
    result = invoke("down", "--volumes", "--dir", str(install))
    assert result.exit_code == ExitCode.USAGE
    assert "needs confirmation" in _lines(result.output)[0]
    assert "--yes" in result.output


def test_load_of_a_missing_bundle(tmp_path: Path) -> None:
    result = invoke("images", "load", str(tmp_path / "nope.tar"))
    assert result.exit_code == ExitCode.USAGE
    assert _lines(result.output)[0] == f"error: {tmp_path}/nope.tar does not exist"


def test_a_port_held_by_another_program_is_named() -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))  # noqa: S104 - preflight checks every address, as nginx binds
        busy.listen()
        port = busy.getsockname()[1]
        problem = preflight.port_problem(port, owned_by_us=lambda _: False)
        assert problem is not None
        assert problem.message == f"port {port} is already in use by another program"
        assert preflight.port_problem(port, owned_by_us={port}.__contains__) is None


def test_logs_of_an_unknown_service_lists_the_services(
    install: Path, dead_engine: dict[str, str]
) -> None:
    result = invoke("logs", "nosuchservice", "--dir", str(install), env=dead_engine)
    assert result.exit_code == ExitCode.USAGE
    lines = _lines(result.output)
    assert lines[0] == "error: no service 'nosuchservice' in this install"
    assert lines[1].strip().startswith("hint: its services: api, ")
    for service in ("api", "gateway", "nginx", "postgres", "redis"):
        assert service in lines[1]
