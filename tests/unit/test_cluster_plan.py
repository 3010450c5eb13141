"""The pure half of cluster plans: shares per member (placement, placed containers stay put,
image copies), member records, targets, and the plan's lines."""

from __future__ import annotations

import textwrap

import pytest

from sysmgr.engine import cluster_plan as cp
from sysmgr.engine.actions import Plan, Start
from sysmgr.engine.cluster import MemberFacts
from sysmgr.errors import ValidationError
from sysmgr.model.loader import load_text
from sysmgr.types import MemberSpec

GiB = 1 << 30


def manifest(text: str):
    return load_text(textwrap.dedent(text), "site.yaml")


def view(name: str, *, groups=(), containers=(), aliases=None, evacuated=False,
         free=8 * GiB) -> cp.MemberView:
    aliases = {"busybox": "f" * 64} if aliases is None else aliases
    return cp.MemberView(MemberSpec(name, "local:", root=f"/r/{name}", groups=tuple(groups),
                                    evacuated=evacuated),
                         MemberFacts(containers=len(containers), memory_free=free,
                                     memory_total=16 * GiB),
                         frozenset(containers), aliases, frozenset(aliases.values()), {})


def shares(split: cp.Split) -> dict[str, list[str]]:
    return {s.member: [f"{x.kind}:{x.name}" for x in s.manifest.specs] for s in split.shares}


THREE = """\
    kind: Profile
    name: small
    config: {limits.memory: 64MiB}
    ---
    kind: Container
    name: web1
    image: busybox
    target: "@web"
    ---
    kind: Container
    name: web2
    image: busybox
    target: "@web"
    ---
    kind: Container
    name: db1
    image: busybox
    target: c
    ---
    kind: Container
    name: any1
    image: busybox
    """


def test_split_places_and_spreads() -> None:
    views = [view("a", groups=["web"]), view("b", groups=["web"]), view("c", groups=["db"])]
    got = shares(cp.split(manifest(THREE), views))
    assert got == {"a": ["Profile:small", "Container:web1", "Container:any1"],
                   "b": ["Profile:small", "Container:web2"],
                   "c": ["Profile:small", "Container:db1"]}


def test_placed_containers_stay_put() -> None:
    views = [view("a", groups=["web"]), view("b", groups=["web"], containers=["web1"]),
             view("c", groups=["db"], containers=["any1"])]
    split = cp.split(manifest(THREE), views)
    got = shares(split)
    assert "Container:web1" in got["b"] and "Container:any1" in got["c"]
    assert "Container:web2" in got["a"]          # the new one goes where there are fewer
    assert split.warnings == ()


def test_stays_put_against_its_target_with_a_warning() -> None:
    views = [view("a", groups=["web"], containers=["db1"]), view("b", groups=["web"]),
             view("c", groups=["db"])]
    split = cp.split(manifest(THREE), views)
    assert "Container:db1" in shares(split)["a"]
    assert any("db1 stays on a (target: c)" in w for w in split.warnings)


def test_targets_are_stripped_from_the_shares() -> None:
    split = cp.split(manifest(THREE), [view("a", groups=["web"]), view("b", groups=["web"]),
                                       view("c", groups=["db"])])
    for s in split.shares:
        assert all(getattr(x, "target", None) is None for x in s.manifest.specs)


def test_missing_image_is_copied_from_a_member_that_has_it() -> None:
    views = [view("a"), view("b", aliases={})]
    m = manifest("kind: Container\nname: x\nimage: busybox\ntarget: b\n")
    (share,) = [s for s in cp.split(m, views).shares if s.member == "b"]
    assert share.copies == (cp.CopyImage("busybox", source="a"),)
    (img,) = share.manifest.of("Image")
    assert img.copied_from == "a"


def test_image_nobody_has() -> None:
    m = manifest("kind: Container\nname: x\nimage: alpine\n")
    with pytest.raises(ValidationError) as e:
        cp.split(m, [view("a"), view("b")])
    (issue,) = e.value.issues
    assert (issue.file, issue.line, issue.path) == ("site.yaml", 3, "image")  # the line of image:
    assert "not found on any cluster member" in issue.message


