"""Copy and move containers between cluster members: the *mover*.

The mover talks to two endpoints at once (:mod:`sysmgr.engine.migration`): the source on
the member the container lives on, the target on the member it goes to; either may be
this host (``local:``) or a member over SSH. Volumes travel as the pools' own streams where
both pools speak the same format (btrfs ``send``/``receive``: snapshots oldest first, each
against the previous; the base of an incremental matched by UUID), else as tar. The mover
passes the frames from source to target and counts them.

**Move** (:meth:`Mover.move`). A running container on two pools that stream incrementally
moves *near-live*: a first full round while it runs, then rounds sending what changed since
the last (``migration.precopy.rounds``, until one sends at most
``migration.precopy.threshold``); then it is stopped (the halt signal, a kill after
``boot.host_shutdown_timeout``), the last increment is sent, the target commits and starts
it, and only once it runs there is the source's copy deleted. Otherwise (``live=False``,
``--stateless``, a dir pool on either side) it is stopped first and sent whole. The
downtime is measured in three parts — the guest's shutdown, sysmgr's share (from the
source's init exiting to the target's running), the guest answering on the target — and
kept in the container's record (``volatile.last_migration``).

**Never the only copy.** Before anything changes the mover writes a journal entry in the
admin root (``cluster/migrations/<id>.json``), and the source's record is marked
(:mod:`sysmgr.engine.migration.markers`): nothing but the move starts or deletes it. On any
failure (an endpoint's error, a broken link, a killed member, Ctrl-C) both endpoints are
dropped and the move is *settled*: if the target had not committed, its partial copy goes
and the source is started again when it ran; once the source's copy is deleted the move is
finished instead. When the outcome cannot be known (the target unreachable right after its
commit) nothing is started anywhere and the entry stays: the next ``sysmgr move NAME``,
``sysmgr init`` on the admin host, or :func:`settle_pending` settles it from the target's
record.
"""

from __future__ import annotations

from typing import Any

from sysmgr.api.cluster_store import move_lock, record_location
from sysmgr.api.migration_journal import Entry, entries, settle, settle_all, settle_pending
from sysmgr.api.mover import Downtime, Meter, MigrationResult, Mover, Progress
from sysmgr.errors import AlreadyExists, Conflict

__all__ = ["Downtime", "Entry", "MigrationResult", "Mover", "ThisHost", "check_free",
           "cluster_of", "copy", "entries", "move", "settle", "settle_all", "settle_pending"]

#: cluster manager (``client.cluster``): spec(), backend(), admin_root, member_set()
Cluster = Any


def check_free(cluster: Cluster, name: str, *, allowed: str | None = None) -> None:
    """Refuse a new name some member (other than ``allowed``) already uses."""
    if isinstance(cluster, ThisHost):
        return
    ms = cluster.member_set()
    taken = sorted(m for m, o in ms.each(lambda m, b: b.container_exists(name)).items()
                   if o.ok and o.value and m != allowed)
    if taken:
        raise AlreadyExists(f"container {name!r} already exists on {', '.join(taken)}")



# -- entry points ------------------------------------------------------------------------------

class ThisHost:
    """A single host as a one-member "cluster" (``local``): a copy ``--refresh`` between two
    containers of one root runs through the same mover."""

    member = "local"

    def __init__(self, client: Any) -> None:
        self.client = client
        self.admin_root = client.layout.root

    def backend(self, name: str) -> Any:
        return self.client.backend


def cluster_of(client: Any) -> Any:
    """The cluster a client belongs to (its admin root's), or None on a single host."""
    cluster = getattr(client, "cluster", None)
    if cluster is not None and getattr(client, "member", None) is not None:
        return cluster
    if cluster is not None and getattr(client, "clustered", True) and \
            getattr(cluster, "enabled", False):
        return cluster
    return None


def move(cluster: Cluster, name: str, source: str, target: str, *,
         new_name: str | None = None, pool: str | None = None, live: bool = True,
         progress: Progress | None = None, meter: Meter | None = None,
         wait: bool = False) -> MigrationResult:
    """Move container ``name`` from member ``source`` to ``target`` (as ``new_name``),
    holding its lock in the cluster store (another move or a delete of it is refused, or
    ``wait``s); its location flips to ``target`` at the move's final step. An interrupted
    earlier move of it is settled first."""
    say = progress or (lambda _m: None)
    with move_lock(cluster, name, f"move of {name} to {target}", wait=wait, say=say) as held:
        for line in settle_pending(cluster, name):
            say(line)
        if cluster.spec(target).evacuated:  # an unknown member: NotFound before anything
            raise Conflict(f"member {target} is evacuated: nothing moves there until "
                           f"'sysmgr cluster restore {target}'")
        new = new_name or name
        if held.waited:  # the move it waited for may have taken it elsewhere
            source = cluster.locate(name)
        check_free(cluster, new, allowed=source if new == name else None)
        mover = Mover(cluster, name, source, target, new_name=new, pool=pool,
                      progress=progress, meter=meter)
        mover.released = lambda: held.flip(name, source, target, new)
        return mover.move(live=live)


def copy(cluster: Cluster, name: str, source: str, target: str, new_name: str, *,
         pool: str | None = None, refresh: bool = False, progress: Progress | None = None,
         meter: Meter | None = None, changes: dict[str, Any] | None = None,
         instance_only: bool = False) -> MigrationResult:
    """Copy container ``name`` (with its snapshots) from ``source`` to ``target`` as
    ``new_name``; ``refresh``: bring that existing copy up to date; ``changes``: the copy's
    definition changed (``profiles``, ``config``, ``devices``: ``lxc copy -p/-c/-d``);
    ``instance_only``: without its snapshots."""
    if not isinstance(cluster, ThisHost):
        cluster.spec(target)
        if not refresh:
            check_free(cluster, new_name)
    result = Mover(cluster, name, source, target, new_name=new_name, pool=pool,
                   progress=progress, meter=meter, changes=changes,
                   instance_only=instance_only).copy(refresh=refresh)
    if not isinstance(cluster, ThisHost) and not refresh:
        record_location(cluster, new_name, target)
    return result
