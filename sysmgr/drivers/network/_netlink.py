"""Every pyroute2 call of sysmgr, and the one place where netlink errors become sysmgr errors.

The bridge driver talks to the kernel through :func:`session`, a context manager yielding a
:class:`Netlink` bound to one network namespace; each call translates ``NetlinkError`` (and
``OSError``) into :class:`~sysmgr.errors.DriverError` subclasses with the errno's meaning.
pyroute2 is imported lazily, on the first session, so importing sysmgr (the CLI) never loads
it; a missing pyroute2 is :class:`~sysmgr.errors.DriverUnavailable`.

**Namespaces without a fork.** ``IPRoute(netns=...)`` forks a helper process to create its
socket (about 7 ms). A netlink socket belongs to the network namespace of the thread that
created it, and ``setns(CLONE_NEWNET)`` changes only the calling thread, so
:func:`in_netns` runs a function in a short-lived thread that joined the namespace
(about 1 ms); :func:`session` creates its socket there and hands it to ``IPRoute(fileno=)``.
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
from dataclasses import dataclass
from typing import Any, TypeVar

from sysmgr._util import linux
from sysmgr.errors import Conflict, DriverError, DriverUnavailable, NotFound

T = TypeVar("T")

IFF_UP = 0x1
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


# -- pyroute2 ---------------------------------------------------------------------------------

def _pyroute2() -> tuple[Any, type[Exception]]:
    try:
        from pyroute2 import IPRoute  # type: ignore[import-untyped]
        from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]
    except ImportError as e:
        raise DriverUnavailable("the bridge network driver needs the pyroute2 library",
                                hint="pip install pyroute2") from e
    return IPRoute, NetlinkError


def _translate(what: str, code: int | None, message: str) -> DriverError | Conflict | NotFound:
    text = f"{what}: {message}" if message else what
    if code == errno.EEXIST:
        return Conflict(text)
    if code in (errno.ENODEV, errno.ENOENT, errno.ESRCH):
        return NotFound(text)
    if code == errno.EPERM:
        return DriverError(text, hint="network changes need root (CAP_NET_ADMIN)")
    return DriverError(text)


@dataclass(frozen=True)
class Link:
    """The facts sysmgr uses about one network interface."""

    index: int
    ifname: str
    kind: str | None          # "bridge", "veth", ... (None: a physical device)
    master: int | None        # index of the bridge it is plugged into
    mtu: int
    up: bool                  # administratively up (IFF_UP)
    mac: str | None
    alias: str | None         # IFLA_IFALIAS: sysmgr's ownership marker


class Netlink:
    """rtnetlink operations on one namespace; every method translates netlink errors."""

    def __init__(self, ipr: Any, netlink_error: type[Exception], netns: str | None) -> None:
        self._ipr = ipr
        self._error = netlink_error
        self.netns = netns

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except self._error as e:
            code = getattr(e, "code", None)
            raise _translate(what, code, os.strerror(code) if code else str(e)) from e
        except OSError as e:
            raise _translate(what, e.errno, e.strerror or str(e)) from e

    # -- links -------------------------------------------------------------------------------
    @staticmethod
    def _to_link(msg: Any) -> Link:
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        return Link(
            index=msg["index"], ifname=msg.get_attr("IFLA_IFNAME"), kind=kind,
            master=msg.get_attr("IFLA_MASTER") or None, mtu=msg.get_attr("IFLA_MTU") or 0,
            up=bool(msg["flags"] & IFF_UP), mac=msg.get_attr("IFLA_ADDRESS"),
            alias=msg.get_attr("IFLA_IFALIAS") or None,
        )

    def link(self, ifname: str) -> Link | None:
        """The interface named ``ifname``, or None."""
        try:
            msgs = self._call(f"cannot look up interface {ifname}", self._ipr.link, "get",
                              ifname=ifname)
        except NotFound:
            return None
        return self._to_link(msgs[0])

    def require(self, ifname: str) -> Link:
        found = self.link(ifname)
        if found is None:
            raise NotFound(f"interface {ifname} does not exist")
        return found

    def links(self) -> list[Link]:
        return [self._to_link(m) for m in self._call("cannot list interfaces", self._ipr.get_links)]

    def ports(self, bridge: Link) -> list[str]:
        """Names of the interfaces plugged into ``bridge``."""
        return sorted(lk.ifname for lk in self.links() if lk.master == bridge.index)

    def add_bridge(self, ifname: str, *, mac: str, mtu: int | None) -> Link:
        attrs: dict[str, Any] = {"ifname": ifname, "kind": "bridge", "address": mac}
        if mtu:
            attrs["mtu"] = mtu
        self._call(f"cannot create bridge {ifname}", self._ipr.link, "add", **attrs)
        return self.require(ifname)

    def add_veth(self, ifname: str, *, peer: str, peer_pid: int, peer_mac: str,
                 mtu: int | None) -> Link:
        """Create a veth pair whose peer is born inside the netns of ``peer_pid``, already
        named ``peer`` with ``peer_mac`` (no temporary name, no move, no rename)."""
        peer_attrs: dict[str, Any] = {"ifname": peer, "net_ns_pid": peer_pid, "address": peer_mac}
        attrs: dict[str, Any] = {"ifname": ifname, "kind": "veth", "peer": peer_attrs}
        if mtu:
            attrs["mtu"] = mtu
            peer_attrs["mtu"] = mtu
        self._call(f"cannot create veth pair {ifname}/{peer}", self._ipr.link, "add", **attrs)
        return self.require(ifname)

    def set_link(self, link: Link, **attrs: Any) -> None:
        """Change ``link``: ``state="up"``, ``mtu=``, ``master=`` (index), ``ifalias=``."""
        self._call(f"cannot change interface {link.ifname}", self._ipr.link, "set",
                   index=link.index, **attrs)

    def delete_link(self, ifname: str) -> bool:
        """Delete ``ifname``; False when it did not exist."""
        link = self.link(ifname)
        if link is None:
            return False
        try:
            self._call(f"cannot delete interface {ifname}", self._ipr.link, "del",
                       index=link.index)
        except NotFound:
            return False  # went away meanwhile (its netns died): the goal is reached
        return True

    # -- addresses and routes ----------------------------------------------------------------
    def ipv4_addresses(self, link: Link) -> list[str]:
        """IPv4 addresses on ``link`` in CIDR notation."""
        msgs = self._call(f"cannot list addresses of {link.ifname}", self._ipr.get_addr,
                          family=socket.AF_INET, index=link.index)
        return [f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}" for m in msgs]

    def add_ipv4(self, link: Link, cidr: str) -> None:
        iface = ipaddress.IPv4Interface(cidr)
        self._call(f"cannot add address {cidr} to {link.ifname}", self._ipr.addr, "add",
                   index=link.index, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                   broadcast=str(iface.network.broadcast_address))

    def del_ipv4(self, link: Link, cidr: str) -> None:
        iface = ipaddress.IPv4Interface(cidr)
        self._call(f"cannot remove address {cidr} from {link.ifname}", self._ipr.addr, "del",
                   index=link.index, address=str(iface.ip), prefixlen=iface.network.prefixlen)

    def set_default_route(self, gateway: str) -> None:
        self._call(f"cannot set the default route via {gateway}", self._ipr.route, "replace",
                   dst="0.0.0.0/0", gateway=gateway)

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
        by_index = {lk.index: lk.ifname for lk in self.links()}
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
def session(netns: str | None = None) -> Iterator[Netlink]:
    """A :class:`Netlink` on the namespace at path ``netns`` (None: the caller's own).

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
        yield Netlink(ipr, netlink_error, netns)
