"""Typed keys for everything the application and its requests hold."""

from __future__ import annotations

import asyncio

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from runtime.api.principal import Principal
from runtime.api.proxies import TrustedProxies
from runtime.api.ratelimit import RateLimiter
from runtime.api.revocation import Revocations
from runtime.api.security import KeyRingSource
from runtime.api.settings import ApiSettings
from runtime.api.telemetry import ApiMetrics
from runtime.common.db import Database
from runtime.common.migrations import Migration

SETTINGS = web.AppKey("settings", ApiSettings)
METRICS = web.AppKey("metrics", ApiMetrics)
MIGRATIONS: web.AppKey[tuple[Migration, ...]] = web.AppKey("migrations")
KEYRING = web.AppKey("keyring", KeyRingSource)
DB = web.AppKey("db", Database)
REDIS = web.AppKey("redis", aioredis.Redis)
LIMITER = web.AppKey("limiter", RateLimiter)
PROXIES = web.AppKey("proxies", TrustedProxies)
REVOCATIONS = web.AppKey("revocations", Revocations)
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
OPENAPI = web.AppKey("openapi", bytes)
# Set on SIGTERM: every response from then on closes its connection (see runtime.api.serve).
DRAINING = web.AppKey("draining", asyncio.Event)

PRINCIPAL = web.RequestKey("principal", Principal)
