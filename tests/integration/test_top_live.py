"""The live ``sysmgr top`` on a real terminal (a pty, through pexpect): it draws the table,
re-sorts on a key press without Enter, quits on q with exit code 0, and leaves the
terminal's settings as they were."""

from __future__ import annotations

import os
import sys

import pexpect

from tests.conftest import REPO, cli_ok, requires_root

pytestmark = requires_root


def test_live_view_keys_and_quit(busybox_cli_root):
    root = busybox_cli_root
    cli_ok("launch", "busybox", "live1", root=root)
    env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO, TERM="xterm", COLUMNS="120",
               LINES="30")
    env.pop("NO_COLOR", None)
    # stty after top: what top left the terminal with
    script = f"{sys.executable} -m sysmgr top --refresh 0.5; echo rc=$?; stty -a"
    child = pexpect.spawn("/bin/sh", ["-c", script], env=env, timeout=60, dimensions=(30, 120))
    try:
        child.expect("live1")
        child.expect("sorted by cpu")
        child.send("m")                           # one key, no Enter: cbreak mode
        child.expect("sorted by memory")
        child.send("d")
        child.expect("sorted by disk")
        child.send("q")
        child.expect(r"rc=(\d+)")
        rc = int(child.match.group(1))
        child.expect(pexpect.EOF)
        settings = child.before.decode()
    finally:
        child.close(force=True)
    assert rc == 0
    words = settings.split()
    assert "icanon" in words and "echo" in words, settings   # restored: line mode, echo
