"""Manifests across a cluster: which member gets what, as data (engine layer, pure).

A cluster plan is the member records a manifest declares (``kind: Member``, kept by the
admin root), then one share of the manifest per member, planned by that member against its
own state exactly as a single host plans. :func:`split` decides the shares:

- storage pools, networks and profiles go to every member (cluster-wide definitions);
- a container goes where it already is (a placed container stays put), else to its
  ``target:`` member, else to the member placement chooses (in the ``@group`` its target
  names); several new containers are placed one after the other;
- an ``Image`` document goes to the members whose containers use it (built or imported
  there, as it says), or to every member when none does; an image a member lacks and the
  manifest does not declare is copied there from a member that has it (a :class:`CopyImage`
  step before that member's plan runs, fingerprint checked).

No I/O: the API observes the members (:class:`MemberView`) and runs the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from sysmgr.engine import cluster as ecluster
from sysmgr.engine.actions import Action, Change, Plan
from sysmgr.errors import Issue, ValidationError
from sysmgr.model import placement
from sysmgr.model.objects import (
    ContainerSpec, ImageSpec, Manifest, MemberDoc, ProfileSpec, Spec, issue_at)
from sysmgr.types import MemberSpec

SHARED_KINDS = ("StoragePool", "StorageVolume", "Network", "Profile")
#: the "member" of steps the admin host runs itself (its cluster record)
ADMIN = "cluster"


@dataclass(frozen=True)
class PutMember(Action):
    """Record a member in the admin root's cluster store (``update``: a changed record)."""

    kind = "Member"
    effect = "create"
    member: MemberSpec | None = None
    changes: tuple[Change, ...] = ()

    def details(self) -> tuple[str, ...]:
        if self.changes:
            return tuple(c.describe() for c in self.changes)
        m = self.member
        assert m is not None
        return (f"url: {m.url}", f"root: {m.root}") + \
            ((f"groups: [{', '.join(m.groups)}]",) if m.groups else ())


@dataclass(frozen=True)
class UpdateMember(PutMember):
    effect = "update"


@dataclass(frozen=True)
class CopyImage(Action):
    """Copy image ``name`` (alias or fingerprint) from member ``source`` (fingerprint kept
    and checked) before the receiving member's plan runs."""

    kind = "Image"
    effect = "create"
    source: str = ""

    def describe(self) -> str:
        return f"copy {self.subject} from {self.source}"


@dataclass(frozen=True)
class MemberView:
    """What planning needs to know of one member."""

    spec: MemberSpec
    facts: ecluster.MemberFacts
    containers: frozenset[str] = frozenset()
    aliases: Mapping[str, str] = field(default_factory=dict)      # alias -> fingerprint
    fingerprints: frozenset[str] = frozenset()
    profiles: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # name -> config

    def has_image(self, ref: str) -> bool:
        if ref in self.aliases:
            return True
        hits = [fp for fp in self.fingerprints if ref and fp.startswith(ref.lower())]
        return len(hits) == 1


@dataclass(frozen=True)
class Share:
    """One member's part of the manifest, and the images copied there first."""

    member: str
    manifest: Manifest
    copies: tuple[CopyImage, ...] = ()


@dataclass(frozen=True)
class Split:
    shares: tuple[Share, ...]
    warnings: tuple[str, ...] = ()


# -- members ------------------------------------------------------------------------------------

def declared_members(manifest: Manifest) -> list[MemberSpec]:
    return [d.member for d in manifest.of("Member") if isinstance(d, MemberDoc)]


def effective_members(manifest: Manifest, recorded: Sequence[MemberSpec]) -> list[MemberSpec]:
    """The members once the manifest's are recorded (a recorded member keeps its mark)."""
    out = {s.name: s for s in recorded}
    for m in declared_members(manifest):
        old = out.get(m.name)
        out[m.name] = replace(m, evacuated=old.evacuated) if old else m
    return [out[n] for n in sorted(out)]


