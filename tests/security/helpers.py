"""Shared pieces of the escape suite: roots whose path a host user can traverse, a C probe
compiled at test time, and running things as an unprivileged host user (uid 65534).

The pytest base directory is 0700, which alone would stop any host user: an escape test
that passes because of pytest proves nothing. :func:`traversable` opens the ancestors of a
root to ``o+x`` for the test (restoring them afterwards), and every test first checks that
uid 65534 does reach the root itself (``root.id``), so what stops it is sysmgr's own modes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from typing import Any, Iterator

import pytest

from tests.conftest import REPO, run_cli

NOBODY = 65534

PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* probe            -> prints euid=N
   probe drop PROG  -> becomes uid/gid 65534, then execs PROG (prints PROG's euid)
   probe open PATH  -> open(PATH, O_RDONLY): prints open=ok or open=<errno name> */
int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "drop") == 0) {
        if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)) {
            perror("drop");
            return 3;
        }
        execv(argv[2], argv + 2);
        perror("exec");
        return 4;
    }
    if (argc > 2 && strcmp(argv[1], "open") == 0) {
        int fd = open(argv[2], O_RDONLY | O_NONBLOCK);
        if (fd < 0) {
            printf("open=%s\n", strerrorname_np(errno));
            return 1;
        }
        printf("open=ok\n");
        close(fd);
        return 0;
    }
    printf("euid=%d\n", (int)geteuid());
    return 0;
}
"""


@pytest.fixture(scope="session")
def probe() -> Iterator[str]:
    """The probe, static (busybox images have no libc), in a directory any user can reach."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = tempfile.mkdtemp(prefix="sysmgr-probe-")
    try:
        os.chmod(d, 0o755)
        src = os.path.join(d, "probe.c")
        with open(src, "w") as f:
            f.write(PROBE_C)
        out = os.path.join(d, "probe")
        res = subprocess.run(["gcc", "-static", "-O2", "-o", out, src], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot build a static probe: {res.stderr.strip()[-300:]}")
        os.chmod(out, 0o755)
        yield out
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def traversable(path: str) -> Iterator[None]:
    """Give ``path`` and its ancestors ``o+x`` for the block, then put their modes back."""
    changed: list[tuple[str, int]] = []
    p = os.path.abspath(path)
    try:
        while True:
            mode = stat.S_IMODE(os.stat(p).st_mode)
            if not mode & stat.S_IXOTH:
                os.chmod(p, mode | stat.S_IXOTH)
                changed.append((p, mode))
            if p == "/":
                break
            p = os.path.dirname(p)
        yield
    finally:
        for p, mode in reversed(changed):
            os.chmod(p, mode)


def as_nobody(*argv: str, pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``argv`` as uid/gid 65534 with no supplementary groups: a forked child calls
    ``setgroups``/``setresgid``/``setresuid`` and execs, with no capability left.

    Not ``setpriv --reuid``: util-linux's setpriv sets ``PR_SET_KEEPCAPS`` and re-raises
    every capability after ``setresuid``, so its ``execve`` still looks the path up with
    ``CAP_DAC_OVERRIDE`` (a 0700 directory does not stop it) and the capabilities go only
    with the exec: it would "run" a file no uid-65534 process can reach.
    """
    # through env(1): an exec that fails (EACCES) is then env's exit status 126 and its
    # message, like a shell's, instead of an exception in this process
    return subprocess.run(["env", "--", *argv], capture_output=True, text=True, user=NOBODY,
                          group=NOBODY, extra_groups=[], pass_fds=pass_fds, timeout=30)


def assert_reaches_root(root: str) -> None:
    """The control: uid 65534 reads ``root.id``, so only sysmgr's modes can stop it below."""
    res = as_nobody("cat", os.path.join(root, "root.id"))
    assert res.returncode == 0 and res.stdout.strip(), \
        f"the test setup keeps host users out already: {res.stderr}"


def via_fd(path: str, *argv: str) -> subprocess.CompletedProcess:
    """Open ``path`` as root (``O_PATH``) and run ``argv`` as uid 65534 with ``{fd}``
    replaced by ``/proc/self/fd/N``: what a host user holding a handle (passed over a
    socket by a process inside) could do; path modes no longer matter, mount flags do."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    try:
        args = [a.replace("{fd}", f"/proc/self/fd/{fd}") for a in argv]
        return as_nobody(*args, pass_fds=(fd,))
    finally:
        os.close(fd)


def block_device() -> tuple[int, int]:
    """Major and minor of a block device of this host that root can open (a disk when
    there is one, else a loop device): the control that the node under test is live."""
    names = sorted(os.listdir("/sys/block"))
    names.sort(key=lambda n: n.startswith(("loop", "ram", "zram", "nbd")))
    for n in names:
        try:
            fd = os.open(f"/dev/{n}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if stat.S_ISBLK(st.st_mode):
            return os.major(st.st_rdev), os.minor(st.st_rdev)
    pytest.skip("no block device root can open on this host")


def ok(*args: str, root: str, **kw) -> str:
    return run_cli(*args, root=root, check=True, **kw).stdout


def btrfs_ok() -> bool:
    try:
        from sysmgr.drivers.storage.btrfs import BtrfsPool

        BtrfsPool.check_host()
        return True
    except Exception:  # noqa: BLE001 - any reason means: skip the btrfs tests
        return False


def init_args() -> list[str]:
    """``init --auto`` without a managed network (these tests need none)."""
    helptext = subprocess.run([sys.executable, "-m", "sysmgr", "init", "--help"],
                              capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=REPO)).stdout
    return ["init", "--auto"] + (["--network", "none"] if "--network" in helptext else [])


def _engine_param(engine: str) -> Any:
    from sysmgr.drivers.runtime.oci import CrunRuntime, RuncRuntime

    cls = {"crun": CrunRuntime, "runc": RuncRuntime}[engine]
    return pytest.param(engine, marks=pytest.mark.skipif(not cls.available(),
                                                         reason=f"{engine} is not installed"))


#: every runtime engine a container can start under (the OCI ones skipped when not installed):
#: the escape tests that start containers run under each
ENGINES = [pytest.param("native"), _engine_param("crun"), _engine_param("runc")]


def use_engine(client: Any, engine: str) -> None:
    """Make ``engine`` the default profile's ``runtime.engine`` (native: left unset)."""
    if engine != "native":
        prof = client.profiles.get("default")
        prof.config["runtime.engine"] = engine
        prof.save()
