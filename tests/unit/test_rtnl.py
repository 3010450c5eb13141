"""sysmgr's netlink encoder (:mod:`sysmgr.drivers.network._rtnl`) against pyroute2's.

Every request the nic path sends is built twice, by the encoder and by pyroute2's message
classes from the same fields, and the bytes must be equal; answers pyroute2 encodes (as the
kernel would send them) must parse to the same facts. No kernel here: the real kernel's
results of both are compared in ``tests/integration/test_rtnl.py``.
"""

from __future__ import annotations

import errno
import struct

import pytest

from sysmgr.drivers.network import _rtnl

pyroute2 = pytest.importorskip("pyroute2")
from pyroute2.netlink.nfnetlink.nftsocket import nft_table_msg  # noqa: E402
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg  # noqa: E402
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg  # noqa: E402
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # noqa: E402

SEQ = 9
MAC = "02:00:00:00:00:01"


def ours(req: _rtnl.Request) -> bytes:
    kind, flags, payload = req
    return _rtnl.message(kind, flags | _rtnl.NLM_F_REQUEST, SEQ, payload)


def theirs(cls, req: _rtnl.Request, fields: dict, attrs: list) -> bytes:
    """pyroute2's encoding of a message with the request's type and flags."""
    m = cls()
    for k, v in fields.items():
        m[k] = v
    m["attrs"] = attrs
    m["header"] = {"type": req[0], "flags": req[1] | _rtnl.NLM_F_REQUEST,
                   "sequence_number": SEQ}
    m.encode()
    return bytes(m.data)


def test_veth_with_its_peer_born_in_another_namespace() -> None:
    req = _rtnl.new_veth_request("smv1a2b3c0", "eth0", 4321, MAC, 1400)
    peer = {"attrs": [("IFLA_IFNAME", "eth0"), ("IFLA_ADDRESS", MAC), ("IFLA_MTU", 1400),
                      ("IFLA_NET_NS_PID", 4321)]}
    info = {"attrs": [("IFLA_INFO_KIND", "veth"),
                      ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]}
    assert ours(req) == theirs(ifinfmsg, req, {"index": 0},
                               [("IFLA_IFNAME", "smv1a2b3c0"), ("IFLA_MTU", 1400),
                                ("IFLA_LINKINFO", info)])
    assert req[1] == _rtnl.NLM_F_CREATE | _rtnl.NLM_F_EXCL  # never takes over a link


def test_veth_without_an_mtu_leaves_it_to_the_kernel() -> None:
    req = _rtnl.new_veth_request("smv1a2b3c0", "eth0", 4321, MAC, None)
    m = ifinfmsg(ours(req))
    m.decode()
    peer = m.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert m.get_attr("IFLA_MTU") is None and peer.get_attr("IFLA_MTU") is None
    assert peer.get_attr("IFLA_ADDRESS") == MAC and peer.get_attr("IFLA_NET_NS_PID") == 4321


def test_bridge() -> None:
    req = _rtnl.new_bridge_request("smb1a2b3c0", MAC, 9000)
    info = {"attrs": [("IFLA_INFO_KIND", "bridge")]}
    assert ours(req) == theirs(ifinfmsg, req, {"index": 0},
                               [("IFLA_IFNAME", "smb1a2b3c0"), ("IFLA_ADDRESS", MAC),
                                ("IFLA_MTU", 9000), ("IFLA_LINKINFO", info)])


@pytest.mark.parametrize("kw, fields, attrs", [
    ({"up": True, "master": 3, "alias": "sysmgr:1a2b3c:nic:c1/eth0"},
     {"index": 7, "flags": 1, "change": 1},
     [("IFLA_MASTER", 3), ("IFLA_IFALIAS", "sysmgr:1a2b3c:nic:c1/eth0")]),
    ({"up": False}, {"index": 7, "flags": 0, "change": 1}, []),
    ({"mtu": 1280}, {"index": 7, "flags": 0, "change": 0}, [("IFLA_MTU", 1280)]),
])
def test_link_changes_touch_only_what_is_given(kw: dict, fields: dict, attrs: list) -> None:
    req = _rtnl.set_link_request(7, **kw)
    assert ours(req) == theirs(ifinfmsg, req, fields, attrs)


def test_lookups_and_delete() -> None:
    req = _rtnl.get_link_request("eth0")
    assert ours(req) == theirs(ifinfmsg, req, {"index": 0}, [("IFLA_IFNAME", "eth0")])
    req = _rtnl.del_link_request(12)
    assert ours(req) == theirs(ifinfmsg, req, {"index": 12}, [])
    assert _rtnl.dump_links_request()[1] == _rtnl.NLM_F_DUMP