def member_actions(manifest: Manifest, recorded: Sequence[MemberSpec]) -> list[PutMember]:
    """Record the declared members that are new or changed."""
    by_name = {s.name: s for s in recorded}
    actions: list[PutMember] = []
    for m in declared_members(manifest):
        old = by_name.get(m.name)
        if old is None:
            actions.append(PutMember(m.name, member=m))
        elif not ecluster.same_record(old, m):
            changes = tuple(Change(f, getattr(old, f), getattr(m, f))
                            for f in ("url", "root", "key", "sysmgr", "groups", "config", "host_key")
                            if getattr(old, f) != getattr(m, f))
            actions.append(UpdateMember(m.name, member=m, changes=changes))
    return actions


def check_targets(manifest: Manifest, members: Sequence[MemberSpec]) -> None:
    """Every ``target:`` names a member, or a group a member is in (ValidationError)."""
    names = {m.name for m in members}
    groups = ecluster.groups_of(members)
    issues: list[Issue] = []
    for spec in manifest.of("Container"):
        assert isinstance(spec, ContainerSpec)
        t = spec.target
        if t is None:
            continue
        if t.startswith("@") and t[1:] not in groups:
            issues.append(issue_at(spec, "target", f"no cluster member is in group {t[1:]!r}"))
        elif not t.startswith("@") and t not in names:
            issues.append(issue_at(spec, "target", f"no cluster member named {t!r} "
                                 + ecluster.members_note(members)))
    if issues:
        raise ValidationError(issues)


# -- shares -------------------------------------------------------------------------------------

def split(manifest: Manifest, views: Sequence[MemberView]) -> Split:
    """Each member's share of ``manifest`` (ValidationError naming every container that
    cannot be placed, or whose image no member has)."""
    by_name = {v.spec.name: v for v in views}
    issues: list[Issue] = []
    warnings: list[str] = []
    where = _assign(manifest, by_name, issues, warnings)
    images = {s.name: s for s in manifest.of("Image") if isinstance(s, ImageSpec)}
    used = {c.image for c in manifest.of("Container") if isinstance(c, ContainerSpec)}
    shared = [s for s in manifest.specs if s.kind in SHARED_KINDS] + \
        [s for n, s in images.items() if n not in used]
    shares = []
    for name in sorted(by_name):
        mine = [c for c in manifest.of("Container")
                if isinstance(c, ContainerSpec) and where.get(c.name) == name]
        extra, copies = _images_for(by_name[name], mine, images, views, issues)
        specs = shared + extra + [replace(c, target=None) for c in mine]
        mine_keys = {(s.kind, s.name) for s in specs}
        shares.append(Share(name, Manifest(
            tuple(specs), manifest.origin, tuple(k for k in manifest.keep if k in mine_keys),
            tuple(sorted((s.kind, s.name) for s in manifest.specs))), tuple(copies)))
    if issues:
        raise ValidationError(issues)
    return Split(tuple(shares), tuple(warnings))


def _assign(manifest: Manifest, views: Mapping[str, MemberView], issues: list[Issue],
            warnings: list[str]) -> dict[str, str]:
    """container -> member: where it is, else its target, else placement's choice."""
    where: dict[str, str] = {}
    cands = {n: ecluster.candidate(v.spec, v.facts) for n, v in views.items()}
    profiles = _profile_configs(manifest, views)
    for spec in manifest.of("Container"):
        assert isinstance(spec, ContainerSpec)
        found = sorted(n for n, v in views.items() if spec.name in v.containers)
        if len(found) > 1:
            issues.append(issue_at(spec, "name", f"container {spec.name!r} exists on several "
                                               f"members ({', '.join(found)})"))
            continue
        if found:
            where[spec.name] = found[0]
            _stays(spec, views[found[0]], warnings)
            continue
        memory = ecluster.memory_request(spec.config, spec.profiles, profiles)
        request = placement.Request(group=spec.target[1:] if spec.target and
                                    spec.target.startswith("@") else None, memory=memory)
        if spec.target and not spec.target.startswith("@"):
            chosen: str | None = spec.target
            if views[spec.target].spec.evacuated:
                issues.append(issue_at(spec, "target", f"member {spec.target!r} is evacuated: no "
                                     f"new containers until 'sysmgr cluster restore {spec.target}'"))
                continue
        else:
            result = placement.place(list(cands.values()), request)
            chosen = result.member
            if chosen is None:
                issues.append(issue_at(spec, None, f"no cluster member can take container "
                                                 f"{spec.name!r}: {result.reason()}"))
                continue
        where[spec.name] = chosen
        cands[chosen] = placement.after(cands[chosen], request)
    return where


