"""What the rendered nginx's /api/ rate limits let through from one address: run in a private
mount and network namespace like nginx_probe.py, with the api stand-in (which never limits)
behind it, so every 429 is nginx's. Prints, as JSON, the statuses each scenario got.

Usage: python -m tests.install.nginx_limits_probe INSTALL_DIR WORK_DIR DOMAIN
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from orbisctl.render import NGINX_HTTPS_PORT
from tests.install.helpers import SERVICE_NAMES
from tests.install.nginx_probe import running_nginx, start_upstreams, tls_context

REQUESTS = 120
CUSTOMERS = 6  # tokens behind one address (a NAT), REQUESTS / CUSTOMERS each
INVENTED = 700  # requests with a different made-up token each


async def statuses(
    http: aiohttp.ClientSession, url: str, tokens: list[str | None]
) -> dict[str, int]:
    counted: Counter[str] = Counter()
    for token in tokens:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with http.get(url, headers=headers) as response:
            await response.read()
            counted[str(response.status)] += 1
    return dict(counted)


async def probe(install: Path, domain: str) -> dict[str, Any]:
    runners = await start_upstreams()
    url = f"https://{domain}:{NGINX_HTTPS_PORT}/api/v1/agents"
    connector = aiohttp.TCPConnector(
        ssl=tls_context(install / "tls" / "ca.crt"), resolver=aiohttp.ThreadedResolver()
    )
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            return {
                "customers_behind_one_address": await statuses(
                    http, url, [f"customer-{n % CUSTOMERS}" for n in range(REQUESTS)]
                ),
                "without_credentials": await statuses(http, url, [None] * REQUESTS),
                "one_token": await statuses(http, url, ["busy-customer"] * REQUESTS),
                "invented_tokens": await statuses(
                    http, url, [f"invented-{n}" for n in range(INVENTED)]
                ),
            }
    finally:
        for runner in runners:
            await runner.cleanup()


def main() -> None:
    install, work, domain = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    with running_nginx(install, work, f"127.0.0.1 localhost {domain} {SERVICE_NAMES}\n"):
        found = asyncio.run(probe(install, domain))
    print(json.dumps(found))


if __name__ == "__main__":
    main()
