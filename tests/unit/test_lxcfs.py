"""What ``info`` says about a container's resource views, and lxcfs's state, without the
daemon (the real daemon: tests/integration/test_lxcfs.py)."""

from __future__ import annotations

import pytest

from sysmgr.engine import lxcfs, views
from sysmgr.state.db import ContainerRecord


def rec(volatile: dict) -> ContainerRecord:
    return ContainerRecord("c1", "f" * 64, "default", ["default"], {}, {}, "", volatile, 0.0)


@pytest.mark.parametrize("installed, expected", [
    (False, "the host's (lxcfs is not installed)"),
    (True, "the host's (lxcfs was not running at its start)"),
])
def test_a_container_without_views_says_whose_it_has(monkeypatch, tmp_path, installed,
                                                     expected) -> None:
    monkeypatch.setenv("SYSMGR_LXCFS_DIR", str(tmp_path))
    monkeypatch.setattr(lxcfs.proc, "which",
                        lambda prog: "/usr/bin/lxcfs" if installed and prog == "lxcfs" else None)
    assert views._views(rec({})) == expected
    assert views._views(rec({lxcfs.VOLATILE: 42})) == "its own (lxcfs)"
    st = lxcfs.state()
    assert (st.installed, st.running) == (installed, False)
    assert lxcfs.binds() == ()          # nothing mounted there: nothing to bind
    if not installed:
        assert lxcfs.ensure() == []     # not installed: containers start as they always did