def _stays(spec: ContainerSpec, view: MemberView, warnings: list[str]) -> None:
    t = spec.target
    if t is None or t == view.spec.name or (t.startswith("@") and t[1:] in view.spec.groups):
        return
    warnings.append(f"container {spec.name} stays on {view.spec.name} (target: {t}): placed "
                    "containers are never moved by apply")


def _profile_configs(manifest: Manifest, views: Mapping[str, MemberView]
                     ) -> dict[str, Mapping[str, str]]:
    """Profile configs for memory requests: the manifest's over the first member's."""
    out: dict[str, Mapping[str, str]] = {}
    for n in sorted(views)[:1]:
        out.update(views[n].profiles)
    for p in manifest.of("Profile"):
        assert isinstance(p, ProfileSpec)
        out[p.name] = p.config
    return out


def _images_for(view: MemberView, containers: Sequence[ContainerSpec],
                images: Mapping[str, ImageSpec], views: Sequence[MemberView],
                issues: list[Issue]) -> tuple[list[Spec], list[CopyImage]]:
    """The Image documents a member's containers need, and the copies it lacks otherwise."""
    extra: dict[str, Spec] = {}
    copies: list[CopyImage] = []
    for c in containers:
        ref = c.image
        if ref in extra:
            continue
        if ref in images:
            extra[ref] = images[ref]
            continue
        if view.has_image(ref) or c.name in view.containers:
            continue  # (an existing container needs no image: it was made already)
        source = next((v.spec.name for v in sorted(views, key=lambda v: v.spec.name)
                       if v is not view and v.has_image(ref)), None)
        if source is None:
            issues.append(issue_at(c, "image", f"image {ref!r} not found on any cluster member "
                                             "nor an Image in the manifests"))
            continue
        extra[ref] = ImageSpec(ref, copied_from=source, source=c.source)
        copies.append(CopyImage(ref, source=source))
    return list(extra.values()), copies


# -- the plan -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemberPlan:
    """One member's plan, the share it was made from, and the images copied there first."""

    member: str
    plan: Plan
    share: Manifest
    copies: tuple[CopyImage, ...] = ()
    # how the member planned (prune, backup, keep_backups, revision): to plan again alike
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterPlan:
    """Member records, then each member's steps; every line names where it runs."""

    admin: tuple[PutMember, ...] = ()
    members: tuple[MemberPlan, ...] = ()
    own_warnings: tuple[str, ...] = ()

    def steps(self) -> list[tuple[str, Action]]:
        out: list[tuple[str, Action]] = [(ADMIN, a) for a in self.admin]
        for mp in self.members:
            out += [(mp.member, a) for a in (*mp.copies, *mp.plan.actions)]
        return out

    @property
    def actions(self) -> tuple[Action, ...]:
        return tuple(a for _, a in self.steps())

    @property
    def empty(self) -> bool:
        return not self.steps()

    @property
    def disruptive(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.disruptive)

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.own_warnings + tuple(f"[{mp.member}] {w}" for mp in self.members
                                         for w in mp.plan.warnings)

    def lines(self) -> list[str]:
        out: list[str] = []
        for where, a in self.steps():
            out.append(f"[{where}] {a.describe()}")
            out.extend("    " + d for d in a.details())
        return out

    def summary(self) -> str:
        return Plan(self.actions).summary()
