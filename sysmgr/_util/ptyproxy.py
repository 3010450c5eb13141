"""Connect the local terminal to a pty master (``sysmgr shell``, ``exec -t``).

:func:`proxy` puts the local terminal in raw mode (restored on every exit path), copies bytes
both ways with non-blocking buffered I/O (a full pty must never stall the other direction),
forwards the window size at start and on SIGWINCH, and returns the process's exit code.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import signal
import struct
import termios
import threading
import tty
from typing import Iterator, Protocol


class Process(Protocol):
    """What :func:`proxy` needs of the process (a runtime's ``ExecProcess``); ``poll()``,
    when the object has it, lets the proxy stop although a background job holds the pty."""

    def wait(self) -> int: ...

_CHUNK = 65536


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode on ``fd`` if it is a terminal; the old settings come back however we leave."""
    if not os.isatty(fd):
        yield
        return
    old = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, old)


def copy_winsize(src_fd: int, dst_fd: int) -> None:
    """Copy the window size of terminal ``src_fd`` to pty ``dst_fd`` (no-op if not a tty)."""
    try:
        size = fcntl.ioctl(src_fd, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(dst_fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass


@contextlib.contextmanager
def _sigwinch_pipe() -> Iterator[int | None]:
    """A pipe that becomes readable on SIGWINCH (None outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def on_winch(_sig: int, _frame: object) -> None:
        try:
            os.write(w, b"w")
        except BlockingIOError:
            pass

    old = signal.signal(signal.SIGWINCH, on_winch)
    try:
        yield r
    finally:
        signal.signal(signal.SIGWINCH, old)
        os.close(r)
        os.close(w)


def proxy(master_fd: int, proc: Process, stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Shuttle bytes between the local terminal and ``master_fd`` until the process's side
    of the pty closes; return ``proc.wait()``. ``master_fd`` stays open (caller owns it)."""
    tty_fd = stdin_fd if os.isatty(stdin_fd) else stdout_fd
    old_flags = {fd: fcntl.fcntl(fd, fcntl.F_GETFL) for fd in {master_fd, stdout_fd}}
    with raw_terminal(stdin_fd), _sigwinch_pipe() as winch, selectors.DefaultSelector() as sel:
        try:
            for fd in old_flags:
                fcntl.fcntl(fd, fcntl.F_SETFL, old_flags[fd] | os.O_NONBLOCK)
            copy_winsize(tty_fd, master_fd)
            _pump(sel, master_fd, proc, stdin_fd, stdout_fd, tty_fd, winch)
        finally:
            for fd, flags in old_flags.items():
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return proc.wait()


def _pump(sel: selectors.BaseSelector, master: int, proc: Process, stdin_fd: int, stdout_fd: int,
          tty_fd: int, winch: int | None) -> None:
    to_master = bytearray()
    to_out = bytearray()
    stdin_open = True
    master_open = True
    if winch is not None:
        sel.register(winch, selectors.EVENT_READ)

    def want(fd: int, events: int) -> None:
        try:
            key = sel.get_key(fd)
        except KeyError:
            if events:
                sel.register(fd, events)
            return
        if not events:
            sel.unregister(fd)
        elif key.events != events:
            sel.modify(fd, events)

    while master_open or to_out:
        # stdin and stdout may be the same fd (a terminal): register it once
        ev: dict[int, int] = {}
        if stdin_open and len(to_master) < _CHUNK:
            ev[stdin_fd] = ev.get(stdin_fd, 0) | selectors.EVENT_READ
        if to_out:
            ev[stdout_fd] = ev.get(stdout_fd, 0) | selectors.EVENT_WRITE
        m = 0
        if master_open and len(to_out) < _CHUNK:
            m |= selectors.EVENT_READ
        if master_open and to_master:
            m |= selectors.EVENT_WRITE
        ev[master] = ev.get(master, 0) | m
        for fd in (stdin_fd, stdout_fd, master):
            want(fd, ev.get(fd, 0))
        poll = getattr(proc, "poll", None)
        events = sel.select(0.2)
        if not events and poll is not None and poll() is not None and not _readable(master):
            break  # the process ended and nothing more is coming (a background job may hold the pty)
        for key, mask in events:
            fd = key.fd
            if fd == winch:
                with contextlib.suppress(BlockingIOError):
                    os.read(winch, 64)
                copy_winsize(tty_fd, master)
                continue
            if mask & selectors.EVENT_READ and fd == master:
                try:
                    data = os.read(master, _CHUNK)
                except BlockingIOError:
                    data = None
                except OSError as e:  # EIO: every slave fd closed (the process exited)
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if data == b"":
                    master_open = False
                elif data:
                    to_out += data
            if mask & selectors.EVENT_READ and fd == stdin_fd and stdin_open:
                try:
                    data = os.read(stdin_fd, _CHUNK)
                except BlockingIOError:
                    data = None
                if data == b"":
                    stdin_open = False
                    if not os.isatty(stdin_fd):
                        # piped input ended: pass EOF on as the terminal's EOF character
                        to_master += bytes([termios.tcgetattr(master)[6][termios.VEOF][0]])
                elif data:
                    to_master += data
            if mask & selectors.EVENT_WRITE and fd == master and to_master:
                with contextlib.suppress(BlockingIOError):
                    del to_master[:os.write(master, to_master)]
            if mask & selectors.EVENT_WRITE and fd == stdout_fd and to_out:
                with contextlib.suppress(BlockingIOError):
                    del to_out[:os.write(stdout_fd, to_out)]
    for fd in (stdin_fd, stdout_fd, master):
        want(fd, 0)


def _readable(fd: int) -> bool:
    sel = selectors.DefaultSelector()
    try:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(0))
    finally:
        sel.close()