@pytest.mark.parametrize("add", [True, False])
def test_ipv4_address(add: bool) -> None:
    req = _rtnl.ipv4_request(3, "10.12.34.5/24", add=add)
    attrs = [("IFA_LOCAL", "10.12.34.5"), ("IFA_ADDRESS", "10.12.34.5")]
    if add:
        attrs.append(("IFA_BROADCAST", "10.12.34.255"))
    assert req[0] == (_rtnl.RTM_NEWADDR if add else _rtnl.RTM_DELADDR)
    assert ours(req) == theirs(ifaddrmsg, req, {"family": 2, "prefixlen": 24, "index": 3}, attrs)


def test_default_route_replaces_the_main_tables() -> None:
    req = _rtnl.default_route_request("10.12.34.1")
    assert req[1] == _rtnl.NLM_F_CREATE | _rtnl.NLM_F_REPLACE
    assert ours(req) == theirs(rtmsg, req, {"family": 2, "table": 254, "proto": 4, "type": 1},
                               [("RTA_GATEWAY", "10.12.34.1")])


def test_nftables_table_lookup() -> None:
    req = _rtnl.get_table_request(_rtnl.NFPROTO_IPV4, "sysmgr_smb1a2b3c0")
    assert ours(req) == theirs(nft_table_msg, req, {"nfgen_family": 2},
                               [("NFTA_TABLE_NAME", "sysmgr_smb1a2b3c0")])


def test_a_link_answer_parses_to_what_pyroute2_encoded() -> None:
    m = ifinfmsg()
    m["index"], m["flags"], m["change"] = 5, 0x1003, 0
    m["attrs"] = [("IFLA_IFNAME", "smv1a2b3c7"), ("IFLA_MTU", 1400), ("IFLA_MASTER", 4),
                  ("IFLA_ADDRESS", "0a:1b:2c:3d:4e:5f"), ("IFLA_IFALIAS", "sysmgr:x"),
                  ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth")]})]
    m["header"] = {"type": _rtnl.RTM_NEWLINK}
    m.encode()
    link = _rtnl.parse_link(bytes(m.data)[16:])
    assert link == _rtnl.Link(index=5, ifname="smv1a2b3c7", kind="veth", master=4, mtu=1400,
                              up=True, mac="0a:1b:2c:3d:4e:5f", alias="sysmgr:x")
    m = ifinfmsg()
    m["index"], m["attrs"], m["header"] = 1, [("IFLA_IFNAME", "lo")], {"type": 16}
    m.encode()
    assert _rtnl.parse_link(bytes(m.data)[16:]) == _rtnl.Link(1, "lo", None, None, 0, False,
                                                              None, None)


def test_an_address_answer() -> None:
    m = ifaddrmsg()
    m["family"], m["prefixlen"], m["index"] = 2, 16, 9
    m["attrs"] = [("IFA_ADDRESS", "172.20.0.1"), ("IFA_LOCAL", "172.20.0.1")]
    m["header"] = {"type": _rtnl.RTM_NEWADDR}
    m.encode()
    assert _rtnl.parse_ipv4(bytes(m.data)[16:]) == (9, "172.20.0.1/16")


def test_errors_carry_the_kernels_reason() -> None:
    ack = struct.pack("=i", 0) + _rtnl.message(16, 5, 1, b"")
    assert _rtnl.parse_error(ack, _rtnl.NLM_F_CAPPED) == (0, None)
    # a capped error with an extended-ack message after the request's header
    err = (struct.pack("=i", -errno.EEXIST) + _rtnl.message(16, 5, 1, b"x" * 20)[:16]
           + _rtnl.attr_str(_rtnl.NLMSGERR_ATTR_MSG, "File exists here"))
    assert _rtnl.parse_error(err, _rtnl.NLM_F_CAPPED | _rtnl.NLM_F_ACK_TLVS) == \
        (errno.EEXIST, "File exists here")
    # not capped: the whole request is echoed first
    req = _rtnl.message(16, 5, 1, b"y" * 6)
    err = struct.pack("=i", -errno.ENODEV) + req + b"\0\0" \
        + _rtnl.attr_str(_rtnl.NLMSGERR_ATTR_MSG, "no device")
    assert _rtnl.parse_error(err, _rtnl.NLM_F_ACK_TLVS) == (errno.ENODEV, "no device")
    assert _rtnl.parse_error(struct.pack("=i", -errno.EPERM) + req, 0) == (errno.EPERM, None)


def test_attributes_are_padded_and_parsed_back() -> None:
    raw = _rtnl.attr_str(3, "abcde") + _rtnl.attr_u32(4, 1500) + _rtnl.attr(1, b"\x01\x02")
    assert len(raw) == 12 + 8 + 8
    assert _rtnl.parse_attrs(raw) == {3: b"abcde\0", 4: struct.pack("=I", 1500),
                                      1: b"\x01\x02"}
