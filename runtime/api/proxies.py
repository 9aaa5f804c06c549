"""Whose word the API takes for a client's address: only the configured proxies'.

`ORBIS_TRUSTED_PROXIES` lists addresses, networks (CIDR) and host names. orbisctl renders
`nginx` (the compose service: its address on the internal network is nginx's own, and changes
when the container is recreated) and, with `cloudflare.real_ip`, Cloudflare's edge ranges.
Any other peer, a container on the compose network included, is counted by its own address
whatever `X-Real-IP` it sends.

Host names are resolved when first needed, again every `REFRESH_SECONDS`, and again (at most
once a second) when a peer is not among the addresses last resolved: a recreated nginx is
recognised on its first request, and an untrusted peer cannot make the API resolve more often
than once a second.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Iterable, Mapping

log = logging.getLogger("runtime.api.proxies")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REFRESH_SECONDS = 30.0
RETRY_SECONDS = 1.0
WARN_SECONDS = 60.0
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*$"
)


class TrustedProxyError(ValueError):
    """An entry of the trusted-proxy list that is neither an address, a network nor a name."""


def parse_entries(entries: Iterable[str]) -> tuple[tuple[IpNetwork, ...], tuple[str, ...]]:
    """Split the list into networks (an address is a /32 or /128) and host names."""
    networks: list[IpNetwork] = []
    names: list[str] = []
    for raw in entries:
        entry = raw.strip()
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        if not _HOSTNAME.match(entry) or entry.replace(".", "").isdigit():
            raise TrustedProxyError(
                f"{entry!r} is not an IP address, a network like 10.0.0.0/8, or a host name"
            )
        names.append(entry.lower())
    return tuple(networks), tuple(names)


def _address(text: str | None) -> IpAddress | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # An IPv4 client seen through a dual-stack socket (::ffff:a.b.c.d) is that IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    def __init__(self, entries: Iterable[str]) -> None:
        self.networks, self.names = parse_entries(entries)
        self._resolved: frozenset[IpAddress] = frozenset()
        self._resolved_at = -float("inf")
        self._lock = asyncio.Lock()
        self._warned_at: dict[str, float] = {}

    def _in_networks(self, address: IpAddress) -> bool:
        return any(address in network for network in self.networks)

    async def _resolve(self) -> None:
        async with self._lock:
            if time.monotonic() - self._resolved_at < RETRY_SECONDS:
                return  # another request resolved just now
            loop = asyncio.get_running_loop()
            found: set[IpAddress] = set()
            for name in self.names:
                try:
                    infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
                except OSError as exc:
                    # Expected for a while at start (nginx starts after the API); once a
                    # minute per name is enough to notice one that never resolves.
                    now = time.monotonic()
                    if now - self._warned_at.get(name, -float("inf")) >= WARN_SECONDS:
                        self._warned_at[name] = now
                        log.warning(
                            "trusted proxy name does not resolve",
                            extra={"fields": {"name": name, "error": str(exc)}},
                        )
                    continue
                for info in infos:
                    address = _address(str(info[4][0]))
                    if address is not None:
                        found.add(address)
            self._resolved = frozenset(found)
            self._resolved_at = time.monotonic()

    async def trusts(self, peer: str | None) -> bool:
        """Whether `peer` (the connection's address) is one of the configured proxies."""
        address = _address(peer)
        if address is None:
            return False
        if self._in_networks(address):
            return True
        if not self.names:
            return False
        age = time.monotonic() - self._resolved_at
        if age >= REFRESH_SECONDS or (address not in self._resolved and age >= RETRY_SECONDS):
            await self._resolve()
        return address in self._resolved

    def _is_proxy(self, address: IpAddress) -> bool:
        """For addresses a proxy forwarded: the names as last resolved, no new lookup (every
        genuine client would be a miss, and a lookup a second for nothing)."""
        return self._in_networks(address) or address in self._resolved

    async def client_address(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """The client's address: the peer's own, unless the peer is a trusted proxy.

        From a trusted proxy, `X-Real-IP` (nginx sets it to the address it saw). When that is
        itself a trusted proxy (a Cloudflare edge that nginx did not resolve), the client is
        the nearest address in `X-Forwarded-For` that is not one, as nginx's
        `real_ip_recursive` would take it.
        """
        fallback = peer or "unknown"
        if not await self.trusts(peer):
            return fallback
        real = _address(headers.get("X-Real-IP"))
        if real is None:
            return fallback
        if not self._is_proxy(real):
            return str(real)
        hops = [hop for hop in headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break  # garbage from further up the chain: stop at the last known proxy
            if not self._is_proxy(address):
                return str(address)
        return str(real)
