"""Intents: what a storage operation is about to do, so a killed sysmgr leaves nothing behind.

Creating, copying, importing, renaming or snapshotting a container changes a pool first and
the record last. If sysmgr dies in between (``kill -9``, power loss), the pool holds a volume
the record does not know about. Before changing a pool, such an operation writes an *intent*
file (``<root>/tmp/intents/*.json``: the operation, the container, the pool...) and removes it
once the record is committed. :func:`recover` — run by ``init`` and at the start of every
storage operation, under the root's lock — resolves the intents of dead processes:

* ``create`` / ``copy`` / ``import``: no record -> the volume (with its snapshots, also
  those received before the volume existed) and any temporary image volumes are deleted;
  a record -> it was committed, nothing to do;
* ``snapshot``: no snapshot record -> the snapshot volume is deleted;
* ``delete-snapshot``: finished (volume and record removed);
* ``rename`` / ``rename-snapshot``: undone when the record still has the old name, finished
  otherwise;
* ``restore``: redone when the container is stopped (the filesystem swap is atomic, the
  record update is idempotent);
* ``export``: the temporary snapshot and the partial output file are removed;
* ``send`` (the source of a copy or move): its temporary snapshots are removed, and a move
  that had not stopped the container yet is dropped (:mod:`sysmgr.engine.migration`);
* ``receive`` (a refresh of an existing copy): the snapshots it received are removed;
* ``volume`` (a custom volume being made: create, copy, move, import): no record -> the
  volume, its temporary images and a copy's temporary source snapshot are removed.

Leftover staging entries of the drivers (``.staging-*`` of dead processes) are swept by the
pool's ``mount()`` afterwards. Resolution is idempotent: an intent whose resolution fails is
kept and retried next time.

Layer: engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import TYPE_CHECKING, Any, Callable, Iterator

from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import records, restoring
from sysmgr.engine.host import Host
from sysmgr.errors import NotFound, SysmgrError
from sysmgr.state.snapshots import SnapshotStore

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.drivers.storage.base import StoragePool


def _dir(host: Host) -> str:
    return os.path.join(host.layout.tmp, "intents")


def _starttime(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None when it is gone; tells a
    live process from a new one that got the same pid. A zombie is gone: killed, it does
    nothing more, however late its parent reaps it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _alive(pid: int, starttime: int | None) -> bool:
    now = _starttime(pid)
    return now is not None and (starttime is None or now == starttime)


def owner() -> dict[str, Any]:
    """This process as an intent's owner: ``{"pid", "starttime"}`` (see :func:`owner_alive`)."""
    return {"pid": os.getpid(), "starttime": _starttime(os.getpid())}


def owner_alive(data: dict[str, Any]) -> bool:
    """Whether the process an :func:`owner` describes still runs."""
    return _alive(int(data.get("pid") or 0), data.get("starttime"))


