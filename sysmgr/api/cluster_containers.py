"""``client.containers`` on an admin root with cluster members: the same managers and objects,
across every member.

``all()`` asks every member at once (an unreachable one is left out; :meth:`survey` says
which and why), ``get(name)`` finds the member a container lives on, and ``create`` places
a new container (``target``: a member, or ``@group``) and copies its image there first when
the member lacks it. Each :class:`~sysmgr.api.containers.Container` returned works on its
own member; its ``location`` names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from sysmgr.api.base import collect_warnings
from sysmgr.api.containers import Container, ContainerManager, MemberClient
from sysmgr.api.fanout import failures

Progress = Callable[[str], None]
Warn = Callable[[str], None]


@dataclass
class Survey:
    """Every reachable member's containers, and the members that did not answer (why)."""

    containers: list[Container] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)


class ClusterContainerManager(ContainerManager):
    """``client.containers`` of a cluster's admin root."""

    def __init__(self, client: Any) -> None:
        """``client``: the admin root's :class:`~sysmgr.api.client.Client`."""
        super().__init__(client)
        self._cluster = client.cluster

    def on(self, member: str) -> MemberClient:
        return MemberClient(member, self._cluster.backend(member), self._cluster)

    def survey(self, *, usage: bool = False, members: Sequence[str] | None = None,
               counters: bool = False) -> Survey:
        """Every member's containers (``members``: only those), all asked at once;
        ``usage``, ``counters``: as :meth:`ContainerManager.all`."""
        ms = self._cluster.member_set()
        kw = {"counters": True} if counters else {}
        outs = ms.each(lambda m, b: b.container_views(usage=usage, **kw), members)
        down = failures(outs)
        found = [Container(MemberClient(m, ms.backend(m), self._cluster), v)
                 for m, o in outs.items() if o.ok for v in o.unwrap()]
        return Survey(found, down)

    def all(self, *, usage: bool = False, counters: bool = False) -> list[Container]:
        """Every container of every member that answered."""
        return self.survey(usage=usage, counters=counters).containers

    def names(self) -> list[str]:
        """Every container's name on every member that answered (no status read)."""
        outs = self._cluster.member_set().each(lambda m, b: b.container_names())
        return sorted(n for o in outs.values() if o.ok for n in o.unwrap())

    def get(self, name: str) -> Container:
        on = self.on(self._cluster.locate(name))
        return Container(on, on.backend.container_view(name))

    def _backend_of(self, name: str) -> Any:
        """Wherever the container lives (looked up on every member first)."""
        return self.on(self._cluster.locate(name)).backend

    def _by_member(self, names: Sequence[str], call: Callable[[Any, list[str]], list[Any]]
                   ) -> list[Any]:
        """``call(backend, names)`` once per member, for the names it holds (a name found on
        no member, or on several, is its own failed outcome); outcomes in ``names``' order."""
        from sysmgr.errors import SysmgrError
        from sysmgr.types import Outcome

        out: dict[str, Any] = {}
        where: dict[str, list[str]] = {}
        for name in dict.fromkeys(names):
            try:
                where.setdefault(self._cluster.locate(name), []).append(name)
            except SysmgrError as e:
                out[name] = Outcome(name, error=e.message, hint=e.hint, exit_code=e.exit_code)
        for member, held in where.items():
            out.update((o.name, o) for o in call(self._cluster.backend(member), held))
        return [out[name] for name in dict.fromkeys(names)]

    def start_many(self, names: Sequence[str]) -> list[Any]:
        """As on one host, one call per member holding some of ``names``."""
        return self._by_member(names, lambda b, held: b.containers_start(held))

    def stop_many(self, names: Sequence[str], *, timeout: float | None = None,
                  force: bool = False) -> list[Any]:
        return self._by_member(
            names, lambda b, held: b.containers_stop(held, timeout=timeout, force=force))

    def delete_many(self, names: Sequence[str], *, force: bool = False) -> list[Any]:
        """As on one host; a container a move holds is refused with the holder, and a
        deleted one's location leaves the cluster store."""
        from sysmgr.api.cluster_store import deleting

        with deleting(self._cluster, names) as deleted:
            outcomes = self._by_member(names,
                                       lambda b, held: b.containers_delete(held, force=force))
            deleted[:] = [o.name for o in outcomes if o.ok]
        return outcomes

    def exists(self, ref: str) -> bool:
        ms = self._cluster.member_set()
        return any(o.ok and o.value for o in ms.each(lambda m, b: b.container_exists(ref)).values())

    def create(self, name: str | None, image: str, *, profiles: Sequence[str] | None = None,
               config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None, pool: str | None = None,
               description: str = "", start: bool = False, wait: bool = True,
               target: str | None = None, progress: Progress | None = None) -> Container:
        """Create (and ``start``) a container on ``target`` (a member), or on the member
        placement chooses (``target="@group"``: among that group's members). The image is
        copied to that member first when it lacks it; without a ``name``, one no member
        uses."""
        from sysmgr.api.cluster_store import placing

        name = name or self.free_name()
        # the slot is reserved in the cluster store first (no double-booking by concurrent
        # launches); the reservation becomes the location, or is released on failure
        with placing(self._cluster, name, target=target, config=config,
                     profiles=profiles) as member:
            self._cluster.ensure_image(member, image, progress=progress)
            on = self.on(member)
            on.backend.container_create(name, image, profiles=profiles, config=config,
                                        devices=devices, pool=pool, description=description,
                                        start=start)
        return Container(on, on.backend.container_view(name))

    def import_(self, path: str, *, name: str | None = None, pool: str | None = None,
                progress: Progress | None = None, allow_devices: bool = False,
                warn: Warn | None = None, target: str | None = None) -> Container:
        """Import a backup on ``target`` (a member or ``@group``; default: placement)."""
        said: list[str] = []
        member = self._cluster.choose(name, target=target, config=None, profiles=None)
        on = self.on(member)
        got = on.backend.container_import(path, name=name, pool=pool, progress=progress,
                                          allow_devices=allow_devices,
                                          warn=collect_warnings(said, warn))
        from sysmgr.api.cluster_store import record_location

        record_location(self._cluster, got, member)
        c = Container(on, on.backend.container_view(got))
        c.warnings = tuple(said)
        return c
