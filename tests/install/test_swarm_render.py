"""target: swarm: the stack file rendered from the compose template, its versioned secret and
config names, the swarm flavour of nginx's config, and the verbs refused on a swarm.

The stack really deploys in tests/swarm/test_stack.py; here only what needs no engine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from orbisctl import swarm
from orbisctl.core.config import parse_config
from orbisctl.render import render_stack, render_swarm_stack, swarm_objects
from tests.install.helpers import invoke

SWARM = {"target": "swarm", "images": {"source": "local"}, "gateway": {"replicas": 3}}


def stack(data: dict[str, Any]) -> dict[str, Any]:
    cfg = parse_config(data)
    names = {key: f"p_{key}_0123456789" for key in swarm_objects(cfg)}
    loaded: dict[str, Any] = yaml.safe_load(render_swarm_stack(cfg, names))
    return loaded


def test_the_compose_target_ignores_the_swarm_keys() -> None:
    plain = render_stack(parse_config({}))
    tuned = render_stack(
        parse_config({"swarm": {"encrypted_overlay": False, "data_node_label": "x.y"}})
    )
    assert plain == tuned
    assert "compose.yaml" in {str(p) for p in plain}


def test_a_swarm_install_renders_no_compose_file_and_nginx_resolves_per_request() -> None:
    files = {str(p): text for p, text in render_stack(parse_config(SWARM)).items()}
    assert "compose.yaml" not in files
    conf = files["nginx/nginx.conf"]
    assert "resolver 127.0.0.11 valid=5s" in conf
    # An upstream block resolves its names only when nginx loads its config.
    assert not re.search(r"^\s*upstream \w+ \{", conf, re.MULTILINE)
    assert "proxy_pass http://$api;" in conf and "proxy_pass http://$gateway;" in conf
    # An OCSP resolver in the server would override the 5 s one there.
    tls = render_stack(parse_config(SWARM), ocsp_stapling=True)[Path("nginx/snippets/tls.conf")]
    assert "resolver " not in tls.replace("# The resolver", "")


def test_the_stack_file_deploys_with_docker_stack_deploy() -> None:
    data = stack(SWARM)
    assert "name" not in data  # `docker stack deploy` refuses the compose top-level name
    services = data["services"]
    assert set(services) == {"postgres", "redis", "api", "gateway", "emulator", "nginx"}
    for name, spec in services.items():
        for key in ("build", "container_name", "depends_on", "profiles", "tmpfs", "restart"):
            assert key not in spec, (name, key)
        assert spec["deploy"]["endpoint_mode"] == "dnsrr", name  # no IPVS needed
        assert spec["deploy"]["restart_policy"]["condition"] == "any"
        assert not any(str(v).startswith("./") for v in spec.get("volumes", [])), name
    for name in ("postgres", "redis"):
        deploy = services[name]["deploy"]
        assert deploy["placement"]["constraints"] == ["node.labels.orbis.data == true"]
        assert deploy["update_config"]["order"] == "stop-first"  # one writer per volume
    assert services["api"]["deploy"]["update_config"]["order"] == "start-first"
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["gateway"]["deploy"]["replicas"] == 3
    nginx = services["nginx"]
    assert nginx["deploy"]["mode"] == "global"
    assert {(p["published"], p["target"], p["mode"]) for p in nginx["ports"]} == {
        (80, 8080, "host"),
        (443, 8443, "host"),
    }
    assert not any("ports" in spec for name, spec in services.items() if name != "nginx")


def test_secrets_are_owned_by_each_service_user_and_named_by_content() -> None:
    data = stack(SWARM)
    postgres = data["services"]["postgres"]
    assert postgres["user"] == "999:999"  # the image's own user owns a fresh volume
    assert postgres["secrets"] == [
        {"source": "postgres_password", "target": "postgres_password", "uid": "999",
         "gid": "999", "mode": 0o400}
    ]  # fmt: skip
    api_secrets = {s["source"]: s for s in data["services"]["api"]["secrets"]}
    assert api_secrets["jwt_keys"]["target"] == "jwt_keys.json"
    assert {s["uid"] for s in api_secrets.values()} == {"10001"}
    assert data["secrets"]["jwt_keys"] == {
        "name": "p_jwt_keys_0123456789",
        "file": "./secrets/jwt_keys.json",
    }
    nginx_configs = {c["target"] for c in data["services"]["nginx"]["configs"]}
    assert "/etc/nginx/nginx.conf" in nginx_configs
    assert "/etc/nginx/snippets/tls.conf" in nginx_configs
    assert "/etc/nginx/tls/server.crt" in nginx_configs


def test_overlay_networks_encrypted_unless_turned_off() -> None:
    on = stack(SWARM)["networks"]
    assert on["internal"]["internal"] is True
    assert all(n["driver"] == "overlay" and n["attachable"] is False for n in on.values())
    assert all(n["driver_opts"] == {"encrypted": "true"} for n in on.values())
    off = stack({**SWARM, "swarm": {"encrypted_overlay": False}})["networks"]
    assert all("driver_opts" not in n for n in off.values())


def test_referrals_and_a_real_model_on_a_swarm() -> None:
    data = stack({**SWARM, "profiles": ["referrals"], "model": {"provider": "gemini"}})
    assert "referrals" in data["services"] and "emulator" not in data["services"]
    assert "egress" in data["networks"]
    assert "tls_ca" not in data["configs"]


def test_object_names_follow_the_file_content(default_install: Path) -> None:
    cfg = parse_config(SWARM)
    first = swarm.object_names(default_install, cfg)
    assert set(first) == set(swarm_objects(cfg))
    assert all(len(name) <= 64 for name in first.values())
    (default_install / "secrets" / "internal_token").write_text("another token\n")
    second = swarm.object_names(default_install, cfg)
    changed = {key for key in first if first[key] != second[key]}
    assert changed == {"internal_token"}
    long = parse_config({**SWARM, "project_name": "a" * 63})
    assert all(len(n) <= 64 for n in swarm.object_names(default_install, long).values())


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_stack_config_accepts_the_stack_file(default_install: Path) -> None:
    cfg = parse_config({**SWARM, "profiles": ["referrals"]})
    path = swarm.write_stack_file(default_install, cfg)
    done = subprocess.run(
        ["docker", "stack", "config", "--compose-file", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=default_install,
    )
    if "unknown command" in done.stderr or "is not a docker command" in done.stderr:
        pytest.skip("this docker CLI has no `stack config`")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["rotate-keys", "--all"],
        ["backup", "create"],
        ["restore", "x.tar"],
        ["drill", "run"],
        ["scale", "gateway=2"],
        ["logs"],
        ["doctor"],
    ],
)
def test_verbs_not_ready_on_a_swarm_say_so_in_one_line(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "orbis.yaml").write_text(yaml.safe_dump({"target": "swarm"}))
    result = invoke(*args, "--dir", str(tmp_path))
    assert result.exit_code == 2, result.output
    verb = " ".join(args[:2] if args[0] in ("backup", "drill") else args[:1])
    assert f"error: {verb} does not run on target swarm yet (issue 18)" in result.output
