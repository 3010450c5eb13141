"""A start under an OCI runtime, in two halves (:class:`~sysmgr.drivers.runtime.base.PendingStart`):
:meth:`OciStart.fork` forks the child that runs ``create`` (:func:`.launch.start_child`) and
returns while the runtime sets the container up; :meth:`OciStart.finish` waits for it, reads
init's pid with ``state``, runs ``before_go`` (init is created, paused before its exec: the
nics go into its netns) and runs ``start``. On any failure the container is deleted and its
cgroup removed: nothing is half-created.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Sequence

from sysmgr._util import linux, safefs
from sysmgr.drivers.runtime.base import CONSOLE_LOG, InitRecord, PendingStart, RuntimeSpec, exit_code
from sysmgr.drivers.runtime.cgroups import Cgroup
from sysmgr.drivers.runtime.native import cgjoin
from sysmgr.drivers.runtime.oci import launch
from sysmgr.errors import DriverError, SysmgrError

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.drivers.runtime.oci import OciRuntime


class OciStart(PendingStart):
    """One container's start: its cgroup made (by the caller), its ``create`` forked."""

    def __init__(self, runtime: OciRuntime, spec: RuntimeSpec, cid: str, cg: Cgroup, what: str,
                 before_go: Callable[[int], object] | None) -> None:
        self.runtime, self.spec, self.cid, self.cg = runtime, spec, cid, cg
        self.what, self.before_go = what, before_go
        self.child = 0
        self.err_r = -1

    def fork(self, argv: Sequence[str], binds: Sequence[tuple[str, str, int]]) -> None:
        """Open the console log (new at each start, on the container's volume, never through
        a link its tenant planted), fork the child that runs ``create``."""
        try:
            console = safefs.create_log(self.spec.rootfs, CONSOLE_LOG)
        except SysmgrError as e:
            raise DriverError(f"{self.what}: cannot create the console log: {e}") from e
        try:
            self.err_r, err_w = os.pipe()
            try:
                self.child, joins = cgjoin.fork(self._joined())
                if self.child == 0:
                    launch.start_child(argv, joins, binds, console, err_w,
                                       hide_hybrid=self.runtime.hide_hybrid)
            finally:
                os.close(err_w)
        finally:
            os.close(console)

    def _joined(self) -> list[str]:
        """The cgroups the runtime's ``create`` is born in, so init is too: all of sysmgr's
        when the runtime manages none (crun); else only a hybrid host's cgroup2 hierarchy,
        which runc leaves be (on cgroup v2 its cgroup, below sysmgr's, must be made while
        sysmgr's holds no process: the no-internal-processes rule)."""
        files = self.cg.procs_files()
        if not self.runtime.cgroup_verbs:
            return files
        if self.cg.version != 1:
            return []
        return [f for f in files if not os.path.exists(os.path.join(os.path.dirname(f), "tasks"))]

    def finish(self) -> InitRecord:
        try:
            return self._complete()
        except BaseException as e:
            self.failed(e)
            raise
        finally:
            self.cg.release()  # (v2 under systemd: the scope's holder goes, init keeps it)

    def abort(self) -> None:
        self._wait_child()
        self.failed(None)
        self.cg.release()

    def _wait_child(self) -> tuple[str, int]:
        msg = ""
        if self.err_r >= 0:
            try:
                msg = launch.read_report(self.err_r)
            finally:
                os.close(self.err_r)
                self.err_r = -1
        status = 0
        if self.child:
            _, status = os.waitpid(self.child, 0)
            self.child = 0
        return msg, exit_code(status)

    def _complete(self) -> InitRecord:
        msg, code = self._wait_child()
        rt = self.runtime
        if msg or code:
            raise DriverError(f"{self.what}: {msg or self._create_error()}")
        st = rt.state(self.cid)
        pid = int((st or {}).get("pid") or 0)
        starttime = linux.proc_starttime(pid) if pid > 0 else None
        if st is None or st.get("status") != "created" or starttime is None:
            raise DriverError(f"{self.what}: {rt.binary} created no init ({(st or {}).get('status')})")
        if self.before_go is not None:
            self.before_go(pid)
        rt.run("start", self.cid)
        return InitRecord(pid=pid, starttime=starttime, cgroup=self.spec.cgroup, engine=rt.name)

    def _create_error(self) -> str:
        """The runtime writes its errors to its stderr, init's console: the log's last line,
        in the native runtime's words where there are some."""
        text = self.runtime.console_log(self.spec.rootfs).strip()
        last = text.splitlines()[-1] if text else "no message"
        init = self.spec.init[0]
        if ("not found" in last or "no such file" in last) and init in last:
            return f"init {init} not found in the image ({self.runtime.binary}: {last})"
        return f"{self.runtime.binary} create failed: {last}"

    def failed(self, error: BaseException | None) -> None:
        """Delete what the runtime made, remove the cgroup; a cleanup failure is noted."""
        try:
            self.runtime.cleanup(self.spec.cgroup)
        except DriverError as cleanup_error:
            if error is not None:
                error.add_note(f"cleanup failed too: {cleanup_error}")
