"""A container's AppArmor profile, on the engine's side: rendered from its expanded config
and loaded before each start, removed from the kernel when the container is deleted or
renamed, and described once in the host's ``info``.

Nothing happens where the host has no usable AppArmor (this is said in ``info``) or where the
runtime cannot apply a profile (:attr:`RuntimeInfo.apparmor`): the container then starts as
before, confined by its user namespace, seccomp and capabilities.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Mapping

from sysmgr.drivers.runtime import apparmor
from sysmgr.drivers.runtime.base import RuntimeSpec
from sysmgr.engine.host import Host
from sysmgr.types import HostSecurity


def profile_name(host: Host, name: str) -> str:
    """The AppArmor profile of container ``name``: ``sysmgr-<root id>-<name>``."""
    return apparmor.profile_name(host.layout.prefix, name)


def profile_dir(host: Host, name: str) -> str:
    """Where the profile text and its compiled cache are kept: the container's runtime dir."""
    return os.path.join(host.layout.container_dir(name), "apparmor")


def confine(host: Host, spec: RuntimeSpec, config: Mapping[str, str]) -> RuntimeSpec:
    """``spec`` with the container's profile, loaded now (replaced when already loaded:
    ``raw.apparmor`` or the privilege may have changed since the last start); ``spec``
    unchanged where no profile can be applied."""
    if not host.runtime.info.apparmor or apparmor.unavailable_reason() is not None:
        return spec
    name = profile_name(host, spec.name)
    text = apparmor.render(name, privileged=spec.idmap is None, raw=config.get("raw.apparmor", ""))
    apparmor.load(name, text, profile_dir(host, spec.name))
    return dataclasses.replace(spec, apparmor_profile=name)


def release(host: Host, name: str) -> None:
    """Unload the profile of the stopped container ``name`` and forget its text (delete,
    rename); nothing loaded is success."""
    apparmor.unload(profile_name(host, name))
    shutil.rmtree(profile_dir(host, name), ignore_errors=True)


def host_security(host: Host) -> HostSecurity:
    """What ``info`` says about AppArmor on this host, once."""
    why = apparmor.unavailable_reason()
    if why is not None:
        return HostSecurity(why)
    if not host.layout.exists():
        return HostSecurity("enabled: each container will run under its own profile "
                            "sysmgr-<root id>-<name>")
    if not host.runtime.info.apparmor:
        return HostSecurity(f"enabled, but the {host.runtime.name} runtime applies no profile")
    now = apparmor.loaded(host.layout.prefix + "-")
    return HostSecurity(f"enabled: each container runs under its own profile "
                        f"{profile_name(host, '<name>')}, loaded at its start "
                        f"({'loaded now: ' + ', '.join(now) if now else 'none loaded now'})")
