"""``validate`` / ``plan`` / ``apply`` of manifests across a cluster's members.

The admin host loads the manifests once (their files are here), records the members they
declare, splits the rest into one share per member (:mod:`sysmgr.engine.cluster_plan`), and
has each member plan its share against its own state, all members at once. Every member
must answer: a container of the manifest may live on the one that does not.

Apply records the members, then runs each member's steps in turn: the images copied there
first (after which the member plans its share again, and the plan must not have changed),
then its plan, which the member undoes itself if a step fails. A failure stops the apply
and names the members already applied and those not attempted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from sysmgr.api import remote
from sysmgr.api.backend import Backend
from sysmgr.api.fanout import MemberSet, failures
from sysmgr.engine import cluster as ecluster
from sysmgr.engine import cluster_store as estore
from sysmgr.engine import cluster_plan as cplan
from sysmgr.engine.apply import ApplyResult
from sysmgr.engine.manifests import Manifest
from sysmgr.errors import ApplyError, Issue, PlanStale, RemoteError, SysmgrError, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.api.cluster import ClusterManager

Progress = Callable[[str], None]


class ClusterManifests:
    """Manifests over every member of ``cluster``."""

    def __init__(self, cluster: "ClusterManager") -> None:
        self._cluster = cluster

    def validate(self, manifest: Manifest) -> Manifest:
        """The manifest, once every ``target:`` names a member or a group (with the members
        it declares)."""
        cplan.check_targets(manifest, cplan.effective_members(manifest, self._cluster.specs()))
        return manifest

    def plan(self, manifest: Manifest, *, prune: bool = False, backup: bool = True,
             keep_backups: float | None = None, revision: str = "") -> cplan.ClusterPlan:
        """Each member's plan for its share; with ``prune``, each member also deletes what
        was created there from these manifests and left the whole of them."""
        c = self._cluster
        if prune:  # what it deletes is decided from the shared record: never from a stale one
            from sysmgr.api.cluster_store import live_store
            live_store(c)
        recorded = c.specs()
        specs = cplan.effective_members(manifest, recorded)
        cplan.check_targets(manifest, specs)
        admin = tuple(cplan.member_actions(manifest, recorded))
        ms = MemberSet(c.admin_root, specs, own=c.member_set().own) if admin else c.member_set()
        try:
            views = ms.each(lambda m, b: _observe(ms, m, b))
            down = failures(views)
            if down:
                raise RemoteError("cannot plan across the cluster: " + "; ".join(
                    f"member {m} does not answer ({why})" for m, why in down.items()),
                    hint="every member must answer (a container may live on any of them)")
            split = cplan.split(manifest, [views[m].unwrap() for m in ms.names])
            shares = {s.member: s for s in split.shares}
            opts = {"prune": prune, "backup": backup, "keep_backups": keep_backups,
                    "revision": revision}
            plans = ms.each(lambda m, b: b.manifest_plan(shares[m].manifest, **opts),
                            deadline=None)
            _raise_plan_errors(plans)
        finally:
            if ms is not c.member_set():
                ms.close()
        members = tuple(cplan.MemberPlan(m, plans[m].unwrap(), shares[m].manifest,
                                         shares[m].copies, opts) for m in sorted(shares))
        return cplan.ClusterPlan(admin, members, split.warnings)

    def apply(self, plan: cplan.ClusterPlan, *, progress: Progress | None = None) -> ApplyResult:
        c = self._cluster
        say = progress or (lambda _m: None)
        result = ApplyResult()
        for a in plan.admin:
            assert a.member is not None
            ecluster.put_member(c.store, a.member)
            line = f"[{cplan.ADMIN}] {a.describe()}"
            result.done.append(line)
            say(line)
        if plan.admin:
            c.forget_members()
        todo = [mp for mp in plan.members if mp.copies or not mp.plan.empty]
        for i, mp in enumerate(todo):
            try:
                self._apply_member(mp, result, say)
            except SysmgrError as e:
                applied = [p.member for p in todo[:i]]
                rest = [p.member for p in todo[i + 1:]]
                msg = f"[{mp.member}] {e.message}" + \
                    (f"; applied before on: {', '.join(applied)}" if applied else "") + \
                    (f"; not attempted: {', '.join(rest)}" if rest else "")
                err = ApplyError(msg, hint=e.hint)
                err.exit_code = max(err.exit_code, e.exit_code)
                raise err from e
        return result

    def _apply_member(self, mp: cplan.MemberPlan, result: ApplyResult, say: Progress) -> None:
        c = self._cluster
        b = c.backend(mp.member)

        def tell(line: str) -> None:
            say(f"[{mp.member}] {line}")

        for copy in mp.copies:
            if not b.image_exists(copy.name):
                c.copy_image(copy.name, copy.source, mp.member, progress=tell)
            result.done.append(f"[{mp.member}] {copy.describe()}")
        plan = mp.plan
        if mp.copies:
            # the copies changed the member's images: plan again, it must be the same plan
            fresh = b.manifest_plan(mp.share, **mp.options)
            if fresh.lines() != plan.lines():
                raise PlanStale(f"member {mp.member} changed since the plan was made",
                                hint="run diff/apply again")
            plan = fresh
        done = b.manifest_apply(plan, progress=tell)
        result.done += [f"[{mp.member}] {line}" for line in getattr(done, "done", [])]
        try:  # the cluster-wide view; each member's own inventory decides its prunes
            estore.record_inventory(c.store, mp.member, plan)
        except SysmgrError as e:
            say(f"[{mp.member}] note: inventory not recorded in the cluster store: {e.message}")


def _observe(ms: MemberSet, name: str, b: Backend) -> cplan.MemberView:
    """What planning needs of one member (its facts, containers, images and profiles)."""
    spec = ms.spec(name)
    facts = ecluster.facts_of(remote.hello(spec, admin_root=ms.admin_root))
    images = b.image_list()
    return cplan.MemberView(
        spec, facts, frozenset(v.record.name for v in b.container_views()),
        {a: i.fingerprint for i in images for a in i.aliases},
        frozenset(i.fingerprint for i in images),
        {p.name: dict(p.config) for p in b.profile_list()})


def _raise_plan_errors(plans: dict) -> None:
    """One error for every member's planning problems (issues once each, in order)."""
    issues: list[Issue] = []
    for o in plans.values():
        if o.ok:
            continue
        if isinstance(o.error, ValidationError):
            issues += [i for i in o.error.issues if i not in issues]
        else:
            raise o.error
    if issues:
        raise ValidationError(issues)
