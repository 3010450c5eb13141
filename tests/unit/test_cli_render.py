"""Golden tests of the CLI renderers: LXD-style tables, CSV/JSON/YAML, plans, dates.

Pure: no host root, no engine (the plan actions are plain frozen dataclasses).
"""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import pytest

from sysmgr.cli import render
from sysmgr.cli.listing import (
    DEFAULT_COLUMNS, container_record, matches, parse_columns, render_containers)
from sysmgr.errors import ValidationError
from sysmgr.engine.actions import (
    Change, CreateContainer, CreatePool, Plan, PutProfile, Restart, Start, Stop, UpdateContainer)


def golden(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def test_table_lxd_style_with_multiline_cell():
    out = render.table(["NAME", "STATE", "IPV4"],
                       [["c1", "RUNNING", "10.0.0.2 (eth0)\n10.0.0.3 (eth1)"], ["web-2", "STOPPED", ""]])
    assert out == golden("""
        +-------+---------+-----------------+
        | NAME  |  STATE  |      IPV4       |
        +-------+---------+-----------------+
        | c1    | RUNNING | 10.0.0.2 (eth0) |
        |       |         | 10.0.0.3 (eth1) |
        +-------+---------+-----------------+
        | web-2 | STOPPED |                 |
        +-------+---------+-----------------+
        """)


def test_table_header_centering_puts_the_odd_space_right():
    assert render.table(["AB"], [["abcde"]]).splitlines()[1] == "|  AB   |"


def test_empty_table_is_just_the_header():
    assert render.table(["NAME", "STATE"], []) == golden("""
        +------+-------+
        | NAME | STATE |
        +------+-------+
        """)


def test_csv_quotes_and_blanks():
    assert render.csv_text([["c1", "RUNNING", "a,b"], ["c2", None, 3]]) == 'c1,RUNNING,"a,b"\nc2,,3'


def test_json_and_yaml_keep_key_order():
    data = [{"name": "c1", "config": {"limits.memory": "64MiB"}, "pids": None}]
    assert json.loads(render.json_text(data)) == data
    assert render.yaml_text(data) == golden("""
        - name: c1
          config:
            limits.memory: 64MiB
          pids: null
        """)


def _container(name: str, status: str = "Running", **kw):
    base = dict(name=name, status=status, pid=42 if status != "Stopped" else None, description="",
                image_fingerprint="ab" * 32, image_aliases=["busybox"], image_os="busybox",
                profiles=["default"], pool="default", created_at=0.0, config={}, devices={},
                expanded_config={}, expanded_devices={},
                usage=SimpleNamespace(memory_bytes=3 * 1024 * 1024, pids=4) if status != "Stopped" else None,
                disk_bytes=5 * 1024 * 1024)
    base.update(kw)
    return SimpleNamespace(**base)


def test_container_listing_rows():
    eth0 = [{"address": "10.0.0.2", "family": "inet", "device": "eth0"}]
    table = render_containers("table", [
        _container("c1", profiles=["default", "web"], addresses=eth0),
        _container("c2", "Stopped")], parse_columns(DEFAULT_COLUMNS, clustered=False))
    assert table == golden("""
        +------+---------+-----------------+----------+--------------+------------+-----------+
        | NAME |  STATE  |      IPV4       | PROFILES | MEMORY USAGE | DISK USAGE | PROCESSES |
        +------+---------+-----------------+----------+--------------+------------+-----------+
        | c1   | RUNNING | 10.0.0.2 (eth0) | default  | 3.00MiB      | 5.00MiB    | 4         |
        |      |         |                 | web      |              |            |           |
        +------+---------+-----------------+----------+--------------+------------+-----------+
        | c2   | STOPPED |                 | default  |              | 5.00MiB    |           |
        +------+---------+-----------------+----------+--------------+------------+-----------+
        """)


def test_list_columns_by_letter_and_config_key():
    c = _container("c1", config={"user.team": "infra"}, last_used_at=86400.0 * 365)
    cols = parse_columns("nsSl,user.team:TEAM,config:user.team:ab:2", clustered=False)
    assert [col.header for col in cols] == ["NAME", "STATE", "SNAPSHOTS", "LAST USED AT", "TEAM", "ab"]
    csv = render_containers("csv", [c], cols, snapshots=lambda _c: 3)
    assert csv == "c1,RUNNING,3,1971/01/01 00:00 UTC,infra,in"
    for bad in ("nz", "L", "n,,s", "user.x:a:b:c:d", "user.x:a:-3"):
        with pytest.raises(ValidationError):
            parse_columns(bad, clustered=False)
    assert [col.header for col in parse_columns("nL", clustered=True)] == ["NAME", "LOCATION"]


def test_container_record_has_the_documented_fields():
    r = container_record(_container("c1", config={"limits.memory": "64MiB"}))
    assert r["name"] == "c1" and r["status"] == "Running" and r["pid"] == 42
    assert r["memory"] == 3 * 1024 * 1024 and r["pids"] == 4 and r["addresses"] == []
    assert r["config"] == {"limits.memory": "64MiB"} and r["profiles"] == ["default"]
    assert r["created_at"] is None and r["last_used_at"] is None and r["type"] == "container"


@pytest.mark.parametrize("filters,expected", [
    ((), ["web1", "web2", "db"]),
    (("web",), ["web1", "web2"]),
    ((".*2",), ["web2"]),
    (("status=stopped",), ["db"]),
    (("user.role=db",), ["db"]),
    (("u.role=d.",), ["db"]),                    # LXD: abbreviated key, value a regex
    (("web", "status=running"), ["web1", "web2"]),
    (("status=stopped,frozen",), ["db"]),        # alternatives
    (("ipv4=10.0.0.0/24",), ["web1"]),
    (("ipv4=10.0.1.7",), ["web2"]),
    (("type=container", "web2"), ["web2"]),
    (("user.role=web",), []),
])
def test_list_filters(filters, expected):
    cs = [_container("web1", addresses=[{"address": "10.0.0.5", "family": "inet", "device": "eth0"}]),
          _container("web2", addresses=[{"address": "10.0.1.7", "family": "inet", "device": "eth0"}]),
          _container("db", "Stopped", expanded_config={"user.role": "db"})]
    assert [c.name for c in cs if matches(c, filters)] == expected


PLAN = Plan((
    CreatePool("p1", driver="dir"),
    PutProfile("web", config={"limits.memory": "64MiB"},
               changes=(Change("config.limits.memory", None, "64MiB"),)),
    CreateContainer("c1", image="busybox", profiles=("default", "web")),
    UpdateContainer("c2", changes=(Change("config.limits.memory", "64MiB", "96MiB"),), live=True),
    Restart("c3", reason="config.limits.cpu"),
    Stop("c4"),
    Start("c5"),
))


def test_plan_text_golden():
    assert render.plan_text(PLAN) == golden("""
        + create StoragePool p1
              driver: dir
        + create Profile web
              + config.limits.memory: 64MiB
        + create Container c1
              image: busybox
              profiles: [default, web]
        ~ update (live) Container c2
              ~ config.limits.memory: 64MiB -> 96MiB
        ! restart Container c3
              restart needed: config.limits.cpu
        < stop Container c4
        > start Container c5

        plan: 3 to create, 1 to update, 1 to restart, 1 to stop, 1 to start
        """)


def test_plan_lines_are_exactly_plan_lines_plus_symbols():
    out = render.plan_lines(PLAN)
    # action lines gain "<symbol> ", detail lines two spaces of indent; nothing else changes
    assert [line[2:] for line in out] == PLAN.lines()
    assert [line[0] for line in out if not line.startswith(" ")] == ["+", "+", "+", "~", "!", "<", ">"]


def test_plan_colour_only_decorates():
    import click

    coloured = render.plan_lines(PLAN, color=True)
    assert coloured != render.plan_lines(PLAN)
    assert [click.unstyle(line) for line in coloured] == render.plan_lines(PLAN)


def test_empty_plan_and_warnings():
    assert render.plan_text(Plan()) == "no changes"
    text = render.plan_text(Plan((Start("c1"),), warnings=("image busybox is old",)))
    assert text.endswith("plan: 1 to start\nwarning: image busybox is old")


def test_no_color_env_wins(monkeypatch):
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert render.use_color(Tty())  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "1")
    assert not render.use_color(Tty())  # type: ignore[arg-type]


def test_dates():
    ts = 1764331080  # 2025-11-28 11:58 UTC
    assert render.format_date(ts) == "Nov 28, 2025 at 11:58am (UTC)"
    assert render.format_date(ts + 3600 * 12) == "Nov 28, 2025 at 11:58pm (UTC)"
    assert render.format_timestamp(ts) == "2025/11/28 11:58 UTC"
    assert render.parse_iso(render.iso_time(ts)) == ts
    assert render.format_date(None) == "" and render.iso_time(None) is None


def test_progress_printer_plain(capsys):
    with render.ProgressPrinter(live=False, indent="  ") as progress:
        progress("downloading")
        progress("unpacking")
    assert capsys.readouterr().out == "  downloading\n  unpacking\n"
