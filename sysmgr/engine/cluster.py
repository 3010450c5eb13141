"""The admin host's cluster, engine side: member records (add, update, remove, groups,
evacuated marks) in the admin root's :class:`~sysmgr.state.cluster.ClusterStore`, what a
member says about itself (``hello``), and placement over those facts.

The API reaches members (local roots or SSH) and calls in here for everything that is not
a call on a member: validation of member records, the store, and the pure placement rule
(:mod:`sysmgr.model.placement`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from sysmgr.errors import Issue, ValidationError
from sysmgr.layout import Layout
from sysmgr.model import members as mmembers
from sysmgr.model import placement
from sysmgr.engine import cluster_store
from sysmgr.state.cluster import Capacity, ClusterStore
from sysmgr.types import MemberSpec

__all__ = ["ClusterStore", "MemberFacts"]


# -- the store --------------------------------------------------------------------------------

def has_store(layout: Layout) -> bool:
    """Whether the root has a cluster record at all (cheap: stats, no SQLite, no etcd)."""
    return cluster_store.has_store(layout)


def open_store(layout: Layout) -> ClusterStore:
    """The admin root's cluster store: SQLite by default, etcd once ``cluster store set``."""
    return cluster_store.open_store(layout)


def _raise(problems: Sequence[tuple[str, str]]) -> None:
    if problems:
        raise ValidationError([Issue(reason, path=path) for path, reason in problems])


def new_member(name: str, url: str, *, admin_root: str, root: str | None = None,
               key: str | None = None, sysmgr: str | None = None,
               groups: Sequence[str] = (), host_key: str | None = None,
               config: Mapping[str, str] | None = None) -> MemberSpec:
    """A member record from ``cluster add``'s arguments, checked (ValidationError) and
    normalised: ``ssh://host`` gets its user (root); a ``local:`` member's root defaults to
    the admin root itself (the admin host as a member of its own cluster)."""
    url = url.strip()
    problem = mmembers.url_problem(url)
    _raise([("url", f"invalid member URL {url!r}: {problem}")] if problem else [])
    url = mmembers.normalize_url(url)
    default_root = os.path.abspath(admin_root) if url == mmembers.LOCAL_URL else mmembers.DEFAULT_ROOT
    if key is not None and url == mmembers.LOCAL_URL:
        _raise([("--key", "a local: member is not reached over SSH: it takes no key")])
    spec = MemberSpec(name=name, url=url,
                      root=os.path.abspath(root) if root and url == mmembers.LOCAL_URL
                      else (root or default_root),
                      key=os.path.abspath(key) if key else None,
                      sysmgr=sysmgr or mmembers.DEFAULT_SYSMGR,
                      groups=tuple(dict.fromkeys(groups)),
                      config=tuple(sorted((config or {}).items())), host_key=host_key)
    check_member(spec)
    return spec


def check_member(spec: MemberSpec) -> None:
    _raise(mmembers.member_problems(spec))


def add_member(store: ClusterStore, spec: MemberSpec) -> None:
    check_member(spec)
    store.add(spec)


def put_member(store: ClusterStore, spec: MemberSpec) -> None:
    check_member(spec)
    store.put(spec)


def same_record(a: MemberSpec, b: MemberSpec) -> bool:
    """Whether two records say the same thing (the evacuated mark is state, not record)."""
    return replace(a, evacuated=False) == replace(b, evacuated=False)


def set_groups(store: ClusterStore, name: str, groups: Sequence[str]) -> MemberSpec:
    """Give a member exactly ``groups`` (duplicates dropped, order kept)."""
    groups = tuple(dict.fromkeys(g.strip() for g in groups if g.strip()))
    _raise([(f"groups.{i}", f"invalid group name {g!r}: {mmembers.group_name_problem(g)}")
            for i, g in enumerate(groups) if mmembers.group_name_problem(g)])
    store.set_groups(name, groups)
    return store.member(name)


def groups_of(specs: Sequence[MemberSpec]) -> dict[str, list[str]]:
    """group -> its members (a group exists while some member is in it)."""
    out: dict[str, list[str]] = {}
    for s in specs:
        for g in s.groups:
            out.setdefault(g, []).append(s.name)
    return dict(sorted(out.items()))


def check_target(target: str, specs: Sequence[MemberSpec]) -> None:
    """A target must name a member, or (``@GROUP``) a group some member is in
    (ValidationError)."""
    problem = mmembers.target_problem(target)
    if problem:
        raise ValidationError(problem)
    if target.startswith("@"):
        if target[1:] not in groups_of(specs):
            raise ValidationError(f"no cluster member is in group {target[1:]!r}",
                                  hint="sysmgr cluster group list shows the groups")
    elif target not in {s.name for s in specs}:
        raise ValidationError(f"no cluster member named {target!r} " + members_note(specs),
                              hint="sysmgr cluster list shows the members")


