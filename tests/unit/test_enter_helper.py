"""The static exec helper (sysmgr.drivers.runtime.native.enter): its bytes are its source,
and it does what C relies on (run from its sealed memfd on the host, no container needed)."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess

import pytest

from sysmgr.drivers.runtime.native import enter

pytestmark = pytest.mark.skipif(not enter.available(), reason="the helper is x86-64 only")


def test_code_is_the_assembled_source(tmp_path) -> None:
    if not (shutil.which("as") and shutil.which("objcopy")):
        pytest.skip("binutils are not installed")
    src, obj, raw = tmp_path / "enter.s", tmp_path / "enter.o", tmp_path / "enter.bin"
    src.write_text(enter.ASM)
    subprocess.run(["as", "--64", "-o", str(obj), str(src)], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(raw)], check=True)
    assert raw.read_bytes() == enter.CODE


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, int | None, bytes]:
    """Exec the helper from its memfd with ``argv`` after it; (exit code, reported pid, stdout)."""
    memfd = enter.sealed_memfd()
    report, theirs = socket.socketpair()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them; C resets them
                signal.signal(sig, signal.SIG_DFL)
            os.dup2(out_w, 1)
            helper = fcntl.fcntl(memfd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(theirs.fileno(), enter.REPORT_FD)
            os.execve(helper, ["sysmgr-enter", *argv], env or {})
        finally:
            os._exit(99)
    os.close(out_w)
    theirs.close()
    os.close(memfd)
    out = b""
    while chunk := os.read(out_r, 4096):
        out += chunk
    os.close(out_r)
    _, status = os.waitpid(pid, 0)
    raw = report.recv(8)
    report.close()
    return os.waitstatus_to_exitcode(status), (struct.unpack("=i", raw)[0] if len(raw) == 4 else None), out


def test_runs_the_command_and_passes_its_exit_code_and_pid() -> None:
    code, pid, out = run(["/bin/sh", "sh", "-c", 'echo "$0 $1 $V $$"; exit 7', "zero", "one"],
                         {"V": "env"})
    assert code == 7
    assert out.decode().split() == ["zero", "one", "env", str(pid)]


def test_a_killed_command_is_128_plus_the_signal() -> None:
    code, _, _ = run(["/bin/sh", "sh", "-c", "kill -TERM $$"])
    assert code == 128 + signal.SIGTERM


def test_missing_and_unrunnable_programs() -> None:
    assert run(["/nonexistent", "x"])[0] == 127
    assert run(["/etc/hostname", "x"])[0] == 126


def test_the_command_keeps_default_signals_and_never_gets_the_report_fd() -> None:
    _, _, out = run(["/bin/sh", "sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status; "
                     "[ -e /proc/self/fd/3 ] && echo has-fd3 || echo no-fd3"])
    text = out.decode()
    assert "no-fd3" in text
    assert "SigIgn:\t0000000000000000" in text, text


def test_the_memfd_is_sealed() -> None:
    fd = enter.sealed_memfd()
    try:
        with pytest.raises(PermissionError):
            os.write(fd, b"x")
        assert fcntl.fcntl(fd, 1034) == 0xF  # F_GET_SEALS: seal, shrink, grow, write
        assert os.pread(fd, 4, 0) == b"\x7fELF"
    finally:
        os.close(fd)
