"""Typed application keys of the emulator app."""

from __future__ import annotations

from aiohttp import web

from runtime.emulator.context import EmulatorContext
from runtime.emulator.settings import EmulatorSettings

SETTINGS = web.AppKey("settings", EmulatorSettings)
CONTEXT = web.AppKey("context", EmulatorContext)
