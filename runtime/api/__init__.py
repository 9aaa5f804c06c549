"""The OrbisVoice API service (aiohttp, PostgreSQL, Redis)."""
