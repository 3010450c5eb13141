"""Network namespaces, the one place where netlink errors become sysmgr errors, and every
pyroute2 call of sysmgr.

:func:`translate` maps a netlink errno to :class:`~sysmgr.errors.DriverError` subclasses, for
both netlink clients: sysmgr's own (:mod:`._rtnl`, every link, address and default-route
change) and pyroute2, which only reads routing tables here (:func:`routes`, for a network's
creation and repair). pyroute2 is imported lazily, on the first :func:`routes` block, so
neither the CLI nor a start loads it (its import alone is about 90 ms); a missing pyroute2 is
:class:`~sysmgr.errors.DriverUnavailable`.

**Namespaces without a fork.** ``IPRoute(netns=...)`` forks a helper process to create its
socket (about 7 ms). A netlink socket belongs to the network namespace of the thread that
created it, and ``setns(CLONE_NEWNET)`` changes only the calling thread, so
:func:`in_netns` runs a function in a short-lived thread that joined the namespace
(about 1 ms); sockets are created there (:func:`routes` hands its own to ``IPRoute(fileno=)``).
The same trick writes the per-namespace ``/proc/sys/net`` files (:func:`write_sysctl`).

Layer: drivers (network), private to :mod:`sysmgr.drivers.network`.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sysmgr._util import linux
from sysmgr.errors import Conflict, DriverError, DriverUnavailable, NotFound

T = TypeVar("T")

RTN_UNICAST = 1
RT_TABLE_MAIN = 254
NETLINK_ROUTE = 0
_SELF_NETNS = "/proc/self/ns/net"


# -- namespaces -------------------------------------------------------------------------------

def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` with the calling *thread* in the network namespace at path ``netns``.

    ``None`` runs ``fn`` directly. Sockets ``fn`` creates, and ``/proc/sys/net`` files it
    opens, belong to that namespace.

    Raises:
        NotFound: the namespace file does not exist (e.g. the process holding it exited).
        DriverError: it is not a network namespace, or joining it failed.
    """
    if netns is None:
        return fn()
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            try:
                fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise NotFound(f"network namespace {netns} does not exist") from None
            try:
                linux.setns(fd, linux.CLONE_NEWNET)
            except OSError as e:
                raise DriverError(f"cannot enter network namespace {netns}: {e.strerror}") from e
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread below
            failure.append(e)

    t = threading.Thread(target=body, name="sysmgr-netns", daemon=True)
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return result[0]


def netns_id(netns: str | None) -> tuple[int, int] | None:
    """Identity (device, inode) of a network namespace file, None if it does not exist."""
    try:
        st = os.stat(netns or _SELF_NETNS)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pid_netns(pid: int) -> str:
    """Path of the network namespace of process ``pid`` (usable as a ``netns`` argument)."""
    return f"/proc/{pid}/ns/net"


def netns_argv(netns: str | None, argv: list[str]) -> list[str]:
    """``argv`` made to run inside namespace ``netns`` (with util-linux ``nsenter``, which
    execs the program: the process, its pid and its cmdline are the program's own)."""
    if netns is None:
        return list(argv)
    return ["nsenter", f"--net={netns}", "--", *argv]


def write_sysctl(netns: str | None, key: str, value: str) -> None:
    """Write ``net.*`` sysctl ``key`` (dotted, as ``sysctl -w``) in namespace ``netns``."""
    path = "/proc/sys/" + key.replace(".", "/")

    def write() -> None:
        with open(path, "w") as f:
            f.write(value)

    try:
        in_netns(netns, write)
    except OSError as e:
        raise DriverError(f"cannot set {key}={value}: {e.strerror}") from e


def read_sysctl(netns: str | None, key: str) -> str | None:
    """Read ``net.*`` sysctl ``key`` in namespace ``netns``; None if it does not exist."""
    path = "/proc/sys/" + key.replace(".", "/")

    def read() -> str | None:
        try:
            with open(path) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    try:
        return in_netns(netns, read)
    except OSError as e:
        raise DriverError(f"cannot read {key}: {e.strerror}") from e


def ifnames(netns: str | None) -> list[str]:
    """Names of the interfaces in namespace ``netns``, without netlink (``if_nameindex``):
    cheap questions must not pay for importing pyroute2."""
    try:
        return in_netns(netns, lambda: [name for _, name in socket.if_nameindex()])
    except OSError as e:
        raise DriverError(f"cannot list interfaces: {e.strerror}") from e


# -- errors -----------------------------------------------------------------------------------

