"""The pure decisions of supervision: restart policy and backoff (sysmgr.model.restart), boot
order, dependencies and cycles (sysmgr.model.bootorder), and their config keys."""

from __future__ import annotations

import pytest

from sysmgr.model import bootorder, restart
from sysmgr.model.bootorder import BootEntry, Step, boot_order
from sysmgr.model.keys import is_live, normalize_config, validate_config
from sysmgr.model.restart import Policy, RestartState, decide

NOW = 1_000_000.0

# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [
    ("boot.restart", "no"), ("boot.restart", "On-Failure"), ("boot.restart", "always"),
    ("boot.restart", False),  # YAML's unquoted `no`
    ("boot.restart.backoff.max", "30"), ("boot.depends", "db1"), ("boot.depends", "db1, cache-2"),
    ("boot.autostart", ""),
])
def test_valid_supervision_keys(key, value) -> None:
    assert validate_config({key: value}) == []


@pytest.mark.parametrize("key, value, reason", [
    ("boot.restart", "sometimes", "invalid restart policy 'sometimes'"),
    ("boot.restart", "true", "expected one of no, on-failure, always"),
    ("boot.restart.backoff.max", "0", "must be at least 1"),
    ("boot.depends", "db1,,db2", "expected container names separated by commas"),
    ("boot.depends", "db_1", "invalid container name 'db_1'"),
    ("boot.depends", "../x", "must not contain '/'"),
])
def test_invalid_supervision_keys(key, value, reason) -> None:
    problems = validate_config({key: value})
    assert len(problems) == 1 and problems[0][0] == f"config.{key}" and reason in problems[0][1]


def test_supervision_keys_normalise_and_are_live() -> None:
    assert normalize_config({"boot.restart": False, "boot.depends": "db2, db1,db1"}) == \
        {"boot.restart": "no", "boot.depends": "db1,db2"}
    assert all(is_live(k) for k in ("boot.restart", "boot.restart.backoff.max", "boot.depends"))


def test_policy_from_config() -> None:
    assert Policy.from_config({}) == Policy("no", 300.0)
    assert Policy.from_config({"boot.restart": "ALWAYS", "boot.restart.backoff.max": "8"}) == \
        Policy("always", 8.0)
    assert Policy.from_config({"boot.restart": "bogus", "boot.restart.backoff.max": "x"}) == Policy()


# -- exits and decisions -------------------------------------------------------------------------

@pytest.mark.parametrize("code, kind, words", [
    (0, "clean", "exit 0"), (130, "clean", "poweroff/halt inside (SIGINT, 130)"),
    (129, "reboot", "reboot inside (SIGHUP, 129)"), (137, "failure", "killed by SIGKILL (137)"),
    (1, "failure", "exit 1"), (None, "unknown", "unknown"),
])
def test_exit_kinds(code, kind, words) -> None:
    assert restart.exit_kind(code) == kind
    assert restart.describe_exit(code) == words


@pytest.mark.parametrize("mode, code, restarts", [
    ("no", 137, False), ("no", 0, False),
    ("on-failure", 137, True), ("on-failure", 1, True), ("on-failure", None, True),
    ("on-failure", 129, True),  # a reboot inside asks to run again
    ("on-failure", 0, False), ("on-failure", 130, False),  # exit 0, poweroff inside: clean
    ("always", 0, True), ("always", 130, True), ("always", 137, True),
])
def test_decide_by_policy_and_exit(mode, code, restarts) -> None:
    d = decide(Policy(mode), RestartState(code, ran_for=5.0), NOW)
    assert (d.at is not None) == restarts
    assert d.count == 1
    if restarts:
        assert d.at == NOW + 1 and d.backoff == 1
    else:
        assert d.backoff == 0


def test_backoff_doubles_to_the_cap_then_a_stable_run_resets_it() -> None:
    policy = Policy("always", backoff_max=10)
    count, backoff, delays = 0, 0.0, []
    for _ in range(6):
        d = decide(policy, RestartState(137, ran_for=2.0, count=count, backoff=backoff), NOW)
        delays.append(d.backoff)
        count, backoff = d.count, d.backoff
        assert d.at == NOW + d.backoff
    assert delays == [1, 2, 4, 8, 10, 10]
    # a run of 60 s is not stable after a 10 s delay (10 x 10 s needed)...
    assert decide(policy, RestartState(137, 60.0, count, backoff), NOW).count == 7
    # ... 100 s is: the streak starts again at one crash and 1 s
    d = decide(policy, RestartState(137, 100.0, count, backoff), NOW)
    assert (d.count, d.backoff) == (1, 1)
    # an unknown run time never ends a streak; short delays still need a minute
    assert decide(policy, RestartState(137, None, 3, 4.0), NOW).count == 4
    assert decide(policy, RestartState(137, 59.0, 1, 1.0), NOW).count == 2
    assert decide(policy, RestartState(137, 60.0, 1, 1.0), NOW).count == 1


