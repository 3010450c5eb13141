"""Starting, stopping and deleting many containers in one call, through the API and engine on
the FAKE runtime, storage and network drivers: each container's outcome is its own, what the
starts share is done once (one push of a network's reservations, one netlink batch), and a
stop of many signals them all before waiting for any."""

from __future__ import annotations

import pytest

from sysmgr.drivers.network.fake import FakeNetwork
from tests.unit.test_network_engine import client, spec  # noqa: F401 - a fixture, a helper


@pytest.fixture
def counted(client, monkeypatch) -> dict[str, int]:  # noqa: F811
    """Calls of the network driver's set_leases (pushes) and batch blocks."""
    drv = client.host.network_driver
    assert isinstance(drv, FakeNetwork)
    calls = {"set_leases": 0, "batch": 0}
    push, batch = drv.set_leases, drv.batch

    def counting_push(*a, **kw):
        calls["set_leases"] += 1
        return push(*a, **kw)

    def counting_batch():
        calls["batch"] += 1
        return batch()

    monkeypatch.setattr(drv, "set_leases", counting_push)
    monkeypatch.setattr(drv, "batch", counting_batch)
    return calls


def by_name(outcomes) -> dict:
    return {o.name: o for o in outcomes}


def status(client, name: str) -> str:
    return client.containers.get(name).status


def test_start_many_starts_each_whole_and_reports_each_failure(client, counted, tmp_path):  # noqa: F811
    for n in ("a", "b", "r"):
        client.containers.create(n, "busybox")
    client.containers.create("broken", "busybox", devices={
        "data": {"type": "disk", "source": str(tmp_path / "gone"), "path": "/data"}})
    client.containers.create("soft", "busybox", devices={
        "opt": {"type": "disk", "source": str(tmp_path / "gone"), "path": "/opt",
                "required": "false"}})
    client.containers.get("r").start()
    counted.update(set_leases=0, batch=0)
    out = client.containers.start_many(["a", "broken", "ghost", "r", "soft", "b", "a"])
    assert [o.name for o in out] == ["a", "broken", "ghost", "r", "soft", "b"]  # once each
    o = by_name(out)
    assert o["a"].ok and o["b"].ok and o["soft"].ok
    assert not o["broken"].ok and "its source" in o["broken"].error and o["broken"].exit_code == 2
    assert not o["ghost"].ok and o["ghost"].exit_code == 2
    assert not o["r"].ok and "already running" in o["r"].error
    (warning,) = o["soft"].warnings
    assert "required=false" in warning
    assert {n: status(client, n) for n in ("a", "b", "soft", "broken")} == {
        "a": "Running", "b": "Running", "soft": "Running", "broken": "Stopped"}
    # the nics of all of them plugged in; the network's reservations pushed once for all
    drv = client.host.network_driver
    plugged = {nic.container for nic in drv.attached().values()}
    assert plugged == {"a", "b", "soft", "r"}
    assert counted == {"set_leases": 1, "batch": 1}


def test_start_many_without_nics_never_loads_the_network(client, counted):  # noqa: F811
    for n in ("x", "y"):
        client.containers.create(n, "busybox", devices={"eth0": {"type": "none"}})
    counted.update(set_leases=0, batch=0)
    assert all(o.ok for o in client.containers.start_many(["x", "y"]))
    assert counted == {"set_leases": 0, "batch": 0}


def test_stop_many_signals_all_and_says_which_were_killed(client, counted):  # noqa: F811
    for n in ("a", "b", "c"):
        client.containers.create(n, "busybox", start=True)
    counted.update(batch=0)
    out = by_name(client.containers.stop_many(["a", "b"], timeout=7))
    assert out["a"].ok and out["a"].graceful is True and out["b"].graceful is True
    out = by_name(client.containers.stop_many(["c", "a"], force=True))
    assert out["c"].graceful is False
    assert out["a"].ok  # stopped already: --force makes sure, as for one container
    (out,) = client.containers.stop_many(["a"])
    assert not out.ok and "not running" in out.error and out.exit_code == 1
    assert {n: status(client, n) for n in "abc"} == dict.fromkeys("abc", "Stopped")
    assert counted["batch"] == 2  # one unplugging block per call
    assert client.host.network_driver.attached() == {}


def test_delete_many_kills_the_running_ones_and_pushes_once(client, counted):  # noqa: F811
    for n in ("a", "b", "c", "keep"):
        client.containers.create(n, "busybox")
    client.containers.get("a").start()
    keep = client.containers.get("keep")
    keep.config["security.protection.delete"] = "true"
    keep.save()
    client.containers.get("c").start()
    out = by_name(client.containers.delete_many(["a", "b", "keep", "c"]))
    assert out["b"].ok and not out["keep"].ok and "protected" in out["keep"].error
    assert not out["a"].ok and "running" in out["a"].error  # without force
    counted.update(set_leases=0)
    out = by_name(client.containers.delete_many(["a", "c"], force=True))
    assert out["a"].ok and out["c"].ok
    assert sorted(c.name for c in client.containers.all()) == ["keep"]
    assert counted["set_leases"] == 1
    # the reservations left are the kept container's
    drv = client.host.network_driver
    assert [lz.hostname for lz in drv.reservations(spec(client))] == ["keep"]
    keep.config.pop("security.protection.delete")
    keep.save()


def test_a_network_that_cannot_be_prepared_fails_only_the_containers_on_it(client, monkeypatch):  # noqa: F811
    client.containers.create("on", "busybox")
    client.containers.create("off", "busybox", devices={"eth0": {"type": "none"}})
    drv = client.host.network_driver
    monkeypatch.setattr(drv, "fail", frozenset({"set_leases", "ensure"}))
    out = by_name(client.containers.start_many(["on", "off"]))
    assert out["off"].ok and not out["on"].ok and "injected failure" in out["on"].error
    assert (status(client, "on"), status(client, "off")) == ("Stopped", "Running")
