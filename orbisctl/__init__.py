"""orbisctl: the OrbisVoice appliance's operator CLI."""

__version__ = "0.2.0.dev0"
