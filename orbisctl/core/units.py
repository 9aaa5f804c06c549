"""Quantities as an operator reads them."""

from __future__ import annotations


def format_size(nbytes: int) -> str:
    """Bytes in binary units, one decimal: `512 B`, `3.4 MiB`, `1.2 GiB`."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
