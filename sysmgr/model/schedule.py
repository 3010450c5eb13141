"""Snapshot schedules and expiries: ``snapshots.schedule`` and ``snapshots.expiry`` values.

Model layer, pure (standard library only). LXD's notations:

* a schedule is a 5-field cron expression (``minute hour day-of-month month day-of-week``,
  each ``*``, ``N``, ``A-B``, ``*/S``, ``A-B/S``, ``N/S`` or a comma list of those; month and
  weekday names allowed; weekday 0 and 7 are Sunday), or a comma-separated list of aliases
  (``@hourly``, ``@daily``, ``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``,
  ``@annually``). Cron's rule for restricted day-of-month *and* day-of-week applies: either
  one matching is enough. Times are the host's local time.
* an expiry is one or more ``<number><unit>`` terms (``2w``, ``1d 12H``): ``M`` or ``min``
  minutes, ``H``/``h`` hours, ``d`` days, ``w`` weeks, ``m`` months, ``y`` years (LXD's units;
  ``h`` is accepted too because people type it).

:func:`parse_schedule` and :func:`parse_expiry` raise ValueError with a readable reason;
:func:`next_run` and :func:`expiry_time` turn valid values into times.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

ALIASES: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# cron's month names, whatever the locale (and calendar costs every start a millisecond)
_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul",
                                         "aug", "sep", "oct", "nov", "dec"), start=1)}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# (name, low, high, names)
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))


@dataclass(frozen=True)
class Cron:
    """One parsed cron expression: the allowed values of each field."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]      # 0 = Sunday (7 folded into 0)
    any_day: bool                 # day of month was "*"
    any_weekday: bool             # day of week was "*"

    def day_matches(self, d: dt.date) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow  # cron: both restricted means either

    def next_after(self, t: dt.datetime) -> dt.datetime | None:
        """The first matching minute strictly after ``t`` (naive local time), within 5 years."""
        cur = t.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = t + dt.timedelta(days=366 * 5)
        while cur <= limit:
            if cur.month not in self.months:
                y, m = (cur.year + 1, 1) if cur.month == 12 else (cur.year, cur.month + 1)
                cur = dt.datetime(y, m, 1)
                continue
            if not self.day_matches(cur.date()):
                cur = dt.datetime(cur.year, cur.month, cur.day) + dt.timedelta(days=1)
                continue
            if cur.hour not in self.hours:
                cur = cur.replace(minute=0) + dt.timedelta(hours=1)
                continue
            later = [m for m in self.minutes if m >= cur.minute]
            if not later:
                cur = cur.replace(minute=0) + dt.timedelta(hours=1)
                continue
            return cur.replace(minute=min(later))
        return None  # e.g. "0 0 31 2 *": February 31st never comes


def _value(text: str, lo: int, hi: int, names: dict[str, int], what: str) -> int:
    t = text.strip().lower()
    if t in names:
        return names[t]
    if not t.isdigit():
        raise ValueError(f"invalid {what} {text!r} in schedule")
    n = int(t)
    if not lo <= n <= hi:
        raise ValueError(f"{what} {n} out of range {lo}-{hi} in schedule")
    return n


