"""The root's change lock (sysmgr.state.locks): a waiter whose root was removed meanwhile."""

from __future__ import annotations

import os
import threading

import pytest

from sysmgr.errors import NotFound
from sysmgr.state import locks


def test_a_waiter_whose_root_was_removed_meanwhile_stops(tmp_path) -> None:
    """What uninit does to a command queued behind it: the root and its lock file go while
    the command waits; it must not go on to write a half root."""
    path = str(tmp_path / "lock")
    waited, outcome = threading.Event(), []

    def waiter() -> None:
        try:
            with locks.exclusive(path, on_wait=lambda who: waited.set()):
                outcome.append("ran")
        except NotFound as e:
            outcome.append(e.message)

    with locks.exclusive(path):
        t = threading.Thread(target=waiter)
        t.start()
        assert waited.wait(30)               # it found the lock held (flock per open file)
        os.unlink(path)                      # uninit removes the root, lock file and all
    t.join(30)
    assert outcome == [f"the root {tmp_path} was removed while this command waited for its lock"]


def test_a_waiter_runs_when_the_root_stays(tmp_path) -> None:
    path = str(tmp_path / "lock")
    ran = []

    def waiter() -> None:
        with locks.exclusive(path):
            ran.append(1)

    with locks.exclusive(path):
        t = threading.Thread(target=waiter)
        t.start()
        t.join(0.2)
        assert ran == []                     # still waiting while the lock is held
    t.join(30)
    assert ran == [1]


def test_holder_names_the_process(tmp_path) -> None:
    path = str(tmp_path / "lock")
    with locks.exclusive(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            assert locks.holder(fd).startswith(f"pid {os.getpid()} (")
        finally:
            os.close(fd)


@pytest.fixture(autouse=True)
def _no_threads_left():
    yield
    assert threading.active_count() == 1