def members_note(specs: Sequence[MemberSpec]) -> str:
    """``(members: a, b)``, or that there are none, for messages about a missing member."""
    names = sorted(s.name for s in specs)
    return f"(members: {', '.join(names)})" if names else "(this root has no cluster members)"


# -- what a member says about itself ------------------------------------------------------------

@dataclass(frozen=True)
class MemberFacts:
    """A member's ``hello``: its sysmgr, RPC version, host and load."""

    version: str = ""
    rpc: int | None = None
    hostname: str = ""
    root: str = ""
    containers: int = 0
    cpus: int | None = None
    memory_total: int | None = None
    memory_free: int | None = None


def _get(obj: Any, *names: str) -> Any:
    for n in names:
        if isinstance(obj, Mapping) and n in obj:
            return obj[n]
        if not isinstance(obj, Mapping) and hasattr(obj, n):
            return getattr(obj, n)
    return None


def facts_of(hello: Any) -> MemberFacts:
    """:class:`MemberFacts` from a ``hello`` answer (a map, or a record with the same
    fields; the facts may sit under ``facts``)."""
    facts = _get(hello, "facts") or {}

    def num(*names: str) -> int | None:
        v = _get(facts, *names)
        v = _get(hello, *names) if v is None else v
        return int(v) if isinstance(v, (int, float)) else None

    return MemberFacts(
        version=str(_get(hello, "version", "sysmgr_version", "sysmgr") or ""),
        rpc=num("rpc", "rpc_version"), hostname=str(_get(hello, "hostname") or ""),
        root=str(_get(hello, "root") or ""), containers=num("containers", "container_count") or 0,
        cpus=num("cpus", "cpu_count"),
        memory_total=num("memory_total", "mem_total", "memory_total_bytes"),
        memory_free=num("memory_free", "mem_free", "memory_available", "memory_free_bytes"))


# -- placement ---------------------------------------------------------------------------------

def candidate(spec: MemberSpec, facts: MemberFacts | None, offline: str = "") -> placement.Candidate:
    """The member as placement sees it (``facts`` None: it did not answer)."""
    return placement.Candidate(
        name=spec.name, online=facts is not None, offline_reason=offline,
        evacuated=spec.evacuated, groups=spec.groups, scheduler=mmembers.scheduler(spec),
        containers=facts.containers if facts else 0,
        memory_free=facts.memory_free if facts else None,
        memory_total=facts.memory_total if facts else None)


def memory_request(config: Mapping[str, str] | None, profiles: Sequence[str],
                   profile_configs: Mapping[str, Mapping[str, str]]) -> str | None:
    """The ``limits.memory`` a new container gets: its own, else the last of its profiles
    (as a member defines them) that sets one."""
    if config and config.get("limits.memory"):
        return config["limits.memory"]
    for p in reversed(list(profiles)):
        value = (profile_configs.get(p) or {}).get("limits.memory")
        if value:
            return value
    return None


def place(candidates: Sequence[placement.Candidate], *, group: str | None,
          memory: str | None) -> placement.Placement:
    return placement.place(candidates, placement.Request(group=group, memory=memory))


def evacuate_mode(expanded_config: Mapping[str, str]) -> str:
    """The container's ``cluster.evacuate`` (auto, migrate or stop)."""
    return (expanded_config.get("cluster.evacuate") or "auto").strip().lower()


# -- capacity for reservations (the cluster store) --------------------------------------------

def with_count(c: placement.Candidate, count: int) -> placement.Candidate:
    """``c`` counting ``count`` containers when the store knows more than the member said
    (reservations of launches under way)."""
    return replace(c, containers=max(c.containers, count))


def memory_need(memory: str | None) -> int:
    """Bytes an absolute ``limits.memory`` reserves on a member (0: none)."""
    return placement.memory_need(memory) or 0


def known_full(specs: Mapping[str, MemberSpec], counts: Mapping[str, int]) -> dict[str, str]:
    """member -> why it is full, for the members ``counts`` (the store's) already shows at
    their ``limits.instances``: not worth a reservation's round trip."""
    out = {}
    for name, spec in specs.items():
        why = capacity(spec).refusal(counts.get(name, 0), 0, 0)
        if why is not None:
            out[name] = why
    return out


def capacity(spec: MemberSpec, facts: Mapping[str, Any] | None = None) -> Capacity:
    """A member's limits: ``limits.instances`` and ``limits.memory`` from its config (the
    memory defaults to the total its controller reports)."""
    total = facts_of(facts).memory_total if facts else None
    count, memory = mmembers.capacity(spec, total)
    return Capacity(count, memory)
