"""Calls on many members at once: answers in order, errors carried, and a member that does
not answer within the deadline reported without holding the others up."""

from __future__ import annotations

import threading

from sysmgr.api.fanout import parallel
from sysmgr.errors import NotFound, RemoteError


def test_outcomes_in_order_with_errors() -> None:
    def fn(i: int) -> int:
        if i == 2:
            raise NotFound("two is missing")
        return i * 10

    outs = parallel(list(range(5)), fn, workers=2)
    assert [o.value for o in outs] == [0, 10, None, 30, 40]
    assert isinstance(outs[2].error, NotFound) and outs[2].reason() == "two is missing"


def test_a_stuck_member_is_reported_at_the_deadline() -> None:
    release = threading.Event()

    def fn(name: str) -> str:
        if name == "stuck":
            release.wait(30)   # a member that never answers (released at the end)
        return name

    try:
        outs = parallel(["a", "stuck", "b"], fn, deadline=0.5)
        assert [o.value for o in outs] == ["a", None, "b"]
        assert isinstance(outs[1].error, RemoteError)
        assert "no answer within" in outs[1].reason()
    finally:
        release.set()
