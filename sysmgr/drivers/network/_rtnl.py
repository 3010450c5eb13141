"""Netlink without pyroute2: the requests a nic start sends and the answers it reads.

Importing pyroute2 costs about 90 ms even for its lowest socket module (it brings asyncio, 28
ms, and hundreds of message classes): more than a whole ``sysmgr start`` may take. This module
speaks the wire format itself (``struct`` over an ``AF_NETLINK`` socket) for the few requests
the nic path needs, each one datagram and one answer (tens of microseconds):

- links: look one up by name, list them, create a bridge, create a veth pair whose peer is
  born in another namespace (by pid) with its name and MAC, change master/up/MTU/alias,
  delete;
- IPv4 addresses: list, add, delete; the IPv4 default route (replace);
- nftables: whether a table exists (one ``NFT_MSG_GETTABLE``, instead of running ``nft``).

Requests are built by pure functions (``*_request``: kernel message type, flags, payload),
answers parsed by pure functions (:func:`parse_link`, :func:`parse_attrs`), so both are tested
byte for byte against pyroute2's own encoder and parser (``tests/unit/test_rtnl.py``); the
kernel's results of both are compared in ``tests/integration/test_rtnl.py``. pyroute2 stays for
reading routing tables (:mod:`._netlink`).

Every socket is opened inside its namespace (:func:`._netlink.in_netns`) and closed by its
``with`` block; the kernel's errors (with its extended-ack message when it gives one) become
:class:`~sysmgr.errors.DriverError` subclasses (:func:`._netlink.translate`).

Layer: drivers (network), private to :mod:`sysmgr.drivers.network`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from sysmgr.drivers.network import _netlink
from sysmgr.errors import DriverError, NotFound

# -- constants (linux/netlink.h, rtnetlink.h, if_link.h, if_addr.h, veth.h, nf_tables.h) ------

NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200          # on an NLMSG_ERROR
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED, NLA_TYPE_MASK = 0x8000, 0x3FFF
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE = 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_NET_NS_PID, IFLA_IFALIAS, IFLA_STATS64 = 18, 19, 20, 23
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
RTA_GATEWAY = 5
IFF_UP = 0x1
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE, NFTA_TABLE_NAME = 10, 1, 1
NFPROTO_IPV4 = 2
_RECV_BUFSIZE = 1 << 16       # the kernel fills dump datagrams up to 32 KiB

_NLMSGHDR = struct.Struct("=IHHII")      # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")    # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")     # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")     # family, dst_len, src_len, tos, table, proto, scope, type, flags
_NFGENMSG = struct.Struct("=BBH")        # family, version, res_id (0: byte order moot)
_RTATTR = struct.Struct("=HH")           # len, type
_U32 = struct.Struct("=I")
# struct rtnl_link_stats64's first eight counters: rx/tx packets, bytes, errors, dropped
_STATS64 = struct.Struct("=8Q")
STATS_FIELDS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors",
                "rx_dropped", "tx_dropped")

#: a request: (message type, flags beyond NLM_F_REQUEST, payload)
Request = tuple[int, int, bytes]


# -- the wire format (pure) -------------------------------------------------------------------

def _pad(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute (``struct rtattr`` + payload, padded to 4 bytes)."""
    return _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload \
        + b"\0" * (_pad(len(payload)) - len(payload))


