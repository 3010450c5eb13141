"""Durations as people write them on the command line: ``500ms``, ``90s``, ``10m``,
``1h30m``, ``2d``, ``1w``; a bare number is seconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TERM = re.compile(r"(\d+(?:\.\d+)?)(ms|[smhdw])")


def parse_duration(value: str) -> float:
    """The duration in seconds.

    Raises:
        ValueError: with a readable reason.
    """
    v = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", v):
        return float(v)
    terms = _TERM.findall(v)
    if not v or "".join(n + u for n, u in terms) != v:
        raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 10m, 1h30m, 2d "
                         "(ms, s seconds, m minutes, h hours, d days, w weeks)")
    return sum(float(n) * _UNITS[u] for n, u in terms)


def describe(seconds: float) -> str:
    """``seconds`` in the largest whole unit people say: ``30 days``, ``12 hours``, ``90 s``."""
    for unit, size in (("week", 7 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'' if n == 1 else 's'}"
    return f"{seconds:g} s"
