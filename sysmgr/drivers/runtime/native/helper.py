"""Helpers the caller (P) forks for one job and reads back, for the native runtime.

:func:`in_helper` runs a function in a forked child that makes itself non-dumpable first: the
child is a copy of the host's interpreter about to enter a container's namespaces, and
nothing in there (root in its user namespace) may ptrace it or open its ``/proc/PID/mem``
(runc's CVE-2016-9962 / CVE-2019-5736 lesson). Its result, or its exception, comes back
pickled over a pipe. :func:`read_to_eof` reads a pipe to its end within a deadline.

Layer: runtime driver.
"""

from __future__ import annotations

import os
import select
import signal
import time
from typing import Callable, TypeVar

from sysmgr._util import linux

T = TypeVar("T")


def read_to_eof(fd: int, timeout: float | None) -> bytes:
    """Everything written to the pipe ``fd`` until all writers closed it (exec = EOF);
    TimeoutError after ``timeout`` seconds (None: no deadline)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks: list[bytes] = []
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError
        if not poller.poll(None if left is None else left * 1000):
            continue
        data = os.read(fd, 4096)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def in_helper(fn: Callable[[], T], *, what: str, timeout: float | None = None) -> T:
    """``fn()`` run in a forked, non-dumpable child: its result, or its exception raised
    here (an unpicklable one as an OSError naming it). ``what`` names the helper when it
    dies, or (``timeout`` seconds) hangs and is killed: then an OSError."""
    import pickle  # only for helpers

    r, w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(r)
            linux.prctl(linux.PR_SET_DUMPABLE, 0)
            try:
                out: tuple[bool, object] = (True, fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                out = (False, e)
            try:
                data = pickle.dumps(out)
            except Exception as e:  # noqa: BLE001 - an unpicklable result or error
                data = pickle.dumps((False, OSError(f"{type(e).__name__}: {e}")))
            with os.fdopen(w, "wb") as f:
                f.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        data = read_to_eof(r, timeout)
    except TimeoutError:
        os.kill(child, signal.SIGKILL)
        raise OSError(f"{what}: no answer after {timeout:.0f}s") from None
    finally:
        os.close(r)
        os.waitpid(child, 0)
    if not data:
        raise OSError(f"{what} died")
    ok, value = pickle.loads(data)
    if ok:
        return value  # type: ignore[no-any-return]
    raise value
