"""Guarded upgrades: from the release an install runs to this checkout's (`orbisctl upgrade`)."""
