"""Custom storage volumes on the real kernel: a btrfs loop pool (subvolumes with qgroup
limits) and a dir pool (directories, no size), attached to busybox containers (unprivileged:
idmapped, so root inside owns them whatever the container's map), live; snapshots, copies
and moves between the two pools, export/import with ``--volumes``; and the same through the
real CLI.
"""

from __future__ import annotations

import json
import os

import pytest

from sysmgr.errors import Conflict, SysmgrError, ValidationError
from tests.conftest import requires_root, run_cli, sh
from tests.integration.test_storage_e2e import _btrfs_ok

pytestmark = [requires_root,
              pytest.mark.skipif(not _btrfs_ok(), reason="btrfs-progs or btrfsutil missing")]

MiB = 1 << 20


@pytest.fixture
def client(busybox_client):
    """The busybox client with a 1 GiB btrfs loop pool ``bt`` beside its dir pool
    ``default``; volumes and the pool go after its containers."""
    busybox_client.storage_pools.create("bt", "btrfs", {"size": "1GiB"})
    yield busybox_client
    for ct in busybox_client.containers.all():
        ct.delete(force=True)
    for v in busybox_client.storage_volumes.all():
        v.delete()
    busybox_client.storage_pools.get("bt").delete()


def host_path(client, pool: str, name: str) -> str:
    return client.host.pool_driver(pool).custom_volumes().container_path(name)


def test_a_btrfs_volume_is_a_subvolume_with_a_quota_owned_by_root_inside(client):
    import btrfsutil

    vol = client.storage_volumes.create("bt", "data", config={"size": "20MiB"})
    path = host_path(client, "bt", "data")
    assert btrfsutil.is_subvolume(path) and os.stat(path).st_uid == 0
    c = client.containers.create("c1", "busybox", start=True,
                                 config={"security.idmap.isolated": "true"})
    assert vol.attach("c1", "/srv/data") == []               # live
    code, out = sh(c, "stat -c '%u:%g' /srv/data; echo hi > /srv/data/f && stat -c %u /srv/data/f;"
                      " dd if=/dev/zero of=/srv/data/big bs=1M count=40 2>&1; true")
    assert out.startswith("0:0\n0\n") and "Disk quota exceeded" in out, out
    assert os.stat(os.path.join(path, "f")).st_uid == 0       # container ids on disk
    vol.refresh()
    assert vol.used_by == ["c1"] and vol.usage_bytes and vol.usage_bytes > 10 * MiB
    with pytest.raises(ValidationError, match="below what it holds"):
        vol.config["size"] = "1MiB"
        vol.save()
    vol.config["size"] = "100MiB"                              # grown live
    vol.save()
    assert sh(c, "rm /srv/data/big; dd if=/dev/zero of=/srv/data/big bs=1M count=40 "
                 "2>/dev/null && echo OK")[1].strip() == "OK"


def test_a_dir_volume_refuses_a_size_and_attaches_to_two_containers(client):
    with pytest.raises(ValidationError, match="cannot enforce a volume size"):
        client.storage_volumes.create("default", "sized", config={"size": "1GiB"})
    vol = client.storage_volumes.create("default", "shared")
    a = client.containers.create("a", "busybox", start=True)
    b = client.containers.create("b", "busybox", config={"security.idmap.isolated": "true"},
                                 devices={"shared": {"type": "disk", "pool": "default",
                                                     "source": "shared", "path": "/shared"}},
                                 start=True)
    vol.attach("a", "/shared", readonly=True)
    assert sh(b, "echo from-b > /shared/f && stat -c %u /shared/f") == (0, "0\n")
    assert sh(a, "cat /shared/f; stat -c %u /shared/f; touch /shared/g") [1].startswith(
        "from-b\n0\n")
    assert not os.path.exists(os.path.join(host_path(client, "default", "shared"), "g"))
    with pytest.raises(Conflict, match="used by container a, container b"):
        vol.delete()
    vol.detach("a")
    assert "/shared" not in sh(a, "cat /proc/self/mountinfo")[1]
    with pytest.raises(SysmgrError, match="not attached to 'b'.*"):
        vol.detach("b", "other")


