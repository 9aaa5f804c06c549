"""`render` + `up` brings a changed nginx config to the running nginx (issue 15 item 10: after
rate_limits.public_per_minute was raised, nginx kept serving the old bind-mounted nginx.conf
until restarted by hand). Real stack: local images, free ports, its own project."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from orbisctl.core import engine
from orbisctl.core.errors import EngineError
from orbisctl.core.install import open_install
from orbisctl.nginx import running_nginx
from tests.stack.conftest import invoke

pytestmark = pytest.mark.docker

REQUESTS = 100  # nginx's public zone: a burst of 60 at 120 a minute


def statuses(root: Path) -> Counter[int]:
    config = yaml.safe_load((root / "orbis.yaml").read_text())
    url = f"https://localhost:{config['ports']['https']}/api/v1/"
    counted: Counter[int] = Counter()
    with requests.Session() as http:
        for _ in range(REQUESTS):
            counted[http.get(url, verify=str(root / "tls" / "ca.crt"), timeout=10).status_code] += 1
    return counted


@pytest.fixture
def running(install: Path) -> Iterator[Path]:
    try:
        engine.connect()
    except EngineError as exc:
        pytest.skip(str(exc))
    try:
        result = invoke("up", "--dir", str(install), "--timeout", "300")
        assert result.exit_code == 0, result.output
        yield install
    finally:
        invoke("down", "--dir", str(install), "--volumes", "--yes")


def test_a_rerendered_nginx_conf_reaches_the_running_nginx(running: Path) -> None:
    root = running
    assert statuses(root)[429] >= 30  # 120 a minute: the burst runs out
    nginx = running_nginx(open_install(root), engine.connect())
    config = yaml.safe_load((root / "orbis.yaml").read_text())
    config["rate_limits"]["public_per_minute"] = 100_000
    (root / "orbis.yaml").write_text(yaml.safe_dump(config))
    assert invoke("render", "--dir", str(root)).exit_code == 0
    result = invoke("up", "--dir", str(root), "--timeout", "300")
    assert result.exit_code == 0, result.output
    assert "nginx reloaded: nginx/nginx.conf changed" in result.output
    # The same nginx (its calls kept), now on the new limits (the API's follow its env).
    assert [c.id for c in running_nginx(open_install(root), engine.connect())] == [
        c.id for c in nginx
    ]
    after = statuses(root)
    assert after[429] == 0, after  # (an image older than GET /api/v1/ answers 404)