def attr_str(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def nested(kind: int, *attrs: bytes) -> bytes:
    """Attributes inside an attribute; without NLA_F_NESTED, as pyroute2 sends them (the
    kernel takes both for these legacy attributes)."""
    return attr(kind, b"".join(attrs))


def message(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    """A whole netlink message (``struct nlmsghdr`` + payload); port id 0: the kernel's."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), kind, flags, seq, 0) + payload


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """Attributes from ``offset`` on, by type (flags such as NLA_F_NESTED masked off)."""
    out: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        out[kind & NLA_TYPE_MASK] = data[offset + _RTATTR.size:offset + length]
        offset += _pad(length)
    return out


def _str(raw: bytes | None) -> str | None:
    return raw.split(b"\0", 1)[0].decode() if raw is not None else None


def _u32(raw: bytes | None) -> int | None:
    return _U32.unpack_from(raw)[0] if raw is not None and len(raw) >= 4 else None


def ifinfomsg(index: int = 0, *, up: bool | None = None) -> bytes:
    flags = IFF_UP if up else 0
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, IFF_UP if up is not None else 0)


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


# -- requests (pure) --------------------------------------------------------------------------

def get_link_request(ifname: str) -> Request:
    return RTM_GETLINK, 0, ifinfomsg() + attr_str(IFLA_IFNAME, ifname)


def dump_links_request() -> Request:
    return RTM_GETLINK, NLM_F_DUMP, ifinfomsg()


def new_bridge_request(ifname: str, mac: str, mtu: int | None) -> Request:
    attrs = [attr_str(IFLA_IFNAME, ifname), attr(IFLA_ADDRESS, _mac_bytes(mac))]
    if mtu:
        attrs.append(attr_u32(IFLA_MTU, mtu))
    attrs.append(nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "bridge")))
    return RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, ifinfomsg() + b"".join(attrs)


def new_veth_request(ifname: str, peer: str, peer_pid: int, peer_mac: str,
                     mtu: int | None) -> Request:
    """A veth pair ``ifname`` here, ``peer`` born in the netns of ``peer_pid`` with its MAC
    (and both with ``mtu``): no temporary name, no move, no rename."""
    mtu_attr = attr_u32(IFLA_MTU, mtu) if mtu else b""
    peer_msg = (ifinfomsg() + attr_str(IFLA_IFNAME, peer) + attr(IFLA_ADDRESS, _mac_bytes(peer_mac))
                + mtu_attr + attr_u32(IFLA_NET_NS_PID, peer_pid))
    info = nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "veth"),
                  nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_msg)))
    return (RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
            ifinfomsg() + attr_str(IFLA_IFNAME, ifname) + mtu_attr + info)


def set_link_request(index: int, *, up: bool | None = None, mtu: int | None = None,
                     master: int | None = None, alias: str | None = None) -> Request:
    attrs = b""
    if mtu is not None:
        attrs += attr_u32(IFLA_MTU, mtu)
    if master is not None:
        attrs += attr_u32(IFLA_MASTER, master)
    if alias is not None:
        attrs += attr_str(IFLA_IFALIAS, alias)
    return RTM_SETLINK, 0, ifinfomsg(index, up=up) + attrs


def del_link_request(index: int) -> Request:
    return RTM_DELLINK, 0, ifinfomsg(index)


def dump_ipv4_request() -> Request:
    return RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)


def ipv4_request(index: int, cidr: str, *, add: bool) -> Request:
    """Add (with its subnet's broadcast address) or delete IPv4 address ``cidr``."""
    iface = ipaddress.IPv4Interface(cidr)
    body = (_IFADDRMSG.pack(socket.AF_INET, iface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
            + attr(IFA_LOCAL, iface.ip.packed) + attr(IFA_ADDRESS, iface.ip.packed))
    if not add:
        return RTM_DELADDR, 0, body
    body += attr(IFA_BROADCAST, iface.network.broadcast_address.packed)
    return RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body


def default_route_request(gateway: str) -> Request:
    """Replace the IPv4 default route of the main table (as pyroute2's: proto static)."""
    body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC,
                       RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    body += attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed)
    return RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body


def get_table_request(family: int, table: str) -> Request:
    return ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, 0,
            _NFGENMSG.pack(family, 0, 0) + attr_str(NFTA_TABLE_NAME, table))


# -- answers (pure) ---------------------------------------------------------------------------

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


def parse_link(payload: bytes) -> Link:
    """A :class:`Link` from an ``RTM_NEWLINK`` answer's payload."""
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    a = parse_attrs(payload, _IFINFOMSG.size)
    info = parse_attrs(a[IFLA_LINKINFO]) if IFLA_LINKINFO in a else {}
    mac = a.get(IFLA_ADDRESS)
    return Link(index=index, ifname=_str(a.get(IFLA_IFNAME)) or "",
                kind=_str(info.get(IFLA_INFO_KIND)) or None,
                master=_u32(a.get(IFLA_MASTER)) or None, mtu=_u32(a.get(IFLA_MTU)) or 0,
                up=bool(flags & IFF_UP), mac=":".join(f"{b:02x}" for b in mac) if mac else None,
                alias=_str(a.get(IFLA_IFALIAS)) or None)


def parse_stats(payload: bytes) -> tuple[str, dict[str, int]] | None:
    """(name, traffic counters) of an ``RTM_NEWLINK`` answer (None without IFLA_STATS64)."""
    a = parse_attrs(payload, _IFINFOMSG.size)
    raw = a.get(IFLA_STATS64)
    if raw is None or len(raw) < _STATS64.size:
        return None
    return _str(a.get(IFLA_IFNAME)) or "", dict(zip(STATS_FIELDS, _STATS64.unpack_from(raw)))


def parse_ipv4(payload: bytes) -> tuple[int, str] | None:
    """(interface index, CIDR) of an ``RTM_NEWADDR`` answer; None for another family."""
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(payload)
    address = parse_attrs(payload, _IFADDRMSG.size).get(IFA_ADDRESS)
    if family != socket.AF_INET or address is None or len(address) != 4:
        return None
    return index, f"{ipaddress.IPv4Address(address)}/{prefixlen}"


def parse_error(payload: bytes, flags: int) -> tuple[int, str | None]:
    """(errno, the kernel's extended-ack message) of an ``NLMSG_ERROR``; errno 0 is an ack."""
    code = -struct.unpack_from("=i", payload)[0]
    if not code or not flags & NLM_F_ACK_TLVS:
        return code, None
    # the request's header follows the error code, with its payload unless capped
    orig_len = _NLMSGHDR.unpack_from(payload, 4)[0]
    tlvs = 4 + (_NLMSGHDR.size if flags & NLM_F_CAPPED else _pad(orig_len))
    return code, _str(parse_attrs(payload, tlvs).get(NLMSGERR_ATTR_MSG))


# -- the socket -------------------------------------------------------------------------------

class Socket:
    """A netlink socket of one protocol in one namespace: requests and their answers."""

    def __init__(self, netns: str | None, protocol: int = NETLINK_ROUTE) -> None:
        def create() -> socket.socket:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 protocol)

        try:
            self.sock = _netlink.in_netns(netns, create)
        except OSError as e:
            raise _netlink.translate(f"cannot open a netlink socket in {netns or 'this namespace'}",
                                     e.errno, e.strerror or str(e)) from e
        self.netns = netns
        self.seq = 0
        with contextlib.suppress(OSError):  # short acks with the kernel's reason (4.12+)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def request(self, what: str, req: Request) -> list[bytes]:
        """Send ``req`` and return the payloads of its answers: the messages of a dump (up to
        ``NLMSG_DONE``), or those before the kernel's ack. ``what`` starts every error."""
        kind, flags, payload = req
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        self.seq += 1
        flags |= NLM_F_REQUEST | (0 if dump else NLM_F_ACK)
        try:
            self.sock.send(message(kind, flags, self.seq, payload))
            return self._answers(what, self.seq)
        except OSError as e:
            raise _netlink.translate(what, e.errno, e.strerror or str(e)) from e

    def _answers(self, what: str, seq: int) -> list[bytes]:
        out: list[bytes] = []
        while True:
            data, _, mflags, _ = self.sock.recvmsg(_RECV_BUFSIZE)
            if mflags & socket.MSG_TRUNC:
                raise DriverError(f"{what}: a netlink answer did not fit {_RECV_BUFSIZE} bytes")
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, flags, mseq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    raise DriverError(f"{what}: malformed netlink answer")
                payload = data[offset + _NLMSGHDR.size:offset + length]
                offset += _pad(length)
                if mseq != seq:
                    continue  # a late answer to an earlier request of this socket
                if kind in (NLMSG_ERROR, NLMSG_DONE):
                    code, text = parse_error(payload, flags) if len(payload) >= 4 else (0, None)
                    if code:
                        raise _netlink.translate(what, code, text or os.strerror(code))
                    return out
                out.append(payload)


class Rtnl:
    """rtnetlink requests on one namespace (see the module docstring)."""

    def __init__(self, sock: Socket) -> None:
        self._sock = sock
        self.netns = sock.netns

    def _do(self, what: str, req: Request) -> list[bytes]:
        return self._sock.request(what, req)

    # -- links -------------------------------------------------------------------------------
    def link(self, ifname: str) -> Link | None:
        """The interface named ``ifname``, or None."""
        try:
            answers = self._do(f"cannot look up interface {ifname}", get_link_request(ifname))
        except NotFound:
            return None
        return parse_link(answers[0]) if answers else None

    def require(self, ifname: str) -> Link:
        found = self.link(ifname)
        if found is None:
            raise NotFound(f"interface {ifname} does not exist")
        return found

    def links(self) -> list[Link]:
        return [parse_link(p) for p in self._do("cannot list interfaces", dump_links_request())]

    def stats(self) -> dict[str, dict[str, int]]:
        """Every interface's traffic counters by name (one dump)."""
        found = (parse_stats(p) for p in self._do("cannot list interfaces", dump_links_request()))
        return dict(s for s in found if s is not None)

    def ports(self, bridge: Link) -> list[str]:
        """Names of the interfaces plugged into ``bridge``."""
        return sorted(lk.ifname for lk in self.links() if lk.master == bridge.index)

    def add_bridge(self, ifname: str, *, mac: str, mtu: int | None) -> Link:
        self._do(f"cannot create bridge {ifname}", new_bridge_request(ifname, mac, mtu))
        return self.require(ifname)

    def add_veth(self, ifname: str, *, peer: str, peer_pid: int, peer_mac: str,
                 mtu: int | None) -> Link:
        """See :func:`new_veth_request`; the host end as created."""
        self._do(f"cannot create veth pair {ifname}/{peer}",
                 new_veth_request(ifname, peer, peer_pid, peer_mac, mtu))
        return self.require(ifname)

    def set_link(self, link: Link, *, up: bool | None = None, mtu: int | None = None,
                 master: int | None = None, alias: str | None = None) -> None:
        """Change what is given of ``link``: up/down, MTU, master (a bridge's index), alias."""
        self._do(f"cannot change interface {link.ifname}",
                 set_link_request(link.index, up=up, mtu=mtu, master=master, alias=alias))

    def delete_link(self, ifname: str) -> bool:
        """Delete ``ifname``; False when it did not exist."""
        link = self.link(ifname)
        if link is None:
            return False
        try:
            self._do(f"cannot delete interface {ifname}", del_link_request(link.index))
        except NotFound:
            return False  # went away meanwhile (its netns died): the goal is reached
        return True

    # -- addresses and routes ----------------------------------------------------------------
    def ipv4_addresses(self, link: Link) -> list[str]:
        """IPv4 addresses on ``link`` in CIDR notation."""
        return [cidr for index, cidr in self.all_ipv4() if index == link.index]

    def all_ipv4(self) -> list[tuple[int, str]]:
        """(interface index, CIDR) of every IPv4 address of the namespace."""
        found = (parse_ipv4(p) for p in self._do("cannot list addresses", dump_ipv4_request()))
        return [f for f in found if f is not None]

    def add_ipv4(self, link: Link, cidr: str) -> None:
        self._do(f"cannot add address {cidr} to {link.ifname}",
                 ipv4_request(link.index, cidr, add=True))

    def del_ipv4(self, link: Link, cidr: str) -> None:
        self._do(f"cannot remove address {cidr} from {link.ifname}",
                 ipv4_request(link.index, cidr, add=False))

    def set_default_route(self, gateway: str) -> None:
        self._do(f"cannot set the default route via {gateway}", default_route_request(gateway))


@contextlib.contextmanager
def session(netns: str | None = None) -> Iterator[Rtnl]:
    """An :class:`Rtnl` on the namespace at path ``netns`` (None: the caller's own); the
    socket is closed when the block exits."""
    with Socket(netns) as sock:
        yield Rtnl(sock)


def nft_table_exists(netns: str | None, family: int, table: str) -> bool:
    """Whether nftables table ``table`` of ``family`` (``NFPROTO_*``) exists in ``netns``."""
    with Socket(netns, NETLINK_NETFILTER) as sock:
        try:
            sock.request(f"cannot look up nftables table {table}",
                         get_table_request(family, table))
        except NotFound:
            return False
    return True
