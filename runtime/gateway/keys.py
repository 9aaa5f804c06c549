"""Typed application keys of the gateway app."""

from __future__ import annotations

from aiohttp import web

from runtime.gateway.process import Gateway
from runtime.gateway.settings import GatewaySettings

SETTINGS = web.AppKey("settings", GatewaySettings)
GATEWAY = web.AppKey("gateway", Gateway)
