"""Apply is all or nothing: an action failing half-way undoes the ones before it (the
Reverter), and a plan made against a host that changed since is refused before it does
anything (``PlanStale``). Fake runtime, a dir pool, and a fake pool that fails on demand."""

from __future__ import annotations

import textwrap

import pytest

import sysmgr
from sysmgr.drivers.runtime.fake import FakeRuntime
from sysmgr.errors import ApplyError, PlanStale


@pytest.fixture
def client(fake_client):
    return fake_client  # tests/unit/conftest.py


def manifest(tmp_path, text: str) -> str:
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def state(client) -> tuple:
    """What the host holds: profiles, containers, running inits, volumes on the dir pool."""
    pool = client.host.pool_driver("default")
    return (sorted(p.name for p in client.profiles.all()),
            sorted(c.name for c in client.containers.all()),
            sorted(FakeRuntime.running()),
            sorted(n for n in ("a", "b") if pool.has_container(n)))


def test_an_action_failing_half_way_undoes_the_completed_ones(client, tmp_path):
    client.storage_pools.create("bad", "fake", {"fail": "create_container"})
    before = state(client)
    path = manifest(tmp_path, """
        kind: Profile
        name: web
        config: {limits.memory: 64MiB}
        ---
        kind: Container
        name: a
        image: img
        profiles: [default, web]
        state: running
        ---
        kind: Container
        name: b
        image: img
        devices:
          root: {type: disk, path: /, pool: bad}
        """)
    plan = client.manifests.plan([path])
    kinds = [type(a).__name__ for a in plan.actions]
    assert kinds == ["PutProfile", "CreateContainer", "Start", "CreateContainer"]
    with pytest.raises(ApplyError) as err:
        client.manifests.apply(plan)
    # the profile, a's container and its start happened, then b's volume failed
    assert len(err.value.completed) == 3
    assert "injected failure in create_container" in err.value.message
    assert state(client) == before            # profile, container, init and volume undone
    assert client.manifests.plan([path]).actions == plan.actions  # the same plan again


def test_a_plan_made_stale_by_a_concurrent_change_is_refused(client, tmp_path):
    path = manifest(tmp_path, """
        kind: Container
        name: a
        image: img
        state: running
        """)
    plan = client.manifests.plan([path])
    other = sysmgr.Client(root=client.root, runtime="fake")   # another admin, meanwhile
    try:
        other.profiles.create("meanwhile", config={"limits.processes": "10"})
    finally:
        other.close()
    with pytest.raises(PlanStale):
        client.manifests.apply(plan)
    assert [c.name for c in client.containers.all()] == []   # nothing of the plan was done
    client.manifests.apply(client.manifests.plan([path]))    # a fresh plan applies
    assert client.containers.get("a").status == "Running"


def test_a_stopped_container_counts_as_a_change_of_the_host(client, tmp_path):
    client.containers.create("a", "img", start=True)
    path = manifest(tmp_path, """
        kind: Container
        name: a
        image: img
        config: {limits.processes: "20"}
        state: running
        """)
    plan = client.manifests.plan([path])
    client.containers.get("a").stop(force=True)    # the kernel state the plan saw is gone
    with pytest.raises(PlanStale):
        client.manifests.apply(plan)
    assert client.containers.get("a").config == {}
