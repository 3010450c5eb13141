"""What an OCI runtime (crun, runc) is given: sysmgr's rendered bundle, adapted where a
runtime launched from outside must see it differently (pure, no I/O).

The rendering is :func:`sysmgr.drivers.runtime.bundle.render`'s, the one the native runtime
runs. Three things differ, each because of where the runtime stands, not what the container is:

- ``root.path`` and every bind mount's source point into :data:`STAGE`, a tmpfs (0711) that
  exists only in the runtime's own mount namespace, where sysmgr binds them: with a user
  namespace the runtime mounts as the container's root, which cannot traverse the 0700
  directories sysmgr keeps container roots under (and never will: the host exposure rule).
  The console log is bound there from the fd sysmgr opened on the volume, so no link the
  tenant planted is followed.
- without a user namespace, the capability sets keep only what the launching process holds:
  a launcher cannot hand out a capability it lacks (the native runtime intersects the same
  way; crun and runc refuse to start).
- runc manages the cgroup itself and puts init at its ``cgroupsPath``: that is one level
  below sysmgr's (``.payload``, where sysmgr's own processes sit in the devices hierarchy),
  so the device rules a privileged container's root could rewrite in its cgroup namespace
  root can only narrow those of sysmgr's level above it. Its level gets the device rules and
  no limits: those are sysmgr's, one level up, written before the start and live, where the
  kernel then counts OOM kills and refused forks (runc's ``update`` is not used).
- ``process`` for an exec is init's, with the command's argv, environment, directory and ids.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from sysmgr.drivers.runtime import bundle
from sysmgr.drivers.runtime.base import ProcessSpec

#: Host directory over which each start mounts its own tmpfs with the staged paths; it (and
#: its empty ``rootfs``) exist on the host so that a runtime that changes into ``root.path``
#: outside the container (runc's exec) finds a directory there.
STAGE = "/run/sysmgr-oci"
STAGED_ROOTFS = f"{STAGE}/rootfs"


#: the flags of a bind that a user namespace's root can never clear (the kernel locks them
#: on mounts it copies into a mount namespace of a less privileged user namespace)
LOCKABLE = 1 | 2 | 4 | 8  # MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC

Bind = tuple[str, str, int]


def adapt(config: Mapping[str, Any], held_caps: int, cgroup_leaf: str = "",
          cgroups_path: str | None = None) -> tuple[dict[str, Any], list[Bind]]:
    """``config`` as the OCI runtime gets it, and the binds to make in :data:`STAGE` first:
    ``(host source, staged path, flags)``; the console log's source is ``""`` (the caller's
    fd). The staged binds already carry their mount's read-only, nosuid, nodev and noexec:
    made in the host's user namespace, they are locked in the container's (the runtime's own
    remount, done inside, could be undone by the container's root).
    ``cgroup_leaf``: the runtime's cgroup is that sub-cgroup of sysmgr's; ``cgroups_path``:
    sysmgr's cgroup as the kernel names it, when it differs from the rendering's (under
    systemd on cgroup v2: in sysmgr's delegated scope)."""
    out = copy.deepcopy(dict(config))
    if cgroups_path:
        out["linux"]["cgroupsPath"] = cgroups_path
    if cgroup_leaf:
        out["linux"]["cgroupsPath"] = out["linux"]["cgroupsPath"].rstrip("/") + "/" + cgroup_leaf
        # the limits stay at sysmgr's level above (written before the start): the kernel
        # charges and counts (OOM kills, refused forks, peaks) in the cgroup whose limit bites
        res = out["linux"]["resources"]
        out["linux"]["resources"] = {"devices": res.get("devices") or []}
    binds: list[Bind] = [(out["root"]["path"], STAGED_ROOTFS, 0)]
    out["root"] = dict(out["root"], path=STAGED_ROOTFS)
    for i, m in enumerate(out.get("mounts") or ()):
        if m.get("type") != "bind":
            continue
        staged = f"{STAGE}/m{i}"
        flags = bundle.mount_flags(m.get("options") or ())[0] & LOCKABLE
        binds.append(("" if m["destination"] == "/dev/console" else m["source"], staged, flags))
        m["source"] = staged
    if not any(ns.get("type") == "user" for ns in out["linux"].get("namespaces") or ()):
        # (a new user namespace starts with every capability: nothing to intersect there)
        caps = out["process"].get("capabilities") or {}
        keep = {n for i, n in enumerate(bundle.ALL_CAPABILITIES) if held_caps >> i & 1}
        out["process"]["capabilities"] = {k: [c for c in v if c in keep] for k, v in caps.items()}
    return out, binds


def exec_process(config: Mapping[str, Any], proc: ProcessSpec, *, terminal: bool) -> dict[str, Any]:
    """The ``process`` of an exec (``--process``): init's capabilities, no_new_privs and
    profile; the command's argv, environment (PATH by default), directory and ids."""
    p = copy.deepcopy(dict(config["process"]))
    env = dict(proc.env)
    env.setdefault("PATH", bundle.DEFAULT_PATH)
    p.update(args=list(proc.argv), env=[f"{k}={v}" for k, v in env.items()], cwd=proc.cwd or "/",
             user={"uid": proc.uid, "gid": proc.gid}, terminal=terminal)
    p.pop("consoleSize", None)
    if terminal and proc.window:
        p["consoleSize"] = {"height": proc.window[0], "width": proc.window[1]}
    return p
