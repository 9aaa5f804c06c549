"""Outside judges of the rendered files: sslyze's Mozilla intermediate check against the
rendered nginx running with the install's certificate, and compose-lint on compose.yaml.

Both are PyPI packages in the test extras, run as this Python's modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orbisctl import __version__, image_digests, tls
from tests.install.helpers import invoke, run_probe

# Every MEDIUM compose-lint may report on a rendered file, per (rule, service), with the reason
# it stays. Anything else it reports, or anything above MEDIUM, fails the test.
_RUNTIME_SERVICES = ("volume-init", "migrate", "api", "gateway", "emulator", "referrals")
COMPOSE_LINT_ALLOWED: dict[tuple[str, str], str] = {
    **{
        ("CL-0019", service): "orbisvoice/runtime is built on this host (`orbisctl images "
        "build`) and never pushed: there is no registry digest to pin"
        for service in _RUNTIME_SERVICES
    },
    ("CL-0019", "nginx"): "orbisvoice/nginx is built on this host FROM the pinned upstream "
    "nginx: no registry digest exists",
    ("CL-0019", "postgres"): "orbisvoice/postgres is built on this host FROM the pinned "
    "upstream postgres (pgBackRest added): no registry digest exists",
    ("CL-0018", "volume-init"): "the one-shot chown of the data volumes needs root; why there "
    "is no other way is written above it in templates/compose/compose.yaml.j2",
    ("CL-0005", "nginx"): "nginx is the appliance's public entry: publishing 80/443 on every "
    "address is the default on purpose; ports.bind_address narrows it",
}
# Local builds (images.source: local) also build redis here: a tag only.
COMPOSE_LINT_ALLOWED_LOCAL: dict[tuple[str, str], str] = {
    ("CL-0019", "redis"): "images.source local: built on this host from Debian, no registry",
}
# With no digest in image_digests.json (none can be fetched offline, and none is made up),
# registry mode pins postgres and redis by tag: that is the state of the committed file.
COMPOSE_LINT_ALLOWED_REGISTRY_TAGS: dict[tuple[str, str], str] = {
    ("CL-0019", service): "orbisctl/image_digests.json has no digest for it yet: "
    "scripts/refresh-image-digests needs registry access"
    for service in ("redis",)
    if image_digests.pinned(service) == image_digests.tag(service)  # type: ignore[arg-type]
}


# Test data only, never a pin: shows what registry mode renders once the file has digests.
EXAMPLE_DIGEST = "sha256:" + "0123456789abcdef" * 4


def compose_lint(install: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "compose_lint", "check", "--format", "json", "compose.yaml"],
        cwd=install,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout)["findings"]
    return findings


def unexplained(findings: list[dict[str, Any]], allowed: dict[tuple[str, str], str]) -> list[str]:
    return [
        f"{item['severity']} {item['rule_id']} {item['service']}: {item['message']}"
        for item in findings
        if item["severity"] != "medium" or (item["rule_id"], item["service"]) not in allowed
    ]


def _registry_install(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    entries = {
        name: {"ref": image_digests.tag(name), "digest": EXAMPLE_DIGEST}
        for name in ("postgres", "redis", "python", "nginx")
    }
    monkeypatch.setattr(image_digests, "_entries", lambda: entries)
    root.mkdir()
    (root / "orbis.yaml").write_text(yaml.safe_dump({"images": {"source": "registry"}}))
    result = invoke("init", "--dir", str(root), "--non-interactive", "--domain", "voice.test")
    assert result.exit_code == 0, result.output
    return root


def test_compose_lint_finds_nothing_unexplained_in_the_default_install(
    default_install: Path,
) -> None:
    findings = compose_lint(default_install)
    assert unexplained(findings, COMPOSE_LINT_ALLOWED | COMPOSE_LINT_ALLOWED_REGISTRY_TAGS) == []


def test_compose_lint_finds_nothing_unexplained_in_a_local_build_install(
    full_install: Path,
) -> None:
    findings = compose_lint(full_install)
    assert unexplained(findings, COMPOSE_LINT_ALLOWED | COMPOSE_LINT_ALLOWED_LOCAL) == []


def test_registry_mode_pins_upstream_images_by_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install = _registry_install(tmp_path / "registry", monkeypatch)
    services = yaml.safe_load((install / "compose.yaml").read_text())["services"]
    assert services["redis"]["image"] == f"redis:7.4-alpine@{EXAMPLE_DIGEST}"
    # Ours, built FROM the pinned upstream (pgBackRest added).
    assert services["postgres"]["image"] == f"orbisvoice/postgres:15-{__version__}"
    assert image_digests.pinned("postgres") == f"postgres:15.10-alpine@{EXAMPLE_DIGEST}"
    findings = compose_lint(install)
    assert unexplained(findings, COMPOSE_LINT_ALLOWED) == []
    assert not [f for f in findings if f["service"] == "redis"]


def test_the_committed_digests_are_digests_or_absent() -> None:
    """A digest is written only by scripts/refresh-image-digests, from a registry's answer."""
    document = json.loads(image_digests.DIGESTS_FILE.read_text())
    for entry in document["images"].values():
        digest = entry["digest"]
        assert digest is None or (digest.startswith("sha256:") and len(digest) == 71)


def test_the_refresh_script_fails_in_one_line_without_a_registry() -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "refresh-image-digests"
    before = image_digests.DIGESTS_FILE.read_bytes()
    result = subprocess.run(
        [sys.executable, str(script), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        # An address nothing listens on: the same answer as an offline machine, at once.
        env={"https_proxy": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot get the digest of postgres:15.10-alpine: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert image_digests.DIGESTS_FILE.read_bytes() == before


@pytest.mark.integration
def test_sslyze_mozilla_intermediate_passes_with_the_install_ca_trusted(
    default_install: Path, tmp_path: Path
) -> None:
    found = run_probe(
        "tests.install.sslyze_probe", str(default_install), str(tmp_path), "localhost"
    )
    assert "localhost:8443: OK - Compliant" in found["output"], found["output"][-3000:]
    assert found["returncode"] == 0
    (server,) = found["json"]["server_scan_results"]
    deployment = server["scan_result"]["certificate_info"]["result"]["certificate_deployments"][0]
    trust = {
        r["trust_store"]["name"]: r["was_validation_successful"]
        for r in deployment["path_validation_results"]
    }
    assert trust["Supplied CA file"] is True


@pytest.mark.integration
def test_sslyze_check_fails_on_an_825_day_certificate(
    default_install: Path, tmp_path: Path
) -> None:
    """The judge above can fail: the server certificate of earlier releases is refused."""
    ca = tls.Pem(
        (default_install / "tls" / "ca.crt").read_bytes(),
        (default_install / "tls" / "ca.key").read_bytes(),
    )
    server = tls.issue_server_cert(
        ca,
        tls.server_names("localhost"),
        days=825,
        key=(default_install / "tls" / "server.key").read_bytes(),
    )
    (default_install / "tls" / "server.crt").write_bytes(server.cert)
    found = run_probe(
        "tests.install.sslyze_probe", str(default_install), str(tmp_path), "localhost"
    )
    assert found["returncode"] != 0
    assert "maximum_certificate_lifespan" in found["output"]
