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


def window(fd: int) -> tuple[int, int] | None:
    """(rows, columns) of terminal ``fd``; None when it is not one or has no size yet."""
    try:
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    except OSError:
        return None
    return (rows, cols) if rows and cols else None


def copy_winsize(src_fd: int, dst_fd: int) -> None:
    """Copy the window size of terminal ``src_fd`` to pty ``dst_fd`` (no-op if not a tty)."""
    try:
        size = fcntl.ioctl(src_fd, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(dst_fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass


@contextlib.contextmanager
def sigwinch_pipe() -> Iterator[int | None]:
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
    with raw_terminal(stdin_fd), sigwinch_pipe() as winch, selectors.DefaultSelector() as sel:
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
    _Pump(sel, master, stdin_fd, stdout_fd).run(proc, tty_fd, winch)


class _Pump:
    """The buffers and the open/closed state of one proxied session."""

    def __init__(self, sel: selectors.BaseSelector, master: int, stdin_fd: int,
                 stdout_fd: int) -> None:
        self.sel, self.master, self.stdin_fd, self.stdout_fd = sel, master, stdin_fd, stdout_fd
        self.to_master = bytearray()
        self.to_out = bytearray()
        self.stdin_open = True
        self.master_open = True

    def want(self, fd: int, events: int) -> None:
        try:
            key = self.sel.get_key(fd)
        except KeyError:
            if events:
                self.sel.register(fd, events)
            return
        if not events:
            self.sel.unregister(fd)
        elif key.events != events:
            self.sel.modify(fd, events)

    def _interest(self) -> None:
        # stdin and stdout may be the same fd (a terminal): register it once
        ev: dict[int, int] = {}
        if self.stdin_open and len(self.to_master) < _CHUNK:
            ev[self.stdin_fd] = ev.get(self.stdin_fd, 0) | selectors.EVENT_READ
        if self.to_out:
            ev[self.stdout_fd] = ev.get(self.stdout_fd, 0) | selectors.EVENT_WRITE
        m = 0
        if self.master_open and len(self.to_out) < _CHUNK:
            m |= selectors.EVENT_READ
        if self.master_open and self.to_master:
            m |= selectors.EVENT_WRITE
        ev[self.master] = ev.get(self.master, 0) | m
        for fd in (self.stdin_fd, self.stdout_fd, self.master):
            self.want(fd, ev.get(fd, 0))

    def run(self, proc: Process, tty_fd: int, winch: int | None) -> None:
        if winch is not None:
            self.sel.register(winch, selectors.EVENT_READ)
        poll = getattr(proc, "poll", None)
        while self.master_open or self.to_out:
            self._interest()
            events = self.sel.select(0.2)
            if not events and poll is not None and poll() is not None \
                    and not _readable(self.master):
                break  # the process ended and nothing more is coming (a background job may hold the pty)
            for key, mask in events:
                if key.fd == winch:
                    with contextlib.suppress(BlockingIOError):
                        os.read(winch, 64)
                    copy_winsize(tty_fd, self.master)
                    continue
                self._handle(key.fd, mask)
        for fd in (self.stdin_fd, self.stdout_fd, self.master):
            self.want(fd, 0)

    def _handle(self, fd: int, mask: int) -> None:
        if mask & selectors.EVENT_READ and fd == self.master:
            self._read_master()
        if mask & selectors.EVENT_READ and fd == self.stdin_fd and self.stdin_open:
            self._read_stdin()
        if mask & selectors.EVENT_WRITE and fd == self.master and self.to_master:
            with contextlib.suppress(BlockingIOError):
                del self.to_master[:os.write(self.master, self.to_master)]
        if mask & selectors.EVENT_WRITE and fd == self.stdout_fd and self.to_out:
            with contextlib.suppress(BlockingIOError):
                del self.to_out[:os.write(self.stdout_fd, self.to_out)]

    def _read_master(self) -> None:
        try:
            data = os.read(self.master, _CHUNK)
        except BlockingIOError:
            return
        except OSError as e:  # EIO: every slave fd closed (the process exited)
            if e.errno != errno.EIO:
                raise
            data = b""
        if data == b"":
            self.master_open = False
        else:
            self.to_out += data

    def _read_stdin(self) -> None:
        try:
            data = os.read(self.stdin_fd, _CHUNK)
        except BlockingIOError:
            return
        if data == b"":
            self.stdin_open = False
            if not os.isatty(self.stdin_fd):
                # piped input ended: pass EOF on as the terminal's EOF character
                self.to_master += bytes([termios.tcgetattr(self.master)[6][termios.VEOF][0]])
        else:
            self.to_master += data


def _readable(fd: int) -> bool:
    sel = selectors.DefaultSelector()
    try:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(0))
    finally:
        sel.close()
