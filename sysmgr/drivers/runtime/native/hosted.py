"""What every runtime whose init is a host process in sysmgr's own cgroups does the same way:
the native runtime, and the OCI engines (crun, runc) that run sysmgr's bundle.

Both keep the container's limits, freezer and usage at sysmgr's cgroup level and watch init
through a pidfd (:mod:`.process`), whatever started it; a driver overrides only where its
engine adds something (runc's own freezer level, crun's state dir).
"""

from __future__ import annotations

from sysmgr.drivers.runtime.base import InitRecord, Limits, Runtime, RuntimeSpec, Usage
from sysmgr.drivers.runtime.cgroups import Cgroup, open_cgroup
from sysmgr.drivers.runtime.native import process
from sysmgr.errors import Conflict


class CgroupHostedRuntime(Runtime):
    """The shared half of the native and OCI drivers (``cgroup_root`` set by each)."""

    cgroup_root: str

    def _cgroup(self, path: str) -> Cgroup:
        return open_cgroup(path, self.cgroup_root)

    def start(self, spec: RuntimeSpec, *, before_go: process.BeforeGo | None = None
              ) -> InitRecord:
        return self.begin_start(spec, before_go=before_go).finish()

    def watch(self, rec: InitRecord) -> int | None:
        return process.watch_fd(rec)

    def reap(self, rec: InitRecord) -> int | None:
        return process.collect_exit(rec)

    @staticmethod
    def check_running(rec: InitRecord) -> None:
        if not process.alive(rec):
            raise Conflict("the container is not running")

    def freeze(self, rec: InitRecord) -> None:
        self.check_running(rec)
        self._cgroup(rec.cgroup).freeze()

    def unfreeze(self, rec: InitRecord) -> None:
        self.check_running(rec)
        self._cgroup(rec.cgroup).thaw()

    def set_limits(self, cgroup: str, limits: Limits) -> None:
        cg = self._cgroup(cgroup)
        if not cg.exists():
            raise Conflict(f"cgroup {cgroup} does not exist: the container is not running")
        self.write_limits(cg, limits)

    def write_limits(self, cg: Cgroup, limits: Limits) -> None:
        """Write ``limits`` to the container's existing cgroup ``cg`` (and whatever level an
        engine keeps below it)."""
        cg.set_limits(limits)

    def usage(self, cgroup: str, *, detail: bool = False) -> Usage:
        cg = self._cgroup(cgroup)
        return cg.usage(detail=detail) if cg.exists() else Usage()