def test_records_of_a_crash_and_of_a_failed_start() -> None:
    d = decide(Policy("always"), RestartState(137, 1.0, 2, 2.0), NOW)
    rec = restart.crash_record({restart.RECENT: [NOW - 700, NOW - 5]}, d, 137, NOW)
    assert rec == {restart.COUNT: 3, restart.BACKOFF: 4.0, restart.RECENT: [NOW - 5, NOW],
                   restart.LAST_EXIT: 137, restart.LAST_CRASH: NOW, restart.NEXT: NOW + 4}
    never = decide(Policy("no"), RestartState(None), NOW)
    rec = restart.crash_record({}, never, None, NOW)
    assert rec[restart.LAST_EXIT] == "unknown" and restart.NEXT not in rec
    failed = restart.failed_start_record(d, "boom")
    assert failed == {restart.COUNT: 3, restart.BACKOFF: 4.0, restart.ERROR: "boom",
                      restart.NEXT: NOW + 4}


def test_crash_looping_counts_crashes_in_the_window() -> None:
    times = [NOW - 500, NOW - 400, NOW - 300, NOW - 200]
    assert not restart.crash_looping(times, NOW)
    assert restart.crash_looping(times + [NOW], NOW)
    assert not restart.crash_looping(times + [NOW], NOW + 200)  # the first one left the window


# -- boot order ---------------------------------------------------------------------------------

@pytest.mark.parametrize("autostart, last_state, starts", [
    ("true", "STOPPED", True), ("1", None, True), ("false", "RUNNING", False),
    (None, "RUNNING", True), ("", "RUNNING", True), (None, "STOPPED", False), (None, None, False),
])
def test_lxd_autostart_rule(autostart, last_state, starts) -> None:
    assert bootorder.wants_boot_start(autostart, last_state) == starts


def test_priority_higher_first_then_name() -> None:
    plan = boot_order([BootEntry("b", 1), BootEntry("a", 1), BootEntry("c", 5, delay=3)])
    assert [s.name for s in plan.steps] == ["c", "a", "b"]
    assert plan.steps[0] == Step("c", (), 3) and plan.cycles == ()


def test_dependencies_come_first_whatever_their_priority() -> None:
    plan = boot_order([BootEntry("web", 20, depends=("db", "cache")), BootEntry("db", 0),
                       BootEntry("cache", 1, depends=("db",)), BootEntry("other", 10)])
    assert [s.name for s in plan.steps] == ["other", "db", "cache", "web"]
    assert sorted(plan.steps[-1].requires) == ["cache", "db"]


def test_dependencies_outside_the_boot_set_stay_requirements() -> None:
    plan = boot_order([BootEntry("web", depends=("db",))])
    assert plan.steps == (Step("web", ("db",)),)


def test_a_cycle_is_reported_and_its_members_start_by_priority() -> None:
    plan = boot_order([BootEntry("a", 1, depends=("b",)), BootEntry("b", 5, depends=("a",)),
                       BootEntry("c", 3), BootEntry("d", 9, depends=("a",)),
                       BootEntry("self", 0, depends=("self",))])
    assert plan.cycles == (("a", "b", "a"), ("self", "self"))
    assert [s.name for s in plan.steps] == ["b", "c", "a", "d", "self"]
    # edges inside the cycle are dropped; the one into it stays
    assert {s.name: s.requires for s in plan.steps} == \
        {"a": (), "b": (), "c": (), "d": ("a",), "self": ()}


def test_find_and_describe_cycles() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "x": ["y"], "y": []}
    assert bootorder.find_cycle(graph) == ("a", "b", "c", "a")
    assert bootorder.cycle_through(graph, "b") == ("b", "c", "a", "b")
    assert bootorder.cycle_through(graph, "x") is None
    assert bootorder.find_cycle({"x": ["y", "gone"], "y": []}) is None
    assert bootorder.describe_cycle(("a", "b", "a")) == "a -> b -> a"


def test_depends_of_ignores_unset_and_invalid_values() -> None:
    assert bootorder.depends_of({}) == ()
    assert bootorder.depends_of({"boot.depends": ""}) == ()
    assert bootorder.depends_of({"boot.depends": "bad name"}) == ()
    assert bootorder.depends_of({"boot.depends": "b, a"}) == ("a", "b")