def test_snapshots_copies_and_moves_between_pools(client):
    vol = client.storage_volumes.create("bt", "data", config={"size": "50MiB"})
    c = client.containers.create("c1", "busybox", start=True)
    vol.attach("c1", "/data")
    assert sh(c, "echo one > /data/f")[0] == 0
    vol.snapshot()                                            # snap0
    assert sh(c, "echo two > /data/f")[0] == 0
    vol.snapshot("second")
    assert sh(c, "echo three > /data/f")[0] == 0
    with pytest.raises(Conflict, match="running containers have it mounted: c1"):
        vol.restore("snap0")
    # to the dir pool (tar streams), with its snapshots; a size dir cannot enforce is refused
    with pytest.raises(ValidationError, match="cannot enforce"):
        vol.copy("default", "copy")
    vol.config.pop("size")
    vol.save()
    copy = vol.copy("default", "copy")
    assert [s.name for s in copy.snapshots] == ["snap0", "second"]
    dpath = host_path(client, "default", "copy")
    assert open(os.path.join(dpath, "f")).read() == "three\n"
    back = copy.copy("bt", "back")                             # and back, to btrfs
    assert [s.name for s in back.snapshots] == ["snap0", "second"]
    c.stop(force=True)
    back.restore("snap0")
    assert open(os.path.join(host_path(client, "bt", "back"), "f")).read() == "one\n"
    with pytest.raises(Conflict, match="used by container c1"):
        vol.move("bt", "renamed")
    moved = copy.move("bt", "moved")                           # dir -> btrfs, snapshots too
    assert [s.name for s in moved.snapshots] == ["snap0", "second"]
    assert not client.storage_volumes.exists("default", "copy")
    assert not os.path.exists(dpath)
    moved.move("bt", "renamed")                                # a rename on the same pool
    assert client.storage_volumes.exists("bt", "renamed")


def test_export_import_with_volumes(client, tmp_path):
    vol = client.storage_volumes.create("bt", "data")
    c = client.containers.create("c1", "busybox", start=True)
    vol.attach("c1", "/data")
    assert sh(c, "mkdir /data/d && echo kept > /data/d/f && chown -R 1234:4321 /data/d")[0] == 0
    c.stop(force=True)
    backup = str(tmp_path / "c1.tar.zst")
    res = c.export(backup, volumes=True)
    assert res.volumes == ["bt/data"]
    with pytest.raises(SysmgrError, match="storage volume 'data' already exists"):
        client.containers.import_(backup, name="c2")          # same pool, same name: refused
    assert not client.containers.exists("c2")
    c.delete(force=True)
    vol.delete()
    c2 = client.containers.import_(backup, name="c2")
    c2.start()
    assert sh(c2, "cat /data/d/f; stat -c '%u:%g' /data/d/f") == (0, "kept\n1234:4321\n")
    assert client.storage_volumes.get("bt", "data").used_by == ["c2"]


def test_through_the_cli(client):
    root = client.root

    def cli(*args: str) -> str:
        res = run_cli(*args, root=root)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res.stdout

    cli("storage", "volume", "create", "bt", "web", "size=30MiB")
    cli("launch", "busybox", "w1")
    cli("storage", "volume", "attach", "bt", "web", "w1", "www", "/var/www")
    assert cli("exec", "w1", "--", "sh", "-c", "echo page > /var/www/index; cat /var/www/index") \
        == "page\n"
    listed = json.loads(cli("storage", "volume", "list", "bt", "--format", "json"))
    assert [(v["name"], v["used_by"], v["config"]) for v in listed] == \
        [("web", ["w1"], {"size": "30MiB"})]
    res = run_cli("storage", "volume", "delete", "bt", "web", root=root)
    assert res.returncode == 1 and "used by container w1" in res.stderr
    cli("storage", "volume", "snapshot", "bt", "web")
    cli("storage", "volume", "set", "bt", "web", "size=40MiB")
    assert cli("storage", "volume", "get", "bt", "web", "size") == "40MiB\n"
    shown = cli("storage", "volume", "show", "bt", "web")
    assert "snap0" in shown and "used_by:\n- w1" in shown
    res = run_cli("storage", "volume", "copy", "bt/web", "default/web2", root=root)
    assert res.returncode == 2 and "cannot enforce a volume size" in res.stderr
    cli("storage", "volume", "copy", "bt/web", "bt/web2", "--volume-only")
    cli("storage", "volume", "detach", "bt", "web", "w1")
    assert cli("exec", "w1", "--", "ls", "/var/www") == ""
    cli("storage", "volume", "delete", "bt", "web/snap0")
    cli("storage", "volume", "move", "bt/web", "bt/site")
    cli("storage", "volume", "delete", "bt", "site")
    res = run_cli("storage", "delete", "bt", root=root)
    assert res.returncode == 1 and "web2" in res.stderr   # a pool with volumes stays
