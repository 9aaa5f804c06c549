"""Fixtures for the install tests: installs made by the real `orbisctl init`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.install.helpers import Chain, invoke, make_chain

DOMAIN = "voice.example.com"
SOURCE = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once (not editable) for the tests that install it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(SOURCE)],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("orbisvoice-*.whl")
    return wheel


@pytest.fixture
def gemini_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "gemini.key"
    path.write_text("AIzaSyTEST-gemini-key-0123456789abcdefgh\n")
    return path


@pytest.fixture
def operator_chain(tmp_path: Path) -> Chain:
    return make_chain(
        tmp_path / "operator-tls", names=[DOMAIN], ocsp_url="http://ocsp.example.net/"
    )


@pytest.fixture
def default_install(tmp_path: Path) -> Path:
    """`init` with every default: emulator, self-signed TLS, registry images."""
    root = tmp_path / "default"
    result = invoke("init", "--dir", str(root), "--non-interactive")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def full_install(tmp_path: Path, gemini_key_file: Path, operator_chain: Chain) -> Path:
    """gemini, 3 gateway replicas, Cloudflare, referrals, the operator's own certificate.

    The operator writes orbis.yaml first (keys `init` has no flag for), then runs init.
    """
    root = tmp_path / "full"
    root.mkdir()
    (root / "orbis.yaml").write_text(
        yaml.safe_dump(
            {
                "gateway": {"replicas": 3},
                "cloudflare": {"real_ip": True},
                "profiles": ["referrals"],
                "images": {"source": "local", "tag": "1.2.3"},
            }
        )
    )
    result = invoke(
        "init",
        "--dir",
        str(root),
        "--non-interactive",
        "--domain",
        DOMAIN,
        "--model",
        "gemini",
        "--gemini-key-file",
        str(gemini_key_file),
        "--tls",
        "files",
        "--tls-cert",
        str(operator_chain.cert_file),
        "--tls-key",
        str(operator_chain.key_file),
        "--origin",
        "https://shop.example.com",
        "--origin",
        "https://www.example.org",
        "--http-port",
        "8080",
        "--https-port",
        "8443",
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(params=["default", "full"])
def any_install(request: pytest.FixtureRequest) -> Path:
    install: Path = request.getfixturevalue(f"{request.param}_install")
    return install