def _field(text: str, lo: int, hi: int, names: dict[str, int], what: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        rng, slash, step_s = part.partition("/")
        step = 1
        if slash:
            if not step_s.isdigit() or int(step_s) < 1:
                raise ValueError(f"invalid step {step_s!r} for {what} in schedule")
            step = int(step_s)
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            sa, _, sb = rng.partition("-")
            a, b = _value(sa, lo, hi, names, what), _value(sb, lo, hi, names, what)
            if a > b:
                raise ValueError(f"invalid {what} range {rng!r} in schedule: it goes backwards")
        else:
            a = _value(rng, lo, hi, names, what)
            b = hi if slash else a  # "5/15": from 5 to the end, every 15
        out.update(range(a, b + 1, step))
    return frozenset(out)


def _parse_cron(expr: str) -> Cron:
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(f"invalid schedule {expr!r}: expected 5 cron fields (minute hour "
                         "day-of-month month day-of-week) or an alias such as @daily")
    sets = [_field(p, lo, hi, names, what) for p, (what, lo, hi, names) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(sets[0], sets[1], sets[2], sets[3], weekdays,
                any_day=parts[2] == "*", any_weekday=parts[4] == "*")


def parse_schedule(value: str) -> tuple[Cron, ...]:
    """Parse a ``snapshots.schedule`` value; empty means no schedule (an empty tuple).

    Raises:
        ValueError: with a readable reason.
    """
    v = value.strip()
    if not v:
        return ()
    if v.startswith("@"):
        out = []
        for alias in (a.strip().lower() for a in v.split(",")):
            if alias not in ALIASES:
                raise ValueError(f"unknown schedule alias {alias!r} (known: "
                                 + ", ".join(sorted(ALIASES)) + ")")
            out.append(_parse_cron(ALIASES[alias]))
        return tuple(out)
    return (_parse_cron(v),)


def next_run(value: str, after: float) -> float | None:
    """Unix time of the first scheduled minute strictly after ``after``, or None."""
    t = dt.datetime.fromtimestamp(after)
    hits = [h for c in parse_schedule(value) if (h := c.next_after(t)) is not None]
    return min(hits).timestamp() if hits else None


_EXPIRY_RE = re.compile(r"(\d+)\s*(min|M|H|h|d|w|m|y)")


def parse_expiry(value: str) -> list[tuple[int, str]]:
    """Parse a ``snapshots.expiry`` value into ``[(count, unit), ...]`` (empty: never).

    Raises:
        ValueError: with a readable reason.
    """
    v = value.strip()
    if not v:
        return []
    terms: list[tuple[int, str]] = []
    pos = 0
    for m in _EXPIRY_RE.finditer(v):
        if v[pos:m.start()].strip():
            break
        terms.append((int(m.group(1)), "M" if m.group(2) == "min" else m.group(2).replace("h", "H")))
        pos = m.end()
    if not terms or v[pos:].strip():
        raise ValueError(f"invalid expiry {value!r}: expected terms such as 2w, 3d, 12H, 30M "
                         "(M minutes, H hours, d days, w weeks, m months, y years)")
    return terms


def _add_months(t: dt.datetime, months: int) -> dt.datetime:
    import calendar

    y, m = divmod(t.month - 1 + months, 12)
    year, month = t.year + y, m + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


def expiry_time(value: str, start: float) -> float | None:
    """When a snapshot taken at ``start`` expires under ``value``; None for no expiry."""
    terms = parse_expiry(value)
    if not terms:
        return None
    t = dt.datetime.fromtimestamp(start)
    for n, unit in terms:
        if unit == "M":
            t += dt.timedelta(minutes=n)
        elif unit == "H":
            t += dt.timedelta(hours=n)
        elif unit == "d":
            t += dt.timedelta(days=n)
        elif unit == "w":
            t += dt.timedelta(weeks=n)
        elif unit == "m":
            t = _add_months(t, n)
        else:
            t = _add_months(t, 12 * n)
    return t.timestamp()


# -- times as LXD writes them ----------------------------------------------------------------

#: Go's zero time: what LXD shows as the ``expires_at`` of a snapshot that never expires
ZERO_TIME = "0001-01-01T00:00:00Z"
_FRACTION = re.compile(r"(\.\d{6})\d+")  # Go writes nanoseconds; Python reads microseconds


def format_timestamp(ts: float | None) -> str:
    """A Unix time as LXD's RFC 3339 (``2026-12-01T09:00:00Z``); None as :data:`ZERO_TIME`."""
    if not ts:
        return ZERO_TIME
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str) -> float | None:
    """An RFC 3339 time (``2026-12-01T09:00:00Z``, with fractions or an offset) as a Unix
    time; ``""``, ``never`` and :data:`ZERO_TIME` (or any time before 1970) are None.
    ValueError with a readable reason otherwise; a time without a zone is UTC."""
    text = (value or "").strip()
    if text.lower() in ("", "never", "none", "null"):
        return None
    try:
        t = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("z", "Z")))
    except ValueError:
        raise ValueError(f"invalid time {value!r}: expected RFC 3339 such as "
                         "2026-12-01T09:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    ts = t.timestamp()
    return ts if ts > 0 else None