def translate(what: str, code: int | None, message: str
              ) -> DriverError | Conflict | NotFound | DriverUnavailable:
    """The sysmgr error for a netlink (or socket) failure with errno ``code``."""
    text = f"{what}: {message}" if message else what
    if code == errno.EEXIST:
        return Conflict(text)
    if code in (errno.ENODEV, errno.ENOENT, errno.ESRCH):
        return NotFound(text)
    if code == errno.EPERM:
        return DriverError(text, hint="network changes need root (CAP_NET_ADMIN)")
    if code in (errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT):
        return DriverUnavailable(text, hint="the kernel lacks it (a module not loaded: veth, "
                                            "bridge, nf_tables?)")
    return DriverError(text)


# -- pyroute2: routing tables -------------------------------------------------------------------

def _pyroute2() -> tuple[Any, type[Exception]]:
    try:
        from pyroute2 import IPRoute  # type: ignore[import-untyped]
        from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]
    except ImportError as e:
        raise DriverUnavailable("the bridge network driver needs the pyroute2 library",
                                hint="pip install pyroute2") from e
    return IPRoute, NetlinkError


class Routes:
    """What sysmgr reads from the routing tables of one namespace (through pyroute2: route
    dumps with multipath hops and policy tables are its strength, and only network creation
    and repair ask; the nic path speaks netlink itself, :mod:`._rtnl`)."""

    def __init__(self, ipr: Any, netlink_error: type[Exception], netns: str | None) -> None:
        self._ipr = ipr
        self._error = netlink_error
        self.netns = netns

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except self._error as e:
            code = getattr(e, "code", None)
            raise translate(what, code, os.strerror(code) if code else str(e)) from e
        except OSError as e:
            raise translate(what, e.errno, e.strerror or str(e)) from e

    def used_networks(self) -> list[str]:
        """Networks of every IPv4 address, plus every non-default unicast IPv4 route of any
        routing table (policy-routing tables included)."""
        found: set[str] = set()
        for m in self._call("cannot list addresses", self._ipr.get_addr, family=socket.AF_INET):
            iface = ipaddress.IPv4Interface(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}")
            found.add(str(iface.network))
        for r in self._call("cannot list routes", self._ipr.get_routes, family=socket.AF_INET):
            dst = r.get_attr("RTA_DST")
            # unicast only: the local table's per-address and broadcast entries add nothing
            if dst and r["dst_len"] > 0 and r["type"] == RTN_UNICAST:
                found.add(str(ipaddress.IPv4Network(f"{dst}/{r['dst_len']}", strict=False)))
        return sorted(found, key=ipaddress.IPv4Network)

    def default_route_ifnames(self) -> list[str]:
        """Interfaces the IPv4 default routes of the main table leave through (the uplinks)."""
        links = self._call("cannot list interfaces", self._ipr.get_links)
        by_index = {m["index"]: m.get_attr("IFLA_IFNAME") for m in links}
        out: set[str] = set()
        for r in self._call("cannot list routes", self._ipr.get_routes, family=socket.AF_INET,
                            table=RT_TABLE_MAIN):
            if r["dst_len"] != 0:
                continue
            oifs = [r.get_attr("RTA_OIF")]
            multipath = r.get_attr("RTA_MULTIPATH") or []
            oifs += [hop.get("oif") for hop in multipath]
            out.update(by_index[i] for i in oifs if i in by_index)
        return sorted(out)


def _socket_in(netns: str) -> socket.socket:
    def create() -> socket.socket:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                             NETLINK_ROUTE)

    try:
        return in_netns(netns, create)
    except OSError as e:
        raise DriverError(f"cannot open a netlink socket in {netns}: {e.strerror}") from e


@contextlib.contextmanager
def routes(netns: str | None = None) -> Iterator[Routes]:
    """A :class:`Routes` on the namespace at path ``netns`` (None: the caller's own).

    The socket is closed when the block exits.
    """
    ipr_class, netlink_error = _pyroute2()
    fd = _socket_in(netns).detach() if netns is not None else None
    try:
        # from here on IPRoute owns fd (closing it ourselves on failure could close a reused
        # descriptor number: a leaked fd in a failed constructor is the lesser evil)
        ipr = ipr_class(fileno=fd) if fd is not None else ipr_class()
    except netlink_error as e:
        raise DriverError(f"cannot open a netlink socket: {e}") from e
    except OSError as e:
        raise DriverError(f"cannot open a netlink socket: {e.strerror or e}") from e
    with ipr:
        yield Routes(ipr, netlink_error, netns)
