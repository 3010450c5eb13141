"""snapshots.schedule (cron / aliases) and snapshots.expiry: parsing, next run, expiry time,
and their place in the config key table."""

from __future__ import annotations

import datetime as dt

import pytest

from sysmgr.model import keys
from sysmgr.model import schedule as s


def ts(*args: int) -> float:
    return dt.datetime(*args).timestamp()


def when(value: str, after: float) -> dt.datetime | None:
    t = s.next_run(value, after)
    return None if t is None else dt.datetime.fromtimestamp(t)


@pytest.mark.parametrize("value, after, expected", [
    ("@hourly", (2026, 11, 28, 12, 30), (2026, 11, 28, 13, 0)),
    ("@daily", (2026, 11, 28, 12, 30), (2026, 11, 29, 0, 0)),
    ("@midnight", (2026, 12, 31, 23, 59), (2027, 1, 1, 0, 0)),
    ("@weekly", (2026, 11, 28, 12, 0), (2026, 11, 29, 0, 0)),        # the 28th is a Saturday
    ("@monthly", (2026, 11, 28, 12, 0), (2026, 12, 1, 0, 0)),
    ("@yearly", (2026, 11, 28, 12, 0), (2027, 1, 1, 0, 0)),
    ("@daily, @hourly", (2026, 11, 28, 12, 30), (2026, 11, 28, 13, 0)),
    ("*/15 * * * *", (2026, 11, 28, 12, 31), (2026, 11, 28, 12, 45)),
    ("5/20 3 * * *", (2026, 11, 28, 3, 26), (2026, 11, 28, 3, 45)),
    ("0 3 * * mon-fri", (2026, 11, 28, 12, 0), (2026, 11, 30, 3, 0)),
    ("0 0 * * 7", (2026, 11, 28, 12, 0), (2026, 11, 29, 0, 0)),       # 7 is Sunday too
    ("0 0 1 * 1", (2026, 11, 28, 12, 0), (2026, 11, 30, 0, 0)),       # restricted dom+dow: either
    ("30 2 29 feb *", (2026, 3, 1, 0, 0), (2028, 2, 29, 2, 30)),
    ("0 12 * * *", (2026, 11, 28, 12, 0), (2026, 11, 29, 12, 0)),     # strictly after
])
def test_next_run(value, after, expected):
    assert when(value, ts(*after)) == dt.datetime(*expected)


def test_a_date_that_never_comes():
    assert s.next_run("0 0 31 2 *", ts(2026, 1, 1)) is None


@pytest.mark.parametrize("value, reason", [
    ("61 * * * *", "out of range"),
    ("* * * *", "expected 5 cron fields"),
    ("@sometimes", "unknown schedule alias"),
    ("5-1 * * * *", "backwards"),
    ("*/0 * * * *", "invalid step"),
    ("* * * smarch *", "invalid month"),
])
def test_bad_schedules(value, reason):
    with pytest.raises(ValueError, match=reason):
        s.parse_schedule(value)


@pytest.mark.parametrize("value, start, expected", [
    ("2w", (2026, 11, 28, 12, 0), (2026, 12, 12, 12, 0)),
    ("3d", (2026, 11, 28, 12, 0), (2026, 12, 1, 12, 0)),
    ("1h", (2026, 11, 28, 12, 0), (2026, 11, 28, 13, 0)),
    ("12H 30M", (2026, 11, 28, 12, 0), (2026, 11, 29, 0, 30)),
    ("90min", (2026, 11, 28, 12, 0), (2026, 11, 28, 13, 30)),
    ("1m", (2026, 1, 31, 12, 0), (2026, 2, 28, 12, 0)),               # months are calendar months
    ("1y", (2028, 2, 29, 0, 0), (2029, 2, 28, 0, 0)),
])
def test_expiry(value, start, expected):
    assert dt.datetime.fromtimestamp(s.expiry_time(value, ts(*start))) == dt.datetime(*expected)


def test_no_expiry():
    assert s.expiry_time("", 0) is None


@pytest.mark.parametrize("value", ["2x", "w", "2w garbage", "-1d", "1.5d"])
def test_bad_expiries(value):
    with pytest.raises(ValueError, match="invalid expiry"):
        s.parse_expiry(value)


def test_keys_validate_snapshot_settings():
    good = {"snapshots.schedule": "@daily", "snapshots.expiry": "2w",
            "snapshots.schedule.stopped": "yes"}
    assert keys.validate_config(good) == []
    bad = dict(keys.validate_config({"snapshots.schedule": "0 25 * * *", "snapshots.expiry": "soon"}))
    assert "hour 25 out of range" in bad["config.snapshots.schedule"]
    assert "invalid expiry" in bad["config.snapshots.expiry"]
    assert keys.is_live("snapshots.schedule") and keys.is_live("snapshots.expiry")


def test_root_disk_size_change_is_live():
    old = {"type": "disk", "path": "/", "pool": "p", "size": "1GiB"}
    assert keys.device_change_is_live(old, {**old, "size": "2GiB"})
    assert keys.device_change_is_live(old, {k: v for k, v in old.items() if k != "size"})
    assert not keys.device_change_is_live(old, {**old, "pool": "q"})
    assert not keys.device_change_is_live(None, old)
    assert keys.root_disk_size({"root": old}) == 1 << 30
    assert keys.root_disk_size({"root": {**old, "size": ""}}) is None
