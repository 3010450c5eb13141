"""Row 8 of the escape table, the terminal half: ``sysmgr exec -T`` (no pty) and
``exec ... | cat`` used to hand the caller's own fds to the container, so a process inside could
type into the admin's shell with TIOCSTI. Now the container only ever gets a pty of its own or
pipes that sysmgr relays."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import sysmgr
from tests.conftest import REPO, requires_root

pytestmark = requires_root


@pytest.fixture
def root(sysmgr_root: str):
    c = sysmgr.Client(root=sysmgr_root)
    c.init(storage_driver="dir")
    c.images.build("busybox", alias="busybox")
    c.containers.create("c1", "busybox", start=True)
    yield sysmgr_root
    for ct in c.containers.all():
        ct.delete(force=True)
    c.close()


def test_exec_without_a_pty_never_hands_the_callers_terminal_in(root):
    """The caller's stdin, stdout and stderr are a terminal; with -T the command sees pipes
    (so TIOCSTI has no terminal to type into), and its output still reaches the caller."""
    master, slave = os.openpty()
    try:
        script = ("for fd in 0 1 2; do if [ -t $fd ]; then echo TTY$fd; else echo PIPE$fd; fi; done;"
                  " readlink /proc/self/fd/0")
        env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO, NO_COLOR="1")
        proc = subprocess.run([sys.executable, "-m", "sysmgr", "exec", "-T", "c1", "--",
                               "sh", "-c", script], stdin=slave, stdout=slave, stderr=slave,
                              env=env, timeout=60)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the slave side is closed and drained
                break
            if not chunk:
                break
            out += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "PIPE0" in text and "PIPE1" in text and "PIPE2" in text and "TTY" not in text, text
    assert "pipe:" in text, text


def test_exec_with_a_pipe_for_stdin_streams_it_through(root):
    env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO, NO_COLOR="1")
    res = subprocess.run([sys.executable, "-m", "sysmgr", "exec", "c1", "--", "sh", "-c",
                          "cat; echo err >&2; exit 3"], input=b"through the relay\n",
                         capture_output=True, env=env, timeout=60)
    assert res.returncode == 3
    assert res.stdout == b"through the relay\n" and res.stderr == b"err\n"
