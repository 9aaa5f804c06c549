"""The rendered files, checked by the real tools: Debian's nginx and Compose v2.

nginx resolves upstream host names (api, gateway, ...) when it loads its config, and those
names exist only on the stack's Docker network. Rather than render a test variant, the test
runs `nginx -t` on the exact rendered files inside a private mount namespace whose
/etc/hosts maps the service names to the loopback (`unshare --mount` + a bind mount).
The container's /etc/nginx layout is rebuilt from symlinks, because the config's relative
paths (snippets/, tls/, mime.types) resolve against the directory of nginx.conf. The live test
adds a private network namespace, so the container's fixed ports are free (nginx_probe.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.install.helpers import SERVICE_NAMES, nginx_conf_dir, run_probe


def run_nginx_test(install: Path, work: Path) -> subprocess.CompletedProcess[str]:
    conf = nginx_conf_dir(install, work)
    hosts = work / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {SERVICE_NAMES}\n")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    script = (
        f'mount --bind "{hosts}" /etc/hosts && exec "{nginx}" -t -e stderr '
        f'-p "{work}/" -c "{conf}/nginx.conf" -g "pid {work}/nginx.pid;"'
    )
    unshare = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    return subprocess.run(
        [*unshare, "sh", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.integration
def test_nginx_accepts_the_rendered_config(any_install: Path, tmp_path: Path) -> None:
    result = run_nginx_test(any_install, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.mark.integration
def test_nginx_check_fails_on_a_broken_config(default_install: Path, tmp_path: Path) -> None:
    """The check above can fail: a config naming an unknown upstream host is refused."""
    conf = default_install / "nginx" / "nginx.conf"
    conf.write_text(conf.read_text().replace("server api:", "server no-such-service:"))
    result = run_nginx_test(default_install, tmp_path)
    assert result.returncode != 0
    assert "no-such-service" in result.stderr


def compose_config(install: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", "-f", str(install / "compose.yaml"), *extra, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=install,
    )


def test_compose_accepts_the_rendered_file(any_install: Path) -> None:
    result = compose_config(any_install)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warnings either


def test_compose_accepts_the_referrals_profile(full_install: Path) -> None:
    result = compose_config(full_install, "--profile", "referrals")
    assert result.returncode == 0, result.stderr


def test_compose_check_fails_on_a_broken_file(default_install: Path) -> None:
    compose = default_install / "compose.yaml"
    compose.write_text(compose.read_text().replace("read_only: true", "read_only: maybe", 1))
    result = compose_config(default_install)
    assert result.returncode != 0


@pytest.mark.integration
def test_nginx_serves_the_rendered_config(default_install: Path, tmp_path: Path) -> None:
    """The rendered config, unchanged, running: redirects, TLS, headers, proxying, limits."""
    from tests.install.nginx_probe import WS_TOKEN

    found = run_probe("tests.install.nginx_probe", str(default_install), str(tmp_path), "localhost")
    assert found["redirect"] == [301, "https://localhost/dashboard/?x=1"]
    assert found["healthz"] == [200, "ok\n"]
    headers = found["healthz_headers"]
    assert headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Server"] == "nginx"  # server_tokens off: no version
    status, echoed = found["api"]
    assert status == 200
    assert echoed["path"] == "/api/v1/echo?q=1"
    assert echoed["headers"]["X-Forwarded-Proto"] == "https"
    assert echoed["headers"]["X-Real-IP"] == "127.0.0.1"
    assert found["api_headers"]["X-Frame-Options"] == "DENY"
    assert found["websocket"] == "echo:hello"
    # login: 10/minute with a burst of 5, then 429 (not nginx's default 503).
    assert found["login_statuses"][:6] == [200] * 6
    assert 429 in found["login_statuses"]
    assert 503 not in found["login_statuses"]
    assert found["tls13"][0] == "TLSv1.3"
    assert found["tls12"][0] == "TLSv1.2"
    assert found["tls12"][1].startswith("ECDHE-")
    assert "/ws/call" in found["access_log"]
    assert WS_TOKEN not in found["access_log"]
