"""The boot log of a container whose init keeps a journal (systemd), for ``console --show-log``.

A busybox-style init writes its boot to stdout/stderr, which is the console log on the
container's volume. systemd writes its status only to a *terminal* on ``/dev/console``, and a
terminal needs a process on the other end to drain it: LXC keeps a resident monitor for that,
sysmgr keeps none. systemd's journal has the boot instead, on the container's own volume
(``/var/log/journal``), so the log is there for a stopped container too.

The journal files are the tenant's: the newest are copied out without following anything
planted in the container (:mod:`sysmgr._util.safefs`), then read by the host's
``journalctl`` running as ``nobody`` with no capabilities and ``no_new_privs``, so a crafted
file meets a parser that can do nothing.
"""

from __future__ import annotations

import os
import stat
import tempfile

from sysmgr._util import proc, safefs
from sysmgr.errors import SysmgrError

JOURNAL_DIR = "/var/log/journal"
MAX_COPY = 64 * 1024 * 1024   # bytes of journal files copied out (the newest first)
LINES = 2000                  # the last lines of the last boot
NOBODY = 65534


def _newest_files(rootfs: str) -> list[tuple[str, int]]:
    """(path inside the container, size) of the journal files, newest first (regular files
    only: nothing planted as a link is followed)."""
    found = []
    try:
        machines = safefs.listdir(rootfs, JOURNAL_DIR)
    except SysmgrError:
        return []
    for m, mst, _ in machines:
        if not stat.S_ISDIR(mst.st_mode):
            continue
        d = f"{JOURNAL_DIR}/{m}"
        try:
            entries = safefs.listdir(rootfs, d)
        except SysmgrError:
            continue
        found += [(st.st_mtime, f"{d}/{n}", st.st_size) for n, st, _ in entries
                  if n.endswith(".journal") and stat.S_ISREG(st.st_mode)]
    return [(p, size) for _, p, size in sorted(found, reverse=True)]


def boot_journal(rootfs: str) -> str:
    """The last boot's journal of the container at ``rootfs`` (empty when it keeps none or
    the host has no journalctl), after a header line."""
    files = _newest_files(rootfs)
    if not files or proc.which("journalctl") is None or proc.which("setpriv") is None:
        return ""
    with tempfile.TemporaryDirectory(prefix="sysmgr-journal-") as tmp:
        os.chown(tmp, NOBODY, NOBODY)
        total = 0
        for i, (path, size) in enumerate(files):
            if total and total + size > MAX_COPY:
                break
            dst = os.path.join(tmp, f"{i}.journal")
            try:
                with open(dst, "wb") as f:
                    total += safefs.pull(rootfs, path, f)
            except SysmgrError:
                continue
            os.chown(dst, NOBODY, NOBODY)
        res = proc.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
                        "journalctl", f"--file={tmp}/*.journal", "--boot", f"--lines={LINES}",
                        "--output=short-precise", "--no-pager", "--quiet"],
                       check=False, env={"PATH": "/usr/bin:/bin", "SYSTEMD_COLORS": "0"})
    out = res.stdout.decode(errors="replace") if res.returncode == 0 else ""
    return f"-- the container's journal, last boot --\n{out}" if out.strip() else ""
