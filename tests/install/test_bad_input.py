"""Bad input to init and render: one clear message, the right exit code, nothing written."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orbisctl.core.errors import ExitCode
from tests.install.conftest import DOMAIN
from tests.install.helpers import invoke, make_chain, other_key, snapshot


def init(root: Path, *flags: str) -> tuple[int, str]:
    result = invoke("init", "--dir", str(root), "--non-interactive", *flags)
    return result.exit_code, result.output


def assert_one_line_error(output: str, *fragments: str) -> None:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert errors, output
    for fragment in fragments:
        assert fragment in output, output
    assert "Traceback" not in output


@pytest.fixture
def install_with_config(tmp_path: Path) -> Path:
    root = tmp_path / "orbis"
    root.mkdir()
    return root


def test_malformed_yaml(install_with_config: Path) -> None:
    (install_with_config / "orbis.yaml").write_text("domain: [unclosed\n")
    before = snapshot(install_with_config)
    code, output = init(install_with_config)
    assert code == ExitCode.USAGE
    assert_one_line_error(output, "orbis.yaml is not valid YAML at line 2")
    assert snapshot(install_with_config) == before


def test_unknown_keys_are_each_named(install_with_config: Path) -> None:
    (install_with_config / "orbis.yaml").write_text(
        yaml.safe_dump({"domian": "x.example.com", "gateway": {"replica": 2}})
    )
    before = snapshot(install_with_config)
    code, output = init(install_with_config)
    assert code == ExitCode.USAGE
    assert "orbis.yaml: domian: unknown key" in output
    assert "orbis.yaml: gateway.replica: unknown key" in output
    assert snapshot(install_with_config) == before


def test_invalid_domain_flag(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    code, output = init(root, "--domain", "bad_domain..com")
    assert code == ExitCode.USAGE
    assert_one_line_error(output, "domain:", "is not a valid host name")
    assert not root.exists()


def test_port_out_of_range(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    code, output = init(root, "--https-port", "70000", "--http-port", "0")
    assert code == ExitCode.USAGE
    assert "error: --https-port: Input should be less than or equal to 65535" in output
    assert "error: --http-port: Input should be greater than or equal to 1" in output
    assert "hint: fix --http-port, --https-port; `orbisctl init --help`" in output
    assert "orbis.yaml" not in output
    assert not root.exists()


def test_invalid_values_in_orbis_yaml_are_all_reported(install_with_config: Path) -> None:
    (install_with_config / "orbis.yaml").write_text(
        yaml.safe_dump(
            {
                "ports": {"http": 80, "https": 80},
                "widget": {"allowed_origins": ["shop.example.com"]},
                "limits": {"api": {"memory": "lots"}},
            }
        )
    )
    before = snapshot(install_with_config)
    code, output = init(install_with_config)
    assert code == ExitCode.USAGE
    assert "orbis.yaml: ports: http and https must be different ports" in output
    assert "orbis.yaml: widget.allowed_origins:" in output
    assert "orbis.yaml: limits.api.memory: must be a size like 256m or 1g" in output
    assert snapshot(install_with_config) == before


def test_render_reports_an_invalid_config(default_install: Path) -> None:
    (default_install / "orbis.yaml").write_text("gateway:\n  replicas: 0\n")
    before = snapshot(default_install)
    result = invoke("render", "--dir", str(default_install))
    assert result.exit_code == ExitCode.USAGE
    assert "orbis.yaml: gateway.replicas: Input should be greater than or equal to 1" in (
        result.output
    )
    assert snapshot(default_install) == before


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can write to, root included: a read-only bind mount of itself."""
    directory = tmp_path / "readonly"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    subprocess.run(["mount", "--bind", directory, directory], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", directory, directory], check=True)
        yield directory
    finally:
        subprocess.run(["umount", directory], check=True)


def test_unwritable_directory(readonly_dir: Path) -> None:
    code, output = init(readonly_dir / "orbis")
    assert code == ExitCode.CONFIG
    assert_one_line_error(output, "cannot write to", "readonly")
    assert list(readonly_dir.iterdir()) == []


def test_non_empty_foreign_directory(tmp_path: Path) -> None:
    root = tmp_path / "website"
    root.mkdir()
    (root / "index.html").write_text("<h1>hello</h1>")
    before = snapshot(root)
    code, output = init(root)
    assert code == ExitCode.CONFIG
    assert_one_line_error(output, "is not empty", "not an OrbisVoice install")
    assert snapshot(root) == before


def test_file_instead_of_directory(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    code, output = init(target)
    assert code == ExitCode.CONFIG
    assert_one_line_error(output, "is not a directory")
    assert target.read_text() == "x"


def test_mismatched_certificate_and_key(tmp_path: Path) -> None:
    chain = make_chain(tmp_path / "tls-in", names=[DOMAIN])
    wrong = other_key(tmp_path / "tls-in")
    root = tmp_path / "orbis"
    flags = ["--domain", DOMAIN, "--tls", "files", "--tls-cert", str(chain.cert_file)]
    code, output = init(root, *flags, "--tls-key", str(wrong))
    assert code == ExitCode.USAGE
    assert_one_line_error(output, "does not match the certificate")
    assert not root.exists()


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("expired", "expired on"),
        ("reversed", "out of order"),
        ("other-domain", "does not cover the domain voice.example.com"),
    ],
)
def test_unusable_operator_certificate(tmp_path: Path, problem: str, message: str) -> None:
    names = ["other.example.net"] if problem == "other-domain" else [DOMAIN]
    chain = make_chain(
        tmp_path / "tls-in",
        names=names,
        expired=problem == "expired",
        reverse_order=problem == "reversed",
    )
    root = tmp_path / "orbis"
    code, output = init(
        root,
        "--domain",
        DOMAIN,
        "--tls",
        "files",
        "--tls-cert",
        str(chain.cert_file),
        "--tls-key",
        str(chain.key_file),
    )
    assert_one_line_error(output, message)
    assert code == ExitCode.USAGE
    assert not root.exists()


