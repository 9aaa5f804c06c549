"""The hardening properties of the rendered compose.yaml, service by service."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from orbisctl.installer import derived_project_name
from orbisctl.render import RUNTIME_UID

# One-shot services: they exit, so no healthcheck and no restart.
ONE_SHOT = {"migrate", "volume-init"}


def services(install: Path) -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((install / "compose.yaml").read_text())
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def test_every_service_is_locked_down(any_install: Path) -> None:
    for name, service in services(any_install).items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        limits = service["deploy"]["resources"]["limits"]
        assert re.fullmatch(r"[1-9][0-9]*[kmg]", limits["memory"]), name
        assert limits["pids"] >= 16, name
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert logging["options"] == {"max-size": "10m", "max-file": "5"}, name


def test_only_volume_init_runs_as_root_and_only_to_chown(any_install: Path) -> None:
    for name, service in services(any_install).items():
        if name == "volume-init":
            assert service["user"] == "0:0"
            assert service["cap_add"] == ["CHOWN"]
            assert service["network_mode"] == "none"
            assert service["entrypoint"][0] == "chown"
        else:
            assert service["user"] == f"{RUNTIME_UID}:{RUNTIME_UID}", name
            assert "cap_add" not in service, name


def test_long_running_services_restart_and_report_health(any_install: Path) -> None:
    for name, service in services(any_install).items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
            assert "healthcheck" not in service, name
            continue
        assert service["restart"] == "unless-stopped", name
        check = service["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["start_period"].endswith("s"), name
        assert check["interval"] and check["timeout"] and check["retries"], name


def test_only_nginx_publishes_ports(any_install: Path) -> None:
    compose = yaml.safe_load((any_install / "compose.yaml").read_text())
    publishing = {name for name, service in compose["services"].items() if "ports" in service}
    assert publishing == {"nginx"}
    ports = compose["services"]["nginx"]["ports"]
    assert all(port.endswith((":8080", ":8443")) for port in ports)
    config = yaml.safe_load((any_install / "orbis.yaml").read_text())
    assert ports == [f"{config['ports']['http']}:8080", f"{config['ports']['https']}:8443"]


def test_secrets_are_files_never_environment_values(any_install: Path) -> None:
    compose = yaml.safe_load((any_install / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            secretish = re.search(r"PASSWORD|TOKEN|SECRET|API_KEY|KEYS?$", key)
            if secretish:
                assert key.endswith("_FILE"), f"{name}: {key} holds a secret value"
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}={value}"
        for item in service.get("secrets", []):
            source = item if isinstance(item, str) else item["source"]
            assert source in compose["secrets"], f"{name}: unknown secret {source}"
    for name, secret in compose["secrets"].items():
        assert secret["file"].startswith(("./secrets/", "./tls/")), name


def test_internal_network_and_egress_only_for_a_real_model(
    default_install: Path, full_install: Path
) -> None:
    default = yaml.safe_load((default_install / "compose.yaml").read_text())
    full = yaml.safe_load((full_install / "compose.yaml").read_text())
    for compose in (default, full):
        assert compose["networks"]["internal"] == {"internal": True}
        for name in ("postgres", "redis", "api", "migrate"):
            assert compose["services"][name]["networks"] == ["internal"], name
        assert compose["services"]["nginx"]["networks"] == ["edge", "internal"]
    # The emulator keeps the gateway off the internet; gemini needs the way out.
    assert default["services"]["gateway"]["networks"] == ["internal"]
    assert "egress" not in default["networks"]
    assert full["services"]["gateway"]["networks"] == ["internal", "egress"]
    assert "emulator" in default["services"]
    assert "emulator" not in full["services"]


def test_state_lives_in_named_volumes(any_install: Path) -> None:
    compose = yaml.safe_load((any_install / "compose.yaml").read_text())
    assert set(compose["volumes"]) == {"postgres_data", "redis_data", "pgbackrest_data"}
    assert "postgres_data:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    assert "pgbackrest_data:/var/lib/pgbackrest" in compose["services"]["postgres"]["volumes"]
    assert "redis_data:/data" in compose["services"]["redis"]["volumes"]
    # Everything else a service mounts from the host is read-only config or certificates.
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert volume.endswith(":ro"), f"{name}: {volume}"


def test_redis_and_postgres_settings(any_install: Path) -> None:
    compose = yaml.safe_load((any_install / "compose.yaml").read_text())
    postgres = compose["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_USER"] == "orbis"
    assert postgres["POSTGRES_DB"] == "orbis"
    assert postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    command = compose["services"]["redis"]["command"][0]
    assert "user default off" in command
    assert "--appendonly yes" in command
    assert "/run/secrets/redis_password" in command


def test_gateway_replicas_and_referrals_profile(full_install: Path) -> None:
    compose = yaml.safe_load((full_install / "compose.yaml").read_text())
    assert compose["services"]["gateway"]["deploy"]["replicas"] == 3
    referrals = compose["services"]["referrals"]
    assert referrals["profiles"] == ["referrals"]
    assert referrals["environment"]["ORBIS_REFERRALS_ENABLED"] == "true"
    assert compose["services"]["api"]["environment"]["ORBIS_REFERRALS_ENABLED"] == "false"
    # orbis.yaml named no project: init derived one of this install's own.
    assert compose["name"] == derived_project_name(full_install) == f"full-{compose['name'][-8:]}"
    images = {service["image"] for service in compose["services"].values()}
    assert images == {
        "orbisvoice/runtime:1.2.3",
        "orbisvoice/postgres:15-1.2.3",
        "orbisvoice/redis:7-1.2.3",
        "orbisvoice/nginx:1.2.3",
    }
