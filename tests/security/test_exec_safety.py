"""Rows 7 and 8 of the escape table. Row 8, the terminal half: ``sysmgr exec -T`` (no pty) and
``exec ... | cat`` used to hand the caller's own fds to the container, so a process inside could
type into the admin's shell with TIOCSTI. Now the container only ever gets a pty of its own or
pipes that sysmgr relays."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

import pytest

import sysmgr
from tests.conftest import REPO, requires_root
from tests.security.helpers import ENGINES, use_engine

pytestmark = requires_root


@pytest.fixture
def root(sysmgr_root: str, request: pytest.FixtureRequest):
    c = sysmgr.Client(root=sysmgr_root)
    c.init(storage_driver="dir")
    c.images.build("busybox", alias="busybox")
    use_engine(c, getattr(request, "param", "native"))  # (the tests parametrized over engines)
    c.containers.create("c1", "busybox", start=True)
    yield sysmgr_root
    for ct in c.containers.all():
        ct.delete(force=True)
    c.close()


@pytest.mark.parametrize("root", ENGINES, indirect=True)
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


@pytest.mark.parametrize("root", ENGINES, indirect=True)
def test_exec_with_a_pipe_for_stdin_streams_it_through(root):
    env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO, NO_COLOR="1")
    res = subprocess.run([sys.executable, "-m", "sysmgr", "exec", "c1", "--", "sh", "-c",
                          "cat; echo err >&2; exit 3"], input=b"through the relay\n",
                         capture_output=True, env=env, timeout=60)
    assert res.returncode == 3
    assert res.stdout == b"through the relay\n" and res.stderr == b"err\n"


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in f if ":" in line)}


@pytest.mark.parametrize("privileged", [False, True], ids=["unprivileged", "privileged"])
def test_row7_what_enters_the_container_is_a_sealed_helper_not_the_hosts_python(root, privileged):
    """Row 7: the exec helper used to be the host's Python, dumpable and with full
    capabilities, visible in the container until its execve. Now the process on the host side
    is a copy of a static helper in a sealed memfd (nothing to overwrite through its exe),
    already confined to the container's capability sets and ids before its child enters the
    pid namespace; that child is the only process of the exec inside."""
    c = sysmgr.Client(root=root)
    if privileged:
        c.containers.create("c2", "busybox", config={"security.privileged": "true"}, start=True)
    name = "c2" if privileged else "c1"
    env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO, NO_COLOR="1")
    cli = subprocess.Popen([sys.executable, "-m", "sysmgr", "exec", name, "--", "sleep", "60"],
                           env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        helper = command = None
        while command is None and time.monotonic() < deadline:
            for pid in _children(cli.pid):
                kids = _children(pid)
                if kids and os.readlink(f"/proc/{kids[0]}/exe").endswith("/bin/busybox"):
                    helper, command = pid, kids[0]
        assert helper and command, "the command did not start"
        assert os.readlink(f"/proc/{helper}/exe").startswith("/memfd:sysmgr-enter")
        fd = os.open(f"/proc/{helper}/exe", os.O_RDONLY)
        try:
            assert fcntl.fcntl(fd, 1034) & 0x8  # F_GET_SEALS: F_SEAL_WRITE
        finally:
            os.close(fd)
        with pytest.raises(OSError):
            os.open(f"/proc/{helper}/exe", os.O_WRONLY)
        h, cmd = _status(helper), _status(command)
        assert h["CapEff"] == cmd["CapEff"] and h["CapBnd"] == cmd["CapBnd"]
        assert h["Seccomp"] == cmd["Seccomp"] == "2"
        assert h["Uid"].split()[0] == cmd["Uid"].split()[0] == ("0" if privileged else "1000000")
        assert len(cmd["NSpid"].split()) == 2 and len(h["NSpid"].split()) == 1  # only D inside
        assert int(h["CapEff"], 16) != int(_status(os.getpid())["CapEff"], 16)
    finally:
        cli.terminate()
        cli.wait(timeout=30)


def test_the_boot_journal_read_follows_nothing_out_and_parses_as_nobody(root):
    """``console --show-log`` reads the tenant's journal files: a symlink planted as one
    resolves inside the container (never to the host's file), and what is not a journal
    shows as nothing."""
    c = sysmgr.Client(root=root)
    c1 = c.containers.get("c1")
    c1.execute(["sh", "-c", "mkdir -p /var/log/journal/m && "
                "ln -s ../../../../../../../../etc/shadow /var/log/journal/m/system.journal && "
                "echo 'planted:x:0:0::/:/bin/sh' > /etc/shadow"])
    with open("/etc/shadow") as f:
        host_root_line = next(line for line in f if line.startswith("root:"))
    log = c1.console_log()
    assert host_root_line.strip() not in log and "planted" not in log   # garbage, not shown
    c.close()