def test_image_documents_go_where_they_are_used() -> None:
    m = manifest("""\
        kind: Image
        name: bb
        build: busybox
        ---
        kind: Image
        name: spare
        build: busybox
        ---
        kind: Container
        name: x
        image: bb
        target: b
        """)
    got = shares(cp.split(m, [view("a"), view("b")]))
    assert got == {"a": ["Image:spare"], "b": ["Image:spare", "Image:bb", "Container:x"]}


def test_unplaceable_and_evacuated() -> None:
    m = manifest("""\
        kind: Container
        name: big
        image: busybox
        config: {limits.memory: 64GiB}
        ---
        kind: Container
        name: x
        image: busybox
        target: a
        """)
    with pytest.raises(ValidationError) as e:
        cp.split(m, [view("a", evacuated=True), view("b")])
    msgs = [(i.line, i.message) for i in e.value.issues]
    assert msgs[0][0] == 1 and "no cluster member can take container 'big'" in msgs[0][1]
    assert "a: evacuated" in msgs[0][1] and "b: limits.memory 64GiB needs" in msgs[0][1]
    assert msgs[1][0] == 9 and "member 'a' is evacuated" in msgs[1][1]


def test_container_on_two_members() -> None:
    with pytest.raises(ValidationError, match="exists on several members"):
        cp.split(manifest("kind: Container\nname: x\nimage: busybox\n"),
                 [view("a", containers=["x"]), view("b", containers=["x"])])


def test_check_targets() -> None:
    m = manifest("""\
        kind: Container
        name: x
        image: busybox
        target: nope
        ---
        kind: Container
        name: y
        image: busybox
        target: "@none"
        """)
    with pytest.raises(ValidationError) as e:
        cp.check_targets(m, [MemberSpec("a", "local:", groups=("web",))])
    # the line of the key at fault, as every cross-document issue of the planner
    assert [(i.line, i.path) for i in e.value.issues] == [(4, "target"), (9, "target")]
    assert "no cluster member named 'nope' (members: a)" in e.value.issues[0].message
    with pytest.raises(ValidationError, match="this root has no cluster members"):
        cp.check_targets(m, [])


def test_member_records() -> None:
    m = manifest('kind: Member\nname: a\nurl: "local:"\nroot: /r/a\n---\n'
                 'kind: Member\nname: b\nurl: "local:"\nroot: /r/b\ngroups: [web]\n')
    recorded = [MemberSpec("a", "local:", root="/r/a", evacuated=True),
                MemberSpec("b", "local:", root="/r/b")]
    (upd,) = cp.member_actions(m, recorded)
    assert isinstance(upd, cp.UpdateMember) and upd.name == "b"
    assert [c.describe() for c in upd.changes] == ["~ groups: [] -> [web]"]
    assert cp.member_actions(m, []) and all(a.effect == "create" for a in cp.member_actions(m, []))
    eff = {s.name: s for s in cp.effective_members(m, recorded)}
    assert eff["a"].evacuated and eff["b"].groups == ("web",)   # the mark is kept


def test_plan_lines_name_the_member() -> None:
    plan = cp.ClusterPlan(
        (cp.PutMember("n1", member=MemberSpec("n1", "local:", root="/r")),),
        (cp.MemberPlan("n1", Plan((Start("c1"),)), manifest("kind: Profile\nname: p\n"),
                       (cp.CopyImage("busybox", source="n2"),)),
         cp.MemberPlan("n2", Plan(), manifest("kind: Profile\nname: p\n"))))
    heads = [line for line in plan.lines() if not line.startswith(" ")]
    assert heads == ["[cluster] create Member n1", "[n1] copy Image busybox from n2",
                     "[n1] start Container c1"]
    assert len(plan.actions) == 3 and not plan.empty
    assert plan.summary() == "plan: 2 to create, 1 to start"
    assert cp.ClusterPlan().empty and cp.ClusterPlan().summary() == "no changes"


def test_the_shipped_cluster_examples_are_valid() -> None:
    import os

    from sysmgr.model.loader import load_paths

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    m = load_paths([os.path.join(repo, "cluster"),
                    os.path.join(repo, "cluster", "multihost.yaml.example")])
    members = cp.effective_members(m, [])
    assert [s.name for s in members] == ["local", "node2", "node3"]
    cp.check_targets(m, members)
