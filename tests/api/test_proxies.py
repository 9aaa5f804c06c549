"""Which peers' X-Real-IP the API believes: only the configured proxies' (addresses, networks,
host names resolved for real), and how a Cloudflare chain is followed."""

from __future__ import annotations

import pytest

from runtime.api.proxies import TrustedProxies, parse_entries
from runtime.api.settings import ApiSettings
from runtime.common.settings import SettingsError

CLOUDFLARE_EDGE = "198.41.128.0/17"


async def test_no_proxies_configured_means_every_header_is_ignored() -> None:
    proxies = TrustedProxies(())
    assert await proxies.client_address("127.0.0.1", {"X-Real-IP": "203.0.113.9"}) == "127.0.0.1"
    assert await proxies.client_address("10.0.0.5", {"X-Real-IP": "203.0.113.9"}) == "10.0.0.5"


async def test_only_the_configured_peer_is_believed() -> None:
    proxies = TrustedProxies(("172.18.0.7",))
    forged = {"X-Real-IP": "203.0.113.9"}
    assert await proxies.client_address("172.18.0.7", forged) == "203.0.113.9"
    # Another container on the same private network is counted by its own address.
    assert await proxies.client_address("172.18.0.8", forged) == "172.18.0.8"
    # A proxy's header that is not an address leaves the proxy's own.
    assert await proxies.client_address("172.18.0.7", {"X-Real-IP": "x"}) == "172.18.0.7"
    assert await proxies.client_address("::ffff:172.18.0.7", forged) == "203.0.113.9"


async def test_a_host_name_is_resolved() -> None:
    proxies = TrustedProxies(("localhost",))
    assert await proxies.trusts("127.0.0.1")
    assert not await proxies.trusts("127.0.0.2")
    assert await proxies.client_address("127.0.0.1", {"X-Real-IP": "203.0.113.9"}) == "203.0.113.9"


async def test_an_unresolvable_name_trusts_nobody() -> None:
    proxies = TrustedProxies(("no-such-proxy.invalid",))
    assert not await proxies.trusts("127.0.0.1")


async def test_a_cloudflare_edge_nginx_did_not_resolve_is_followed_to_the_visitor() -> None:
    proxies = TrustedProxies(("127.0.0.1", CLOUDFLARE_EDGE))
    headers = {
        "X-Real-IP": "198.41.128.5",
        "X-Forwarded-For": "10.9.9.9, 203.0.113.9, 198.41.128.5",
    }
    # The nearest address that is not a proxy; what the visitor put further left is not used.
    assert await proxies.client_address("127.0.0.1", headers) == "203.0.113.9"
    garbage = {"X-Real-IP": "198.41.128.5", "X-Forwarded-For": "nonsense, 198.41.128.5"}
    assert await proxies.client_address("127.0.0.1", garbage) == "198.41.128.5"


def test_entries_are_checked_when_the_settings_load() -> None:
    assert parse_entries(["nginx", "10.0.0.0/8", "2606:4700::/32", "192.0.2.1"])[1] == ("nginx",)
    env = {
        "ORBIS_PUBLIC_URL": "https://voice.test",
        "ORBIS_DATABASE_URL": "postgresql://u@h/db",
        "ORBIS_REDIS_URL": "redis://h",
        "ORBIS_JWT_KEYS_FILE": "/nonexistent",
        "ORBIS_TRUSTED_PROXIES": "nginx, 10.0.0.0/8",
    }
    for bad in ("10.0.0.0/33", "not a host!", "300.1.2.3"):
        with pytest.raises(SettingsError, match="ORBIS_TRUSTED_PROXIES"):
            ApiSettings.from_env({**env, "ORBIS_TRUSTED_PROXIES": bad})
