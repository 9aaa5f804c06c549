"""ports.bind_address and ports.ipv6: the host addresses nginx's ports are published on
(issue 15 item 8: 80/443 were published on every address with no setting to change it)."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from orbisctl.core.config import EVERY_IPV4_ADDRESS, parse_config
from orbisctl.core.errors import ConfigError
from orbisctl.preflight import port_problem
from orbisctl.render import render_stack
from tests.install.helpers import invoke


def nginx_ports(data: dict[str, object]) -> list[str]:
    compose = yaml.safe_load(render_stack(parse_config(data))[Path("compose.yaml")])
    ports: list[str] = compose["services"]["nginx"]["ports"]
    return ports


def compose_ports(install: Path) -> list[dict[str, object]]:
    """nginx's ports as Compose v2 itself reads the rendered file."""
    result = subprocess.run(
        ["docker", "compose", "-f", str(install / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=install,
    )
    ports: list[dict[str, object]] = json.loads(result.stdout)["services"]["nginx"]["ports"]
    return ports


def test_the_default_publishes_on_every_address_as_before() -> None:
    # No host address: Docker publishes on every IPv4 and every IPv6 address.
    assert nginx_ports({}) == ["80:8080", "443:8443"]
    assert nginx_ports({"ports": {"bind_address": EVERY_IPV4_ADDRESS, "ipv6": True}}) == [
        "80:8080",
        "443:8443",
    ]


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ({"ipv6": False}, ["0.0.0.0:80:8080", "0.0.0.0:443:8443"]),
        ({"bind_address": "127.0.0.1"}, ["127.0.0.1:80:8080", "127.0.0.1:443:8443"]),
        (
            {"bind_address": "10.0.0.5", "ipv6": False, "http": 8080, "https": 8443},
            ["10.0.0.5:8080:8080", "10.0.0.5:8443:8443"],
        ),
        ({"bind_address": "::1"}, ["[::1]:80:8080", "[::1]:443:8443"]),
        ({"bind_address": "[2001:DB8::0:5]"}, ["[2001:db8::5]:80:8080", "[2001:db8::5]:443:8443"]),
        ({"bind_address": "::"}, ["[::]:80:8080", "[::]:443:8443"]),
    ],
)
def test_a_bind_address_is_rendered_into_the_ports(
    ports: dict[str, object], expected: list[str]
) -> None:
    assert nginx_ports({"ports": ports}) == expected


@pytest.mark.parametrize(
    ("ports", "problem"),
    [
        ({"bind_address": "localhost"}, "ports.bind_address: 'localhost' is not an IP address"),
        ({"bind_address": "10.0.0.300"}, "ports.bind_address: '10.0.0.300' is not an IP address"),
        (
            {"bind_address": "::1", "ipv6": False},
            "ports: bind_address ::1 is IPv6, but ipv6 is off",
        ),
    ],
)
def test_a_bad_bind_address_is_refused_with_its_key(ports: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"ports": ports})
    (found,) = caught.value.problems
    assert found.startswith(problem)


def test_init_flags_set_the_address(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    result = invoke(
        "init", "--dir", str(root), "--non-interactive",
        "--bind-address", "127.0.0.1", "--no-ipv6",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((root / "orbis.yaml").read_text())
    assert config["ports"] == {"http": 80, "https": 443, "bind_address": "127.0.0.1", "ipv6": False}
    published = compose_ports(root)
    assert {(p["host_ip"], p["published"], p["target"]) for p in published} == {
        ("127.0.0.1", "80", 8080),
        ("127.0.0.1", "443", 8443),
    }


def test_compose_reads_an_ipv6_address(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    result = invoke("init", "--dir", str(root), "--non-interactive", "--bind-address", "::1")
    assert result.exit_code == 0, result.output
    assert {(p["host_ip"], p["target"]) for p in compose_ports(root)} == {
        ("::1", 8080),
        ("::1", 8443),
    }


def test_a_bad_bind_address_flag_is_named(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    result = invoke("init", "--dir", str(root), "--non-interactive", "--bind-address", "lan")
    assert result.exit_code == 2
    assert "error: --bind-address: 'lan' is not an IP address" in result.output
    assert not root.exists()


def test_up_checks_the_ports_on_the_bind_address() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never an address of this host.
    problem = port_problem(8443, owned_by_us=lambda _: False, address="192.0.2.1")
    assert problem is not None
    assert problem.message == "ports.bind_address 192.0.2.1 is not an address of this host"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = port_problem(port, owned_by_us=lambda _: False, address="127.0.0.1")
        assert busy is not None
        assert busy.message == f"port {port} is already in use by another program"
        assert port_problem(port, owned_by_us=lambda _: True, address="127.0.0.1") is None


def test_a_clash_of_address_flags_names_those_flags_only(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    result = invoke(
        "init", "--dir", str(root), "--non-interactive", "--bind-address", "::1", "--no-ipv6",
    )  # fmt: skip
    assert result.exit_code == 2
    assert (
        "error: --bind-address, --ipv6/--no-ipv6: bind_address ::1 is IPv6, but ipv6 is off"
        in result.output
    )
    # A clash of the two ports names the port flags, not every flag of `ports:`.
    result = invoke("init", "--dir", str(root), "--non-interactive", "--https-port", "80")
    assert "hint: fix --https-port (it goes with --http-port);" in result.output
