"""Reaching a cluster member: :func:`connect` and :func:`hello`.

STUB for the cluster branch: only ``local:`` members (a root on this host, reached through
:class:`~sysmgr.api.local.LocalBackend`) are served here. The SSH transport and
``RemoteBackend`` replace this module when the remote branch is merged; the interface is the
same: ``connect(spec, *, admin_root, timeout) -> Backend`` and ``hello(spec, ...)``.
"""

from __future__ import annotations

from typing import Any

from sysmgr import __version__
from sysmgr.api.backend import Backend
from sysmgr.api.local import LocalBackend
from sysmgr.engine import cluster as ecluster
from sysmgr.errors import DriverUnavailable, RemoteError
from sysmgr.layout import Layout
from sysmgr.types import MemberSpec


def _local_layout(spec: MemberSpec) -> Layout:
    layout = Layout(spec.root)
    if not layout.exists():
        raise RemoteError(f"{spec.root} is not an initialised sysmgr root",
                          hint=f"sysmgr --root {spec.root} init")
    return layout


def _no_ssh(spec: MemberSpec) -> DriverUnavailable:
    return DriverUnavailable(f"member {spec.name}: SSH members ({spec.url}) need the SSH "
                             "transport, which this build does not have")


def connect(spec: MemberSpec, *, admin_root: str, timeout: float = 5.0) -> Backend:
    """The backend of member ``spec``: a LocalBackend on its root for ``local:``."""
    if spec.is_local:
        return LocalBackend(_local_layout(spec))
    raise _no_ssh(spec)


def hello(spec: MemberSpec, *, admin_root: str, timeout: float = 5.0) -> Any:
    """What the member says about itself: RPC version, sysmgr version, root, hostname, facts
    (cpus, memory total/free) and its number of containers."""
    if spec.is_local:
        return ecluster.local_hello(_local_layout(spec).root, __version__)
    raise _no_ssh(spec)