class Intent:
    """One pending operation; ``note()`` adds facts learnt on the way (temporary names)."""

    def __init__(self, path: str, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def note(self, **facts: Any) -> None:
        self.data.update(facts)
        self.write()

    def add(self, key: str, value: Any) -> None:
        """Append ``value`` to the list ``key`` (e.g. a temporary image to remove)."""
        self.data.setdefault(key, []).append(value)
        self.write()

    def write(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@contextlib.contextmanager
def intent(host: Host, op: str, *, resolve_on_error: bool = True, **data: Any) -> Iterator[Intent]:
    """Record an intent for the block. On success it is removed; on an exception the
    operation's own undo has run, and the intent is resolved once more (idempotent) and
    removed, or kept for the next :func:`recover` if that fails too. Operations whose
    resolution would redo them (``restore``) pass ``resolve_on_error=False``."""
    d = _dir(host)
    os.makedirs(d, mode=0o700, exist_ok=True)
    tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(data.get("container", "")))
    path = os.path.join(d, f"{op}-{tag}-{os.getpid()}-{secrets.token_hex(4)}.json")
    it = Intent(path, {"op": op, "pid": os.getpid(), "starttime": _starttime(os.getpid()), **data})
    it.write()
    try:
        yield it
    except BaseException:
        if not resolve_on_error:
            it.remove()
            raise
        try:
            resolve(host, it.data)
        except Exception:  # noqa: BLE001 - kept for the next recover(); the original error wins
            pass
        else:
            it.remove()
        raise
    it.remove()


def pending(host: Host) -> list[tuple[str, dict[str, Any]]]:
    """Intents of processes that are gone: ``(path, data)``, oldest first."""
    d = _dir(host)
    try:
        names = sorted(os.listdir(d), key=lambda n: os.stat(os.path.join(d, n)).st_mtime)
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        if not n.endswith(".json"):
            continue
        path = os.path.join(d, n)
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                os.unlink(path)  # a torn write: nothing was changed after it
            continue
        pid = int(data.get("pid", 0))
        if pid == os.getpid() or (pid and _alive(pid, data.get("starttime"))):
            continue  # in progress (this process, or another one that holds no lock yet)
        out.append((path, data))
    return out


def recover(host: Host) -> list[str]:
    """Resolve the intents of dead processes (call under the root's lock); return what was
    done, one line each."""
    done: list[str] = []
    pools: set[str] = set()
    for path, data in pending(host):
        try:
            line = resolve(host, data)
        except SysmgrError:
            continue  # kept: retried by the next recover()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if data.get("pool"):
            pools.add(data["pool"])
        if line:
            done.append(line)
    for pool in sorted(pools):
        if host.store.has_pool(pool):
            with contextlib.suppress(SysmgrError, OSError):
                host.pool_driver(pool).mount()  # sweeps the drivers' staging leftovers
    return done


Resolver = Callable[[Host, dict[str, Any], "StoragePool | None"], str]


def resolve(host: Host, d: dict[str, Any]) -> str:
    """Make the host consistent with an interrupted operation ``d`` (idempotent); one line
    saying what was done, or ""."""
    pool = d.get("pool", "")
    if pool and not host.store.has_pool(pool):
        return ""  # the pool is gone, and everything that was in it
    drv = host.pool_driver(pool) if pool else None
    if drv is not None:
        drv.mount()  # an unmounted pool would make every volume look absent
    fn = _RESOLVERS.get(str(d.get("op")))
    return fn(host, d, drv) if fn is not None else ""


def _unfinished_create(host: Host, d: dict[str, Any], drv: "StoragePool | None") -> str:
    """``create`` / ``copy`` / ``import``: no record -> the volume and temporary images go."""
    op, name, pool = d.get("op"), d.get("container", ""), d.get("pool", "")
    st = host.store
    line = ""
    assert drv is not None
    rec = st.container(name) if st.has_container(name) else None
    if rec is None or rec.pool != pool:
        # a receive (a copy or move arriving) killed in its first snapshot has no volume
        # yet, only that snapshot, partly received: it goes with the volume's snapshots
        if drv.has_container(name) or d.get("snapshots"):
            drv.delete_container(name)
            line = f"removed the unfinished {op} of container {name} from pool {pool}"
        if rec is None:
            records.remove_tree(host.layout.container_dir(name), ignore_errors=True)
    for fp in d.get("images", []):
        if not st.image_pools(fp) or pool not in st.image_pools(fp):
            drv.delete_image(fp)
    src_pool, src_snap = d.get("source_pool"), d.get("source_snapshot")
    if src_pool and src_snap and st.has_pool(src_pool):
        with contextlib.suppress(NotFound):
            host.pool_driver(src_pool).delete_snapshot(d["source"], src_snap)
    return line


def _unfinished_snapshot(host: Host, d: dict[str, Any], drv: "StoragePool | None") -> str:
    name, snap = d.get("container", ""), d["snapshot"]
    if host.store.has_container(name) and SnapshotStore(host.store).has(name, snap):
        return ""
    assert drv is not None
    with contextlib.suppress(NotFound):
        drv.delete_snapshot(name, snap)
    return f"removed the unfinished snapshot {name}/{snap}"


def _unfinished_snapshot_delete(host: Host, d: dict[str, Any], drv: "StoragePool | None") -> str:
    name, snap = d.get("container", ""), d["snapshot"]
    assert drv is not None
    drv.delete_snapshot(name, snap)
    if host.store.has_container(name):
        with host.store.transaction():
            SnapshotStore(host.store).delete(name, snap)
    return f"finished deleting snapshot {name}/{snap}"


def _unfinished_rename(host: Host, d: dict[str, Any], drv: "StoragePool | None") -> str:
    st, name, new = host.store, d.get("container", ""), d["new"]
    assert drv is not None
    rdir_old, rdir_new = host.layout.container_dir(name), host.layout.container_dir(new)
    if st.has_container(new):
        if os.path.isdir(rdir_old) and not os.path.exists(rdir_new):
            os.rename(rdir_old, rdir_new)
        return ""
    if st.has_container(name) and drv.has_container(new) and not drv.has_container(name):
        drv.rename_container(new, name)
    if os.path.isdir(rdir_new) and not os.path.exists(rdir_old):
        os.rename(rdir_new, rdir_old)
    return f"undid the unfinished rename of {name} to {new}"


def _unfinished_snapshot_rename(host: Host, d: dict[str, Any], drv: "StoragePool | None"
                                ) -> str:
    """Undone when the record still has the old name (the pool's rename is atomic)."""
    st, name, snap, new = host.store, d.get("container", ""), d["snapshot"], d["new"]
    snaps = SnapshotStore(st)
    if drv is None or not st.has_container(name) or not snaps.has(name, snap):
        return ""
    if new in drv.list_snapshots(name) and snap not in drv.list_snapshots(name):
        drv.rename_snapshot(name, new, snap)
    return f"undid the unfinished rename of snapshot {name}/{snap} to {new}"


def _unfinished_restore(host: Host, d: dict[str, Any], drv: "StoragePool | None") -> str:
    """Redone when the container is stopped (the swap is atomic, the record update
    idempotent)."""
    st, name, snap = host.store, d.get("container", ""), d["snapshot"]
    if st.has_container(name) and SnapshotStore(st).has(name, snap) and \
            records.status(host, st.container(name)).state == STOPPED:
        plan, pool_drv = restoring.check(host, name, snap)
        restoring.swap(host, plan, pool_drv, recovering=True)
        return f"finished restoring {name} from {snap}"
    return ""


def _unfinished_export(host: Host, d: dict[str, Any], drv: "StoragePool | None") -> str:
    name, snap = d.get("container", ""), d.get("snapshot")
    if snap and drv is not None and host.store.has_container(name):
        with contextlib.suppress(NotFound):
            drv.delete_snapshot(name, snap)
    partial = d.get("partial")
    if partial:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return ""


def _unfinished_send(host: Host, d: dict[str, Any], drv: "StoragePool | None") -> str:
    """The source of a copy or move died: its temporary snapshots go, and a move that had
    not stopped the container yet is dropped (its mark goes)."""
    from sysmgr.engine.migration import markers  # moves only

    name, mid = d.get("container", ""), d.get("migration")
    if drv is None or not host.store.has_container(name):
        return ""
    for snap in d.get("snapshots", []):
        with contextlib.suppress(NotFound):
            drv.delete_snapshot(name, snap)
    m = markers.marker(host.store.container(name))
    if mid and m is not None and m.get("id") == mid and m.get("phase") == "copying":
        markers.set_marker(host, name, None)
        return f"dropped the unfinished move of {name} (it stays here)"
    return ""


def _unfinished_receive(host: Host, d: dict[str, Any], drv: "StoragePool | None") -> str:
    """A refresh died before its commit: the snapshots it received go."""
    name = d.get("container", "")
    if drv is None or not host.store.has_container(name):
        return ""
    recorded = {s.name for s in SnapshotStore(host.store).all(name)}
    gone = [s for s in d.get("snapshots", []) if s not in recorded]
    for snap in gone:
        with contextlib.suppress(NotFound):
            drv.delete_snapshot(name, snap)
    return f"removed the unfinished refresh of {name}" if gone else ""


def _unfinished_volume(host: Host, d: dict[str, Any], drv: "StoragePool | None") -> str:
    """A custom volume being made (create, copy, move, import): no record -> the volume
    (with its snapshots), temporary images and a copy's temporary source snapshot go."""
    from sysmgr.state import volumes as svol  # custom volumes only

    name, pool, st = d.get("volume", ""), d.get("pool", ""), host.store
    assert drv is not None
    view, line = drv.custom_volumes(), ""
    if not svol.exists(st, pool, name) and (view.has_container(name) or d.get("snapshots")):
        view.delete_container(name)
        line = f"removed the unfinished storage volume {pool}/{name}"
    for fp in d.get("images", []):
        drv.delete_image(fp)
    src_pool, src_snap = d.get("source_pool"), d.get("source_snapshot")
    if src_pool and src_snap and st.has_pool(src_pool):
        with contextlib.suppress(NotFound):
            host.pool_driver(src_pool).custom_volumes().delete_snapshot(d["source"], src_snap)
    return line


_RESOLVERS: dict[str, Resolver] = {
    "create": _unfinished_create, "copy": _unfinished_create, "import": _unfinished_create,
    "snapshot": _unfinished_snapshot, "delete-snapshot": _unfinished_snapshot_delete,
    "rename": _unfinished_rename, "rename-snapshot": _unfinished_snapshot_rename,
    "restore": _unfinished_restore, "export": _unfinished_export,
    "send": _unfinished_send, "receive": _unfinished_receive, "volume": _unfinished_volume,
}
