"""Backup, restore and drill engine: archive format, manifest, encryption, retention."""
