"""nginx's /api/ limits from one address (issue 15 item 11: the per-address `public` zone
covered authenticated calls too, so customers behind one NAT were throttled together at 120
a minute instead of 600 a minute per token). Requests with credentials are limited per
credential, requests without per address, and invented tokens stop at a per-address cap."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.install.helpers import invoke, run_probe

pytestmark = pytest.mark.integration

DOMAIN = "voice.example.com"
PER_TOKEN = 60  # a minute's burst of 60: 120 requests of one token are half refused


@pytest.fixture
def limited_install(tmp_path: Path) -> Path:
    root = tmp_path / "limits"
    root.mkdir()
    (root / "orbis.yaml").write_text(
        yaml.safe_dump({"rate_limits": {"authenticated_per_minute": PER_TOKEN}})
    )
    result = invoke("init", "--dir", str(root), "--non-interactive", "--domain", DOMAIN)
    assert result.exit_code == 0, result.output
    return root


def test_each_kind_of_api_traffic_gets_its_own_limit(limited_install: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    found = run_probe("tests.install.nginx_limits_probe", str(limited_install), str(work), DOMAIN)
    # Six customers behind one address, 20 requests each at once: none is refused.
    assert found["customers_behind_one_address"] == {"200": 120}, found
    # Without credentials, per address: 120 a minute, a burst of 60.
    anonymous = found["without_credentials"]
    assert 55 <= anonymous["200"] <= 70 and anonymous["429"] >= 50, found
    # One token: a minute's worth (60) at once, then refused.
    one = found["one_token"]
    assert 55 <= one["200"] <= 70 and one["429"] >= 50, found
    # A different invented token on every request: every request with credentials from this
    # address, those above included, stops at the per-address cap (10 tokens' worth, a burst
    # of 600; refused requests do not count), plus what refills (10/s) while the probe runs.
    invented = found["invented_tokens"]
    accepted = 120 + one["200"] + invented["200"]
    assert 600 <= accepted <= 640 and invented["429"] >= 150, found
