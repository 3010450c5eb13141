"""``client.cluster``: the members of the admin root's cluster, and what acts on a member as
a whole (evacuate, restore) or on the cluster (placing a container, copying an image, finding
where a container lives).

    >>> client.cluster.members.add("node2", "ssh://root@10.0.0.2", accept_host_key="SHA256:...")
    >>> [m.name for m in client.cluster.members.all()]
    >>> client.cluster.evacuate("node2")

Members are recorded in the cluster store (``cluster.db`` in the admin root, or etcd:
``client.cluster.store_admin``); nothing here changes a member unless the call says so
(``remove`` only forgets one). With a shared store a member's liveness is its controller's
lease, read from the store; while the store has no quorum, read-only calls answer from the
members and the last members list seen (``stale`` says why).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from sysmgr.api import remote
from sysmgr.api.backend import Backend
from sysmgr.api.fanout import MemberSet, failures
from sysmgr.engine import cluster as ecluster
from sysmgr.engine import cluster_store as estore
from sysmgr.engine.cluster import ClusterStore
from sysmgr.errors import (
    AlreadyExists, Conflict, HostKeyRejected, NotFound, RemoteError, StoreUnavailable,
    SysmgrError, ValidationError)
from sysmgr.layout import Layout
from sysmgr.types import MemberSpec

if TYPE_CHECKING:  # pragma: no cover - evacuation and the store admin load when used
    from sysmgr.api.cluster_store import StoreManager
    from sysmgr.api.evacuation import Evacuation

Progress = Callable[[str], None]
Confirm = Callable[[str], bool]
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}=?")


@dataclass(frozen=True)
class MemberState:
    """A member as ``cluster list`` shows it: its record and what it says now."""

    name: str
    url: str
    root: str
    groups: tuple[str, ...]
    evacuated: bool
    online: bool
    reason: str = ""                 # why it is offline
    version: str = ""
    containers: int | None = None
    memory_free: int | None = None
    memory_total: int | None = None
    hostname: str = ""
    cpus: int | None = None

    @property
    def state(self) -> str:
        """ONLINE, OFFLINE or EVACUATED (an evacuated member that does not answer is
        OFFLINE: that is what needs attention)."""
        if not self.online:
            return "OFFLINE"
        return "EVACUATED" if self.evacuated else "ONLINE"


class AdminClient(Protocol):
    """What the cluster needs of its client: the admin root and its own backend."""

    layout: Layout

    @property
    def root(self) -> str: ...

    @property
    def local_backend(self) -> Backend: ...


class Member:
    """A cluster member's record (a snapshot; ``refresh()`` re-reads it)."""

    def __init__(self, cluster: "ClusterManager", spec: MemberSpec) -> None:
        self._cluster = cluster
        self._set(spec)

    def _set(self, spec: MemberSpec) -> None:
        self.spec = spec
        self.name, self.url, self.root = spec.name, spec.url, spec.root
        self.key, self.sysmgr, self.host_key = spec.key, spec.sysmgr, spec.host_key
        self.groups: list[str] = list(spec.groups)
        self.config: dict[str, str] = dict(spec.config)
        self.evacuated = spec.evacuated

    def refresh(self) -> "Member":
        self._set(self._cluster.spec(self.name))
        return self

    def state(self) -> MemberState:
        """What the member says now (OFFLINE with the reason when it does not answer)."""
        return self._cluster.members.states([self.name])[0]

    def __repr__(self) -> str:
        return f"<Member {self.name} {self.url}>"