def test_files_mode_needs_both_files(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    code, output = init(root, "--tls", "files")
    assert code == ExitCode.USAGE
    # The value came from a flag: the flag is named, not orbis.yaml (issue 15, item 9).
    assert output.splitlines() == [
        "error: --tls: mode 'files' needs both cert_file and key_file",
        (
            "  hint: fix --tls (it goes with --tls-cert and --tls-key); `orbisctl init --help` "
            "lists the flags"
        ),
    ]
    assert not root.exists()
    code, output = init(root, "--tls", "files", "--tls-cert", str(tmp_path / "cert.pem"))
    assert "hint: fix --tls, --tls-cert (it goes with --tls-key)" in output
    assert "orbis.yaml" not in output


def test_a_flag_clashing_with_orbis_yaml_is_named(default_install: Path) -> None:
    config = yaml.safe_load((default_install / "orbis.yaml").read_text())
    before = snapshot(default_install)
    code, output = init(default_install, "--https-port", str(config["ports"]["http"]))
    assert code == ExitCode.USAGE
    assert "error: --https-port: http and https must be different ports" in output
    assert "hint: fix --https-port (it goes with --http-port)" in output
    assert snapshot(default_install) == before


def test_gemini_needs_a_key_file(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    code, output = init(root, "--model", "gemini")
    assert code == ExitCode.USAGE
    assert_one_line_error(output, "no Gemini API key was given", "--gemini-key-file")
    assert not root.exists()


def test_unreadable_gemini_key_file(tmp_path: Path) -> None:
    root = tmp_path / "orbis"
    code, output = init(root, "--model", "gemini", "--gemini-key-file", str(tmp_path / "nope"))
    assert code == ExitCode.USAGE
    assert_one_line_error(output, "cannot read the Gemini API key file")
    assert not root.exists()


def test_a_failed_rerun_changes_nothing(default_install: Path) -> None:
    before = snapshot(default_install)
    code, output = init(default_install, "--domain", "-bad-")
    assert code == ExitCode.USAGE
    assert "domain:" in output
    assert snapshot(default_install) == before
