"""render_stack: pure, deterministic, strict about undefined variables; the nginx rules."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest
import yaml

from orbisctl import __version__
from orbisctl.core.config import OrbisConfig, parse_config
from orbisctl.render import CLOUDFLARE_RANGES, image_refs, render_stack
from orbisctl.templating import environment, template_root
from runtime.api.proxies import parse_entries

FULL = {
    "domain": "voice.example.com",
    "model": {"provider": "gemini"},
    "gateway": {"replicas": 3, "max_call_seconds": 900},
    "cloudflare": {"real_ip": True},
    "profiles": ["referrals"],
    "ports": {"https": 8443},
}


def nginx_text(files: dict[Path, str]) -> str:
    return "\n".join(text for path, text in files.items() if path.parts[0] == "nginx")


def test_an_undefined_variable_is_an_error() -> None:
    with pytest.raises(jinja2.UndefinedError, match="no_such_variable"):
        environment().from_string("{{ no_such_variable }}").render()


def test_every_template_renders_for_every_fixture() -> None:
    for data in ({}, FULL):
        files = render_stack(parse_config(data))
        assert {str(path) for path in files} >= {"compose.yaml", "nginx/nginx.conf"}
        assert all(text.endswith("\n") for text in files.values())


def test_rendering_is_byte_identical_and_timeless() -> None:
    for data in ({}, FULL):
        first = render_stack(parse_config(data))
        assert render_stack(parse_config(data)) == first
        for text in first.values():
            assert not re.search(r"20[0-9]{2}-[01][0-9]-[0-3][0-9]", text)


def test_templates_come_from_the_source_tree_in_a_checkout() -> None:
    assert (template_root() / "compose" / "compose.yaml.j2").is_file()


def test_image_references_by_source() -> None:
    registry = image_refs(OrbisConfig())
    assert registry.redis.startswith("redis:7")
    # nginx and postgres are always our images: they carry the widget and dashboard files,
    # and pgBackRest.
    assert registry.nginx == f"orbisvoice/nginx:{__version__}"
    assert registry.postgres == f"orbisvoice/postgres:15-{__version__}"
    local = image_refs(parse_config({"images": {"source": "local", "tag": "9.9"}}))
    assert (local.postgres, local.redis, local.nginx, local.runtime) == (
        "orbisvoice/postgres:15-9.9",
        "orbisvoice/redis:7-9.9",
        "orbisvoice/nginx:9.9",
        "orbisvoice/runtime:9.9",
    )


def test_tls_profile_and_headers() -> None:
    files = render_stack(OrbisConfig())
    tls = files[Path("nginx/snippets/tls.conf")]
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in tls
    assert "ssl_session_tickets off;" in tls
    assert "ssl_prefer_server_ciphers off;" in tls
    ciphers = re.search(r"ssl_ciphers (\S+);", tls)
    assert ciphers
    assert all(c.startswith("ECDHE-") for c in ciphers.group(1).split(":"))
    assert "ssl_stapling" not in tls  # self-signed: nobody to ask
    assert (
        "ssl_stapling on;"
        in render_stack(OrbisConfig(), ocsp_stapling=True)[Path("nginx/snippets/tls.conf")]
    )
    headers = files[Path("nginx/snippets/security_headers.conf")]
    assert 'Strict-Transport-Security "max-age=63072000; includeSubDomains" always' in headers
    # A location adding its own headers drops the server's: it must include the snippet again.
    conf = files[Path("nginx/nginx.conf")]
    assert "include snippets/security_headers.conf;" in conf
    for block in re.findall(r"location [^{]*\{[^}]*\}", conf):
        if "add_header" in block:
            assert "include snippets/security_headers.conf;" in block, block


def test_routing_and_limits() -> None:
    conf = render_stack(parse_config(FULL))[Path("nginx/nginx.conf")]
    assert re.search(r"upstream gateway \{\s+least_conn;\s+server gateway:4001 max_fails=0;", conf)
    assert "proxy_next_upstream error timeout http_503;" in conf
    assert "location /api/ {" in conf
    assert "location /ws/ {" in conf
    assert "location /api/v1/referrals {" in conf
    assert "limit_req_status 429;" in conf
    # /api/ without credentials per address; with them per credential (the API's per-token
    # limit), under a per-address cap of 10 tokens' worth.
    assert "limit_req_zone $api_public_key zone=public:10m rate=120r/m;" in conf
    assert "limit_req_zone $api_token_key zone=authenticated:20m rate=600r/m;" in conf
    assert (
        "limit_req_zone $api_credentialed_address zone=authenticated_address:10m rate=6000r/m;"
        in conf
    )
    api = conf.split("location /api/ {", 1)[1].split("}", 1)[0]
    assert "limit_req zone=authenticated burst=600 nodelay;" in api
    assert "client_max_body_size 1m;" in conf
    assert "return 301 https://$host:8443$request_uri;" in conf
    # Widget session tokens travel in the WebSocket URL's query: never log it.
    assert "$request " not in conf and '$request"' not in conf
    assert "referrals" not in render_stack(OrbisConfig())[Path("nginx/nginx.conf")]


def test_websocket_tunnels_outlive_the_longest_call() -> None:
    ws = render_stack(parse_config(FULL))[Path("nginx/snippets/websocket.conf")]
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    assert "proxy_buffering off;" in ws
    assert "proxy_read_timeout 960s;" in ws  # max_call_seconds 900 + 60


def test_cloudflare_real_ip_only_when_on() -> None:
    on = render_stack(parse_config(FULL))[Path("nginx/snippets/real_ip.conf")]
    assert "real_ip_header CF-Connecting-IP;" in on
    assert on.count("set_real_ip_from") == len(CLOUDFLARE_RANGES)
    off = render_stack(OrbisConfig())[Path("nginx/snippets/real_ip.conf")]
    assert "set_real_ip_from" not in off


def test_the_api_trusts_forwarded_addresses_from_nginx_only() -> None:
    """Every API-image service (migrate validates the same settings) believes X-Real-IP from
    nginx alone, plus Cloudflare's edges when cloudflare.real_ip is on."""
    off = render_stack(parse_config({**FULL, "cloudflare": {"real_ip": False}}))
    compose = yaml.safe_load(off[Path("compose.yaml")])
    for service in ("migrate", "api", "referrals"):
        assert compose["services"][service]["environment"]["ORBIS_TRUSTED_PROXIES"] == "nginx"
    on = yaml.safe_load(render_stack(parse_config(FULL))[Path("compose.yaml")])
    trusted = on["services"]["api"]["environment"]["ORBIS_TRUSTED_PROXIES"].split(",")
    assert trusted == ["nginx", *CLOUDFLARE_RANGES]
    # What orbisctl renders is what the API accepts (it refuses to start otherwise).
    assert parse_entries(trusted)[1] == ("nginx",)
