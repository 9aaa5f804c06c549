"""`orbisctl init` and `orbisctl render` through the real CLI, in-process."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from orbisctl.core.errors import ExitCode
from orbisctl.render import RUNTIME_UID
from tests.install.conftest import DOMAIN
from tests.install.helpers import Chain, invoke, secret_values, snapshot

SECRETS = {
    "postgres_user",
    "postgres_password",
    "redis_password",
    "jwt_keys.json",
    "internal_token",
    "backup_key",
    "gemini_api_key",
    "archive_key",
    "pgbackrest.conf",
}
NOBODY = 65534
TLS_FILES = {"ca.crt", "ca.key", "server.crt", "server.key", "emulator.crt", "emulator.key"}


def test_init_writes_the_install_directory(default_install: Path) -> None:
    root = default_install
    assert {p.name for p in root.iterdir()} == {
        "orbis.yaml",
        "secrets",
        "tls",
        "compose.yaml",
        "nginx",
        "pgbackrest",
        "backups",
    }
    assert stat.S_IMODE((root / "secrets").stat().st_mode) == 0o700
    assert {p.name for p in (root / "secrets").iterdir()} == SECRETS
    for path in (root / "secrets").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert {p.name for p in (root / "tls").iterdir()} == TLS_FILES
    for name in ("ca.key", "server.key", "emulator.key"):
        assert stat.S_IMODE((root / "tls" / name).stat().st_mode) == 0o600, name
    # The JWT key ring has exactly one signing key with an id.
    ring = json.loads((root / "secrets" / "jwt_keys.json").read_text())
    assert [key["use"] for key in ring["keys"]] == ["sign"]
    assert ring["keys"][0]["kid"].startswith("k-")
    assert (root / "nginx" / "snippets" / "tls.conf").is_file()


def test_secrets_read_in_containers_belong_to_the_runtime_uid(default_install: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give files to another uid")
    for name in SECRETS - {"backup_key", "archive_key"}:
        assert (default_install / "secrets" / name).stat().st_uid == RUNTIME_UID, name
    assert (default_install / "secrets" / "backup_key").stat().st_uid == 0
    assert (default_install / "secrets" / "archive_key").stat().st_uid == 0
    assert (default_install / "tls" / "server.key").stat().st_uid == RUNTIME_UID
    assert (default_install / "tls" / "ca.key").stat().st_uid == 0


def test_self_signed_certificate_names_the_domain(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    result = invoke("init", "--dir", str(root), "--non-interactive", "--domain", DOMAIN)
    assert result.exit_code == 0, result.output
    chain = x509.load_pem_x509_certificates((root / "tls" / "server.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((root / "tls" / "ca.crt").read_bytes())
    assert chain[1] == ca  # full chain, leaf first
    chain[0].verify_directly_issued_by(ca)
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert DOMAIN in san.get_values_for_type(x509.DNSName)
    emulator = x509.load_pem_x509_certificate((root / "tls" / "emulator.crt").read_bytes())
    emulator_san = emulator.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "emulator" in emulator_san.value.get_values_for_type(x509.DNSName)


def test_init_again_keeps_secrets_and_certificates(default_install: Path) -> None:
    before = snapshot(default_install)
    result = invoke("init", "--dir", str(default_install), "--non-interactive")
    assert result.exit_code == 0, result.output
    assert snapshot(default_install) == before
    for name in SECRETS:
        assert f"kept     secrets/{name}" in result.output
    assert "kept     tls/server.key" in result.output
    assert "created" not in result.output


def test_init_again_with_a_new_flag_keeps_secrets_and_updates_config(
    default_install: Path,
) -> None:
    secrets_before = snapshot(default_install / "secrets")
    cert_before = (default_install / "tls" / "server.crt").read_bytes()
    result = invoke(
        "init", "--dir", str(default_install), "--non-interactive", "--https-port", "9443"
    )
    assert result.exit_code == 0, result.output
    assert snapshot(default_install / "secrets") == secrets_before
    assert (default_install / "tls" / "server.crt").read_bytes() == cert_before
    config = yaml.safe_load((default_install / "orbis.yaml").read_text())
    assert config["ports"]["https"] == 9443
    assert "updated  compose.yaml" in result.output
    assert '"80:8080"' in (default_install / "compose.yaml").read_text()
    assert (
        "return 301 https://$host:9443$request_uri;"
        in (default_install / "nginx" / "nginx.conf").read_text()
    )


def test_operator_files_and_gemini_key_are_installed(
    full_install: Path, operator_chain: Chain, gemini_key_file: Path
) -> None:
    assert (
        full_install / "tls" / "server.crt"
    ).read_bytes() == operator_chain.cert_file.read_bytes()
    assert (
        full_install / "tls" / "server.key"
    ).read_bytes() == operator_chain.key_file.read_bytes()
    assert (full_install / "secrets" / "gemini_api_key").read_text() == gemini_key_file.read_text()
    config = yaml.safe_load((full_install / "orbis.yaml").read_text())
    assert config["model"]["provider"] == "gemini"
    assert config["gateway"]["replicas"] == 3  # the operator's own key survived init
    assert config["widget"]["allowed_origins"] == [
        "https://shop.example.com",
        "https://www.example.org",
    ]
    # The operator's certificate names an OCSP responder: nginx staples.
    assert "ssl_stapling on;" in (full_install / "nginx" / "snippets" / "tls.conf").read_text()


def test_environment_variables_work_like_flags(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    result = invoke(
        "init",
        env={
            "ORBIS_DIR": str(root),
            "ORBIS_NON_INTERACTIVE": "1",
            "ORBIS_DOMAIN": "env.example.com",
            "ORBIS_IMAGE_SOURCE": "local",
        },
    )
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((root / "orbis.yaml").read_text())
    assert config["domain"] == "env.example.com"
    assert config["images"]["source"] == "local"


def test_no_secret_in_rendered_files_or_output(tmp_path: Path, gemini_key_file: Path) -> None:
    root = tmp_path / "orbis"
    outputs = [
        invoke(
            "init",
            "--dir",
            str(root),
            "--non-interactive",
            "--model",
            "gemini",
            "--gemini-key-file",
            str(gemini_key_file),
        ).output
    ]
    outputs.append(invoke("init", "--dir", str(root), "--non-interactive").output)
    outputs.append(invoke("render", "--dir", str(root)).output)
    (root / "compose.yaml").write_text("drifted\n")
    outputs.append(invoke("render", "--dir", str(root), "--check").output)
    values = secret_values(root)
    assert gemini_key_file.read_text().strip() in values
    public = [root / "orbis.yaml", root / "compose.yaml", *sorted((root / "nginx").rglob("*.conf"))]
    public += [root / "tls" / name for name in ("ca.crt", "server.crt", "emulator.crt")]
    for path in public:
        text = path.read_text()
        for value in values:
            assert value not in text, f"a secret appears in {path.name}"
    for text in outputs:
        for value in values:
            assert value not in text, "a secret appears in the CLI output"


def test_render_is_deterministic_and_check_passes(any_install: Path) -> None:
    before = snapshot(any_install)
    result = invoke("render", "--dir", str(any_install))
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
    assert snapshot(any_install) == before
    check = invoke("render", "--dir", str(any_install), "--check")
    assert check.exit_code == 0, check.output


def test_render_check_prints_a_diff_and_fails_on_drift(default_install: Path) -> None:
    compose = default_install / "compose.yaml"
    rendered = compose.read_text()
    compose.write_text(rendered.replace("restart: unless-stopped", "restart: always", 1))
    drifted = compose.read_text()
    result = invoke("render", "--dir", str(default_install), "--check")
    assert result.exit_code == ExitCode.FAILURE
    assert "-    restart: always" in result.output
    assert "+    restart: unless-stopped" in result.output
    assert "differ" in result.output
    assert compose.read_text() == drifted  # --check writes nothing
    fixed = invoke("render", "--dir", str(default_install))
    assert fixed.exit_code == 0
    assert "updated  compose.yaml" in fixed.output
    assert compose.read_text() == rendered


def test_render_follows_orbis_yaml(default_install: Path) -> None:
    config_path = default_install / "orbis.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["gateway"]["replicas"] = 4
    config_path.write_text(yaml.safe_dump(config))
    assert invoke("render", "--dir", str(default_install), "--check").exit_code == 1
    assert invoke("render", "--dir", str(default_install)).exit_code == 0
    compose = yaml.safe_load((default_install / "compose.yaml").read_text())
    assert compose["services"]["gateway"]["deploy"]["replicas"] == 4


def test_render_outside_an_install_is_refused(tmp_path: Path) -> None:
    result = invoke("render", "--dir", str(tmp_path))
    assert result.exit_code == ExitCode.CONFIG
    assert "not an OrbisVoice install" in result.output
    assert list(tmp_path.iterdir()) == []


def test_switching_to_gemini_replaces_only_the_emulators_key(
    default_install: Path, gemini_key_file: Path
) -> None:
    key = default_install / "secrets" / "gemini_api_key"
    assert key.read_text().startswith("emulator-")
    others = snapshot(default_install / "secrets")
    del others["gemini_api_key"]
    without_key = invoke("init", "--dir", str(default_install), "--model", "gemini")
    assert without_key.exit_code == ExitCode.USAGE
    assert "no Gemini API key was given" in without_key.output
    assert key.read_text().startswith("emulator-")
    result = invoke(
        "init",
        "--dir",
        str(default_install),
        "--model",
        "gemini",
        "--gemini-key-file",
        str(gemini_key_file),
    )
    assert result.exit_code == 0, result.output
    assert "replaced secrets/gemini_api_key" in result.output
    assert key.read_text() == gemini_key_file.read_text()
    remaining = snapshot(default_install / "secrets")
    del remaining["gemini_api_key"]
    assert remaining == others
    # A real key is a secret like the others: never replaced, and init says so.
    other_key_file = gemini_key_file.with_name("other.key")
    other_key_file.write_text("AIzaSyOTHER-key-000000000000000000000\n")
    again = invoke("init", "--dir", str(default_install), "--gemini-key-file", str(other_key_file))
    assert again.exit_code == 0, again.output
    assert key.read_text() == gemini_key_file.read_text()
    assert "kept the existing secrets/gemini_api_key" in again.output


def test_a_kept_certificate_that_differs_from_tls_cert_file_is_reported(
    default_install: Path, operator_chain: Chain
) -> None:
    self_signed = (default_install / "tls" / "server.crt").read_bytes()
    result = invoke(
        "init",
        "--dir",
        str(default_install),
        "--domain",
        DOMAIN,
        "--tls",
        "files",
        "--tls-cert",
        str(operator_chain.cert_file),
        "--tls-key",
        str(operator_chain.key_file),
    )
    assert result.exit_code == 0, result.output
    assert (default_install / "tls" / "server.crt").read_bytes() == self_signed
    assert "differs from tls.cert_file" in result.output
    assert f"does not cover the domain {DOMAIN}" in result.output
    # After removing the kept files, init installs the operator's certificate.
    (default_install / "tls" / "server.crt").unlink()
    (default_install / "tls" / "server.key").unlink()
    again = invoke("init", "--dir", str(default_install))
    assert again.exit_code == 0, again.output
    installed = (default_install / "tls" / "server.crt").read_bytes()
    assert installed == operator_chain.cert_file.read_bytes()
    assert "warning" not in again.output


def test_init_as_an_ordinary_user_keeps_ownership_and_says_what_to_chown() -> None:
    """Without root, secrets stay the user's own (mode 0600) and init says what to chown.

    The test process takes the effective uid of `nobody` around the in-process run (root can
    switch back: its real and saved uid stay 0).
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    base = Path(tempfile.mkdtemp(prefix="orbis-nonroot-"))
    try:
        base.chmod(0o777)
        root = base / "orbis"
        os.setegid(NOBODY)
        os.seteuid(NOBODY)
        try:
            result = invoke("init", "--dir", str(root), "--non-interactive")
        finally:
            os.seteuid(0)
            os.setegid(0)
        assert result.exit_code == 0, result.output
        assert "not running as root" in result.output
        assert "chown 10001:10001" in result.output
        for path in (root / "secrets").iterdir():
            assert path.stat().st_uid == NOBODY, path.name
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    finally:
        shutil.rmtree(base)