class MemberManager:
    """``client.cluster.members``."""

    def __init__(self, cluster: "ClusterManager") -> None:
        self._cluster = cluster

    def all(self) -> list[Member]:
        return [Member(self._cluster, s) for s in self._cluster.specs()]

    def get(self, name: str) -> Member:
        return Member(self._cluster, self._cluster.spec(name))

    def exists(self, name: str) -> bool:
        return any(s.name == name for s in self._cluster.specs())

    def add(self, name: str, url: str, *, root: str | None = None, key: str | None = None,
            groups: Sequence[str] = (), sysmgr: str | None = None,
            accept_host_key: str | None = None, confirm: Confirm | None = None,
            config: Mapping[str, str] | None = None,
            warn: Callable[[str], None] | None = None) -> Member:
        """Record a member after checking that it answers (``hello``); with a shared (etcd)
        store, tell it which store it reports to (``warn``: a line when that fails).

        An SSH member's host key must be known: ``accept_host_key`` (``SHA256:...``) names
        the one expected; else ``confirm(fingerprint)`` is asked (a person looking at it);
        else an unknown key is refused with its fingerprint shown.
        """
        c = self._cluster
        spec = ecluster.new_member(name, url, admin_root=c.admin_root, root=root, key=key,
                                   sysmgr=sysmgr, groups=groups, host_key=accept_host_key,
                                   config=config)
        if self.exists(name):
            raise AlreadyExists(f"cluster member {name!r} already exists")
        spec = c.check_reachable(spec, accept_host_key, confirm)
        ecluster.add_member(c.store, spec)
        c.forget_members()
        if c.store_shared:
            from sysmgr.api import cluster_store

            cluster_store.push(c, c.store_admin.config(), names=[name], warn=warn)
        return self.get(name)

    def remove(self, name: str, *, force: bool = False,
               warn: Callable[[str], None] | None = None) -> None:
        """Forget a member (on it, only what the shared store made it report to is cleared,
        when it answers; ``warn``: a line when it does not). Refused while it holds
        containers, or cannot be asked, unless ``force``."""
        c = self._cluster
        spec = c.spec(name)
        if not force:
            st = self.states([name])[0]
            if not st.online:
                raise Conflict(f"member {name} does not answer ({st.reason}): cannot tell "
                               "whether it holds containers", hint="--force forgets it anyway")
            if st.containers:
                raise Conflict(f"member {name} holds {st.containers} container(s): move or "
                               "delete them first", hint="--force forgets the member anyway "
                               "(its containers are left where they are)")
        c.store.remove(name)
        if c.store_shared:
            from sysmgr.api import cluster_store

            conf = c.store_admin.config()
            fix = f"on it, remove {Layout(spec.root).cluster_member}"
            cluster_store.tell(c, {name: (spec, None, estore.store_id(conf))}, fix=fix,
                               warn=warn)
        c.forget_members()
        remote.forget_connections(c.admin_root, name)
        if not spec.is_local and not any(s.url == spec.url for s in c.specs()):
            remote.forget_host_key(c.admin_root, spec.url)  # no other member name uses it

    def set_groups(self, name: str, groups: Sequence[str]) -> Member:
        self._cluster.spec(name)
        ecluster.set_groups(self._cluster.store, name, groups)
        self._cluster.forget_members()
        return self.get(name)

    def groups(self) -> dict[str, list[str]]:
        """group -> its members."""
        return ecluster.groups_of(self._cluster.specs())

    def states(self, names: Sequence[str] | None = None) -> list[MemberState]:
        """Every member (or ``names``) with what it says now, asked all at once."""
        c = self._cluster
        specs = {s.name: s for s in c.specs()}
        chosen = sorted(specs) if names is None else list(names)
        for n in chosen:
            if n not in specs:
                c.spec(n)  # NotFound
        out = []
        for n, (f, reason) in c.member_facts(chosen).items():
            s = specs[n]
            out.append(MemberState(
                s.name, s.url, s.root, s.groups, s.evacuated, f is not None, reason,
                f.version if f else "", f.containers if f else None,
                f.memory_free if f else None, f.memory_total if f else None,
                f.hostname if f else "", f.cpus if f else None))
        return out


