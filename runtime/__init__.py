"""OrbisVoice runtime services: api, gateway, emulator, web (static), and their shared code."""
