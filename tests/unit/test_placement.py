"""Placement, table-tested: online, not evacuated, in the group, willing (scheduler.instance),
enough free memory for an absolute limits.memory; then fewest containers, then name."""

from __future__ import annotations

import pytest

from sysmgr.model.placement import Candidate, Request, after, memory_need, place

MiB = 1 << 20
GiB = 1 << 30


def c(name: str, **kw) -> Candidate:
    kw.setdefault("memory_free", 8 * GiB)
    kw.setdefault("memory_total", 16 * GiB)
    return Candidate(name, **kw)


TABLE = [
    # (id, candidates, request, chosen member, {rejected member: text in its reason})
    ("fewest-containers", [c("a", containers=3), c("b", containers=1), c("c", containers=2)],
     Request(), "b", {}),
    ("tie-goes-to-name", [c("b", containers=1), c("a", containers=1)], Request(), "a", {}),
    ("tie-ignores-free-memory", [c("a", memory_free=1 * GiB), c("b", memory_free=9 * GiB)],
     Request(), "a", {}),
    ("offline-skipped", [c("a", online=False, offline_reason="connection refused"),
                         c("b", containers=5)], Request(), "b", {"a": "connection refused"}),
    ("evacuated-skipped", [c("a", evacuated=True), c("b", containers=9)], Request(), "b",
     {"a": "evacuated"}),
    ("group", [c("a", groups=("db",)), c("b", groups=("web",), containers=4),
               c("c", groups=("web", "db"), containers=5)], Request(group="web"), "b",
     {"a": "not in group 'web'"}),
    ("group-none-fits", [c("a", groups=("db",))], Request(group="web"), None,
     {"a": "not in group"}),
    ("memory-absolute", [c("a", memory_free=256 * MiB), c("b", memory_free=2 * GiB, containers=7)],
     Request(memory="512MiB"), "b", {"a": "needs 512MiB, 256MiB free"}),
    ("memory-exact-fits", [c("a", memory_free=512 * MiB)], Request(memory="512MiB"), "a", {}),
    ("memory-percent-scales-with-host", [c("a", memory_free=1 * MiB)], Request(memory="50%"),
     "a", {}),
    ("memory-nobody", [c("a", memory_free=1 * GiB), c("b", memory_free=2 * GiB)],
     Request(memory="4GiB"), None, {"a": "needs 4GiB", "b": "needs 4GiB"}),
    ("memory-unknown-is-not-refused", [c("a", memory_free=None)], Request(memory="4GiB"), "a", {}),
    ("scheduler-manual", [Candidate("a", scheduler="manual"), c("b", containers=3)],
     Request(), "b", {"a": "manual"}),
    ("scheduler-group-needs-group", [Candidate("a", scheduler="group"), c("b", containers=3)],
     Request(), "b", {"a": "only chosen through --target @GROUP"}),
    ("scheduler-group-with-group", [Candidate("a", scheduler="group", groups=("web",)),
                                    c("b", groups=("web",), containers=3)],
     Request(group="web"), "a", {}),
    ("manual-even-in-group", [Candidate("a", scheduler="manual", groups=("web",))],
     Request(group="web"), None, {"a": "manual"}),
    ("empty-cluster", [], Request(), None, {}),
]


@pytest.mark.parametrize("cands,request_,chosen,rejected", [t[1:] for t in TABLE],
                         ids=[t[0] for t in TABLE])
def test_place(cands, request_, chosen, rejected) -> None:
    p = place(cands, request_)
    assert p.member == chosen
    reasons = dict(p.rejected)
    for member, text in rejected.items():
        assert text in reasons[member]
    if chosen is None:
        assert p.reason()  # an error message can always say why


def test_after_spreads_several_containers() -> None:
    cands = {n: c(n) for n in ("a", "b", "c")}
    req = Request(memory="1GiB")
    order = []
    for _ in range(6):
        m = place(list(cands.values()), req).member
        order.append(m)
        cands[m] = after(cands[m], req)
    assert order == ["a", "b", "c", "a", "b", "c"]
    assert cands["a"].memory_free == 6 * GiB and cands["a"].containers == 2


def test_memory_need() -> None:
    assert memory_need("64MiB") == 64 * MiB
    assert memory_need("50%") is None
    assert memory_need("") is None and memory_need(None) is None
    assert memory_need("lots") is None   # invalid values were refused by validation already
