"""The CLI's one progress display (``render.progress``): plain lines off a terminal, nothing
but warnings when quiet, a live rich line on a terminal (a real pty)."""

from __future__ import annotations

import os
import pty
import sys

from sysmgr.cli import render


def test_plain_lines_off_a_terminal(capsys):
    with render.progress(indent="  ") as progress:
        assert not progress.live
        progress("Unpacking")
        progress.meter("Sending", 1 << 20)   # no live line: the step's own message says it
        progress.warn("2 device nodes dropped")
    err = capsys.readouterr().err
    assert err == "  Unpacking\n  warning: 2 device nodes dropped\n"


def test_quiet_says_only_warnings(capsys):
    with render.progress(quiet=True) as progress:
        progress("Unpacking")
        progress.warn("kept /dev/kvm")
    out = capsys.readouterr()
    assert out.err == "warning: kept /dev/kvm\n" and out.out == ""


def test_live_on_a_terminal(monkeypatch):
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w", buffering=1)
    try:
        monkeypatch.setattr(sys, "stderr", stream)
        monkeypatch.delenv("TERM", raising=False)
        with render.progress() as progress:
            assert progress.live
            progress("Building busybox")
            progress.meter("Sending", 3 << 20)
        stream.flush()
        os.set_blocking(master, False)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            seen += chunk
        assert b"Building busybox" in seen and b"\x1b[" in seen   # rich drew on the terminal
    finally:
        stream.close()
        os.close(master)
