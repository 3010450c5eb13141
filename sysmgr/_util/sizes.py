"""Parsing and formatting of sizes in LXD's notation (``64MiB``, ``1GB``, ``512``)."""

from __future__ import annotations

import re

_UNITS = {
    "": 1, "B": 1,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4, "PB": 1000**5, "EB": 1000**6,
    "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4, "PIB": 1024**5, "EIB": 1024**6,
    # bare K/M/G (as people type them) are binary, like the kernel's cgroup files
    "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4,
}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Return the number of bytes in ``text``; raise ValueError with a readable reason."""
    if isinstance(text, bool):
        raise ValueError("expected a size such as 64MiB, not a boolean")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("size must not be negative")
        return text
    m = _RE.match(str(text))
    if not m:
        raise ValueError(f"invalid size {text!r}: expected a number with a unit such as 64MiB or 1GB")
    num, unit = m.groups()
    mult = _UNITS.get(unit.upper())
    if mult is None:
        raise ValueError(f"invalid size {text!r}: unknown unit {unit!r} (use B, KB, MB, GB, KiB, MiB, GiB...)")
    return int(float(num) * mult)


def format_size(n: int | None) -> str:
    """Human-readable binary size: ``64.00MiB``; empty string for None."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.2f}{unit}"
        value /= 1024
    return f"{n}B"  # pragma: no cover