class ClusterManager:
    """``client.cluster``: the admin root's members and cluster-wide operations."""

    def __init__(self, client: AdminClient) -> None:
        self._client = client
        self.admin_root = client.root
        self.layout = client.layout
        self._store: ClusterStore | None = None
        self._members: MemberSet | None = None
        self._specs: list[MemberSpec] | None = None
        self._alive: dict[str, dict[str, Any]] | None = None
        #: why the members came from the cache (the shared store had no quorum), else None
        self.stale: str | None = None
        self.members = MemberManager(self)

    @cached_property
    def store_admin(self) -> "StoreManager":
        """``client.cluster.store_admin``: which store holds the record; set, migrate."""
        from sysmgr.api.cluster_store import StoreManager

        return StoreManager(self)

    # -- records -------------------------------------------------------------------------------
    @property
    def store(self) -> ClusterStore:
        if self._store is None:
            self._store = ecluster.open_store(self._client.layout)
        return self._store

    @property
    def store_shared(self) -> bool:
        """Whether the record is in a shared store (etcd), not this root's SQLite file."""
        return estore.store_config(self.layout).kind != "sqlite"

    def specs(self) -> list[MemberSpec]:
        if self._store is None and not ecluster.has_store(self._client.layout):
            return []  # a single host: no cluster file is created by looking
        if self.stale is not None and self._specs is not None:
            return self._specs  # one failed try a command: not one per call
        try:
            specs = self.store.members()
        except StoreUnavailable as e:
            cached = estore.read_cache(self.layout)
            if cached is None:
                raise
            self.stale, self._specs = e.message, cached
            return cached
        if self.store.kind != "sqlite":
            estore.write_cache(self.layout, specs)
        return specs

    def alive_facts(self) -> dict[str, dict[str, Any]]:
        """member -> the facts its controller keeps in the store under its lease (read once
        a command)."""
        if self._alive is None:
            self._alive = self.store.alive()
        return self._alive

    def member_facts(self, names: Sequence[str]
                     ) -> dict[str, tuple[ecluster.MemberFacts | None, str]]:
        """name -> (its facts, or None when it is offline; why it is offline). With a shared
        store, read from the liveness leases (no member is asked); else (or while the store
        has no quorum) each member answers ``hello``."""
        if self.store_shared and self.stale is None:
            alive = self.alive_facts()
            return {n: (ecluster.facts_of(alive[n]), "") if n in alive else
                    (None, "no liveness lease: its controller is not running") for n in names}
        out: dict[str, tuple[ecluster.MemberFacts | None, str]] = {}
        for n, o in self.member_set().hello(list(names)).items():
            if not o.ok and not isinstance(o.error, SysmgrError):
                raise o.error  # a bug, not an unreachable member
            out[n] = (o.value, "") if o.ok else (None, o.reason())
        return out

    def spec(self, name: str) -> MemberSpec:
        """Member ``name``'s record (NotFound, without creating a cluster file)."""
        specs = self.specs()
        for s in specs:
            if s.name == name:
                return s
        raise NotFound(f"no cluster member named {name!r} {ecluster.members_note(specs)}",
                       hint="sysmgr cluster list shows the members")

    @property
    def enabled(self) -> bool:
        """Whether this root has cluster members (else it is a single host, as ever)."""
        return bool(self.specs())

    def member_set(self) -> MemberSet:
        """The members as this command reaches them (backends opened on first use)."""
        if self._members is None:
            self._members = MemberSet(self.admin_root, self.specs(), own=self._client.local_backend)
        return self._members

    def member_set_of(self, specs: Sequence[MemberSpec]) -> MemberSet:
        """A set of its own for ``specs`` (members of another store too); the caller
        closes it."""
        return MemberSet(self.admin_root, specs, own=self._client.local_backend)

    def forget_members(self) -> None:
        """Drop the open member handles (the records changed)."""
        if self._members is not None:
            self._members.close()
            self._members = None

    def backend(self, name: str) -> Backend:
        """Member ``name``'s backend (NotFound: no such member; RemoteError: unreachable)."""
        ms = self.member_set()
        if name not in ms.specs:
            ecluster.check_target(name, self.specs())  # looking creates no cluster file
            self.forget_members()                       # recorded since the set was made
            ms = self.member_set()
        return ms.backend(name)

    def check_reachable(self, spec: MemberSpec, accept: str | None,
                        confirm: Confirm | None) -> MemberSpec:
        """``hello`` the member; settle its host key (see ``members.add``)."""
        try:
            remote.hello(spec, admin_root=self.admin_root)
            return spec
        except HostKeyRejected as e:
            shown = getattr(e, "fingerprint", None) or _fingerprint_in(e.message)
            if shown is None:
                raise
            if accept is not None and accept != shown:
                raise ValidationError(f"the host key of {spec.url} is {shown}, not {accept}",
                                      hint="check the host before trusting it") from e
            if accept is None and not (confirm is not None and confirm(shown)):
                raise ValidationError(f"unknown host key {shown} for {spec.url}: refused",
                                      hint=f"check it, then --accept-host-key {shown}") from e
        spec = replace(spec, host_key=shown)
        # into the admin root's known_hosts (only if the member still shows that key)
        remote.accept_host_key(self.admin_root, spec.url, shown)
        remote.hello(spec, admin_root=self.admin_root)
        return spec

    def close(self) -> None:
        self.forget_members()
        self._alive = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def members_of(self, target: str) -> list[str]:
        """The members a target names: one member, or the members of ``@group``."""
        specs = self.specs()
        ecluster.check_target(target, specs)
        if target.startswith("@"):
            return ecluster.groups_of(specs)[target[1:]]
        return [target]

    # -- where containers are ----------------------------------------------------------------------
    def locate(self, name: str) -> str:
        """The member holding container ``name`` (NotFound; RemoteError when it is on none
        of the members that answered but some did not)."""
        outs = self.member_set().each(lambda m, b: b.container_exists(name))
        found = sorted(m for m, o in outs.items() if o.ok and o.value)
        if len(found) == 1:
            return found[0]
        if found:
            raise ValidationError(f"container {name!r} exists on several members "
                                  f"({', '.join(found)})", hint="pick one with --target MEMBER")
        down = failures(outs)
        if down:
            raise RemoteError(f"container {name!r} is on none of the members that answered; "
                              "not answering: " + "; ".join(f"{m}: {r}" for m, r in down.items()))
        raise NotFound(f"container {name!r} not found on any cluster member")

    # -- placing new containers ----------------------------------------------------------------
    def candidates(self, name: str | None, *, target: str | None,
                   config: Mapping[str, str] | None, profiles: Sequence[str] | None) -> Any:
        """``(candidates, records by name, request)`` for placing new container ``name``:
        ``target`` alone when it names a member (then only its capacity can refuse it), else
        every member (``request.group`` set for ``@group``). Refuses a name some member
        already uses (None: the name is not known yet)."""
        specs = self.specs()
        if target is not None:
            ecluster.check_target(target, specs)
        ms = self.member_set()
        taken = [m for m, o in ms.each(lambda m, b: b.container_exists(name)).items()
                 if o.ok and o.value] if name else []
        if taken:
            raise AlreadyExists(f"container {name!r} already exists on {', '.join(taken)}")
        fresh = {s.name: s for s in specs}  # the records now (the evacuated marks)
        named = target is not None and not target.startswith("@")
        if named and fresh[target].evacuated:
            raise Conflict(f"member {target} is evacuated: no new containers until "
                           f"'sysmgr cluster restore {target}'")
        facts = self.member_facts([target] if named else [m for m in ms.names if m in fresh])
        cands = [ecluster.candidate(fresh[m], f, why) for m, (f, why) in facts.items()]
        if named:  # as before: a member named by --target is taken at its word
            cands = [replace(c, online=True, scheduler="all", memory_free=None) for c in cands]
        memory = ecluster.memory_request(config, ["default"] if profiles is None else profiles,
                                         self._profile_configs(cands))
        group = target[1:] if target and target.startswith("@") else None
        return cands, fresh, group, memory

    def choose(self, name: str | None, *, target: str | None, config: Mapping[str, str] | None,
               profiles: Sequence[str] | None) -> str:
        """The member a new container ``name`` goes to: ``target`` when it names a member,
        else placement's choice (among ``@group`` when ``target`` is one); nothing is
        reserved (:func:`~sysmgr.api.cluster_store.placing` does)."""
        cands, _specs, group, memory = self.candidates(name, target=target, config=config,
                                                       profiles=profiles)
        result = ecluster.place(cands, group=group, memory=memory)
        if result.member is None:
            raise Conflict(f"no cluster member can take container {name!r}: {result.reason()}")
        return result.member

    def _profile_configs(self, cands: Sequence[Any]) -> dict[str, Mapping[str, str]]:
        first = next((c.name for c in cands if c.online), None)
        if first is None:
            return {}
        return {p.name: p.config for p in self.backend(first).profile_list()}

    def ensure_image(self, member: str, ref: str, *, progress: Progress | None = None) -> None:
        """Copy image ``ref`` to ``member`` from a member that has it, unless it has it
        already (the fingerprint is kept and the unpacked files checked against it)."""
        ms = self.member_set()
        if ms.backend(member).image_exists(ref):
            return
        others = [m for m in ms.names if m != member]
        has = ms.each(lambda m, b: b.image_exists(ref), others)
        source = next((m for m in others if has[m].ok and has[m].value), None)
        if source is None:
            raise NotFound(f"image {ref!r} not found on any cluster member")
        self.copy_image(ref, source, member, progress=progress)

    def copy_image(self, ref: str, source: str, target: str, *,
                   progress: Progress | None = None) -> None:
        src, dst = self.backend(source), self.backend(target)
        img = src.image_get(ref)
        if progress:
            progress(f"copying image {ref} ({img.fingerprint[:12]}) from {source} to {target}")
        # the tarball passes through the admin root, as an export to a file would
        with tempfile.TemporaryDirectory(dir=self.admin_root, prefix=".image-copy-") as tmp:
            path = f"{tmp}/image.tar.zst"
            digest = src.image_export(ref, path, progress=progress)
            dst.image_receive(path, fingerprint=img.fingerprint, digest=digest,
                              aliases=list(img.aliases), origin=source, progress=progress)

    # -- evacuate and restore ----------------------------------------------------------------------
    def evacuate(self, name: str, *, progress: Progress | None = None) -> Evacuation:
        """Mark ``name`` EVACUATED (no new containers) and take its running containers off
        it by their ``cluster.evacuate`` key: ``migrate`` and ``auto`` move them to other
        members (``auto`` stops what cannot move), ``stop`` stops them. A container that
        could be neither moved nor stopped keeps running there and is named in the error."""
        from sysmgr.api import evacuation

        return evacuation.evacuate(self, name, progress=progress)

    def restore(self, name: str, *, progress: Progress | None = None) -> list[str]:
        """Start again what evacuating ``name`` stopped and move back what it moved, then
        clear its mark; the names of the containers brought back."""
        from sysmgr.api import evacuation

        return evacuation.restore(self, name, progress=progress)


def _fingerprint_in(text: str) -> str | None:
    m = _FINGERPRINT.search(text)
    return m.group(0) if m else None
