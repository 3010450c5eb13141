"""nftables rules of a managed network: pure rendering, applied with ``nft -f -``.

Each network has its own table, ``table ip sysmgr_<bridge>`` (:func:`base.nft_table_name`),
so a network's rules are replaced atomically without touching other networks, other roots or
other software's tables: the applied script is ``add table`` + ``delete table`` + the full
table definition, one ``nft`` transaction (nftables 1.0.6 has no ``destroy``; adding first
makes the delete succeed whether or not the table existed). Teardown is ``add`` + ``delete``.

The table holds:

- ``postrouting`` (nat, only when ``ipv4.nat`` is true): masquerade what the subnet sends
  outside the subnet, ``ip saddr SUBNET ip daddr != SUBNET masquerade``.
- ``forward`` (filter): accept what enters or leaves through the bridge. The chain's policy
  is ``accept``, so it never blocks anything of anyone else; the rules make the network's
  forwarding explicit and countable (``nft list table``) and are where per-network filtering
  would go.

Forwarding itself is a sysctl, not a rule; see :mod:`.bridge` for what is enabled where.

Layer: drivers (network). Subprocesses go through :func:`sysmgr._util.proc.run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sysmgr._util import proc
from sysmgr.drivers.network import _netlink, _rtnl
from sysmgr.drivers.network.base import NetworkSpec, network_alias, nft_table_name
from sysmgr.errors import CommandFailed, DriverError, DriverUnavailable

FAMILY = "ip"
_HINT = "apt-get install nftables"


@dataclass(frozen=True)
class NftRules:
    """The facts the ruleset is rendered from."""

    table: str
    bridge: str
    subnet: str          # "10.12.34.0/24"
    nat: bool
    comment: str

    @classmethod
    def for_network(cls, root_id: str, net: NetworkSpec) -> NftRules:
        return cls(table=nft_table_name(net.ifname), bridge=net.ifname, subnet=net.subnet,
                   nat=net.nat, comment=network_alias(root_id, net.name))


# -- rendering (pure) -------------------------------------------------------------------------

def _quote(s: str) -> str:
    if '"' in s or "\n" in s:
        raise ValueError(f"cannot quote {s!r} for nft")
    return f'"{s}"'


def render(rules: NftRules) -> str:
    """The table definition, in ``nft list table`` layout (tabs; ``}`` on its own line)."""
    lines = [f"table {FAMILY} {rules.table} {{", f"\tcomment {_quote(rules.comment)}"]
    if rules.nat:
        lines += [
            "\tchain postrouting {",
            "\t\ttype nat hook postrouting priority srcnat; policy accept;",
            f"\t\tip saddr {rules.subnet} ip daddr != {rules.subnet} masquerade",
            "\t}",
        ]
    lines += [
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        f"\t\tiifname {_quote(rules.bridge)} accept",
        f"\t\toifname {_quote(rules.bridge)} accept",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_apply(rules: NftRules) -> str:
    """One atomic transaction that replaces (or creates) the table."""
    return render_delete(rules.table) + render(rules)


def render_delete(table: str) -> str:
    """One transaction that removes the table whether or not it exists."""
    return f"add table {FAMILY} {table}\ndelete table {FAMILY} {table}\n"


# -- applying ---------------------------------------------------------------------------------

def _nft(netns: str | None, args: list[str], script: str | None = None) -> bytes:
    if proc.which("nft") is None:
        raise DriverUnavailable("nft (nftables) is not installed", hint=_HINT)
    argv = _netlink.netns_argv(netns, ["nft", *args])
    try:
        res = proc.run(argv, input=script.encode() if script is not None else None, timeout=30)
    except CommandFailed as e:
        raise DriverError(f"nft {' '.join(args)} failed: {e.stderr.strip() or e}") from e
    return res.stdout


def apply(rules: NftRules, netns: str | None = None) -> None:
    """Install or replace the network's table atomically."""
    _nft(netns, ["-f", "-"], render_apply(rules))


def delete(table: str, netns: str | None = None) -> None:
    """Remove the table; already gone is success."""
    _nft(netns, ["-f", "-"], render_delete(table))


def tables(netns: str | None = None) -> list[str]:
    """Names of the ``ip`` family tables in the namespace."""
    out = _nft(netns, ["-j", "list", "tables", FAMILY])
    try:
        doc = json.loads(out or b"{}")
    except ValueError as e:
        raise DriverError(f"cannot parse the output of nft -j list tables: {e}") from e
    return sorted(item["table"]["name"] for item in doc.get("nftables", [])
                  if "table" in item and item["table"].get("family") == FAMILY)


def exists(table: str, netns: str | None = None) -> bool:
    """Whether the table exists: one netlink request (every start asks; running ``nft``
    would cost a process)."""
    return _rtnl.nft_table_exists(netns, _rtnl.NFPROTO_IPV4, table)


def listing(table: str, netns: str | None = None) -> str | None:
    """``nft list table`` output of the table, or None when it does not exist."""
    if not exists(table, netns):
        return None
    return _nft(netns, ["list", "table", FAMILY, table]).decode()
