"""The one completion engine: click's own completion over the CLI's command tree, plus live
names in the right argument positions.

Both front ends use it: the shells' protocol (``sysmgr completion bash|zsh|fish`` prints a
script that calls ``sysmgr`` with ``_SYSMGR_COMPLETE`` set, which click answers) and the admin
shell (:mod:`sysmgr.cli.shell`, which calls :func:`complete` per keystroke). Verbs, subverbs
and options come from the click tree itself; what a parameter names (a container, a profile,
a snapshot, a config key...) is decided here from the parameter as the tree declares it
(:func:`slot_of`: its command's noun, its name, its metavar), and the command loader
(:class:`sysmgr.cli.main.LazyGroup`) hands each command it loads while completing to
:func:`annotate`, which gives those parameters a completion callback. A normal run never
imports this module.

Live names come from a :class:`NameSource`: the shells' protocol reads them through the API
on each TAB; the admin shell installs a cached one (:func:`use_source`) refreshed in a
background thread, so typing never waits for the host.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Sequence

import click
from click.shell_completion import CompletionItem, ShellComplete

from sysmgr.cli import app as cliapp
from sysmgr.errors import SysmgrError

PROG = "sysmgr"
COMPLETE_VAR = "_SYSMGR_COMPLETE"


@dataclasses.dataclass(frozen=True)
class Slot:
    """What a parameter takes: a ``kind`` of live name (``container``, ``image``,
    ``profile``, ``network``, ``pool``, ``member``, ``volume``, ``snapshot`` of the container
    in the ``name`` parameter, ``device`` of the ``table`` (container or profile) in it,
    ``source`` (a container or ``c1/snap0``), ``path`` (``c1/`` then a path)), or config
    ``keys`` of a ``table``; ``assign``: as ``KEY=`` (``KEY=VALUE`` parameters)."""

    kind: str
    table: str = ""
    assign: bool = False


# -- which parameter takes what ------------------------------------------------------------

#: what ``name``/``names`` mean under each noun (the command's path without its leaf; the
#: top-level verbs have the noun "")
NOUN_OBJECT: dict[str, str] = {
    "": "container", "config": "container", "config device": "container",
    "snapshot": "container", "file": "container", "profile": "profile",
    "profile device": "profile", "network": "network", "storage": "pool",
    "storage volume": "volume", "cluster": "member", "cluster group": "member",
    "image": "image", "image alias": "image"}

#: which key table a noun's KEY and KEY=VALUE parameters draw on
NOUN_KEYS: dict[str, str] = {"": "container", "config": "container", "profile": "container",
                             "network": "network", "storage": "pool",
                             "storage volume": "volume"}

#: commands whose ``name`` is a new name, to be typed, not completed
NEW_NAME = frozenset({"launch", "create", "import", "profile create", "network create",
                      "storage create", "storage volume create", "cluster add",
                      "image alias create"})

#: parameters named for what they take, whatever the noun
BY_PARAM: dict[str, Slot] = {
    "container": Slot("container"), "old": Slot("container"), "image": Slot("image"),
    "ref": Slot("image"), "refs": Slot("image"), "pool": Slot("pool"),
    "profiles": Slot("profile"), "to": Slot("member"), "cluster_target": Slot("member"),
    "src": Slot("source"), "snapshot": Slot("snapshot"), "snap": Slot("snapshot"),
    "snaps": Slot("snapshot"), "targets": Slot("path"), "target": Slot("path"),
    "sources": Slot("path")}

#: metavars that say more than the parameter's name (``profile add CONTAINER PROFILE``)
BY_METAVAR: dict[str, Slot] = {"PROFILE": Slot("profile"), "PROFILES": Slot("profile"),
                               "POOL": Slot("pool"), "MEMBER": Slot("member")}


def slot_of(path: Sequence[str], param: click.Parameter) -> Slot | None:
    """What ``param`` of the command at ``path`` (``("snapshot", "restore")``) takes; None:
    nothing live (a new name, a free value, a local file)."""
    noun, leaf = " ".join(path[:-1]), " ".join(path)
    name, metavar = param.name or "", (param.metavar or "").rstrip(".")
    if name in ("name", "names", "source") and not (name == "name" and leaf in NEW_NAME):
        if metavar in BY_METAVAR:
            return BY_METAVAR[metavar]
        return Slot(NOUN_OBJECT[noun]) if noun in NOUN_OBJECT else None
    if name in ("key", "keys", "assignments", "config") and noun in NOUN_KEYS \
            and not (name == "config" and noun == "storage volume" and "KEY" not in metavar):
        return Slot("keys", NOUN_KEYS[noun], assign="=" in metavar)
    if name == "config" and "=" in metavar:  # launch/create/profile create -c KEY=VALUE
        return Slot("keys", "container", assign=True)
    if name in ("devname", "devnames") and noun in ("config device", "profile device"):
        new = leaf.endswith(" add")
        return None if new else Slot("device", NOUN_OBJECT[noun])
    if name == "snap" and leaf == "snapshot create":
        return None  # the new snapshot's name
    if name in ("target", "targets", "sources") and "NAME/PATH" not in metavar:
        return None  # the local side of file push/pull, profile copy's new name
    if name == "snapshot" and noun == "storage volume":
        return None  # a volume's snapshot: not a container's
    return BY_METAVAR.get(metavar) or BY_PARAM.get(name)


def annotate(cmd: click.Command, path: Sequence[str]) -> click.Command:
    """Give the parameters of ``cmd`` (at ``path``; every subcommand of a group) that take a
    live name or a config key their completion (once; the loader calls this only while
    completing)."""
    if isinstance(cmd, click.Group):
        for sub_name, sub in cmd.commands.items():
            annotate(sub, (*path, sub_name))
        return cmd
    for param in cmd.params:
        slot = slot_of(path, param)
        if slot is not None and not getattr(param, "sysmgr_slot", None):
            param.sysmgr_slot = slot  # type: ignore[attr-defined]
            # the instance's own shell_complete: click calls it for this parameter's values
            param.shell_complete = _completer(slot)  # type: ignore[method-assign]
    return cmd


def _completer(slot: Slot) -> Callable[[click.Context, str], list[CompletionItem]]:
    def shell_complete(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        return [CompletionItem(value, help=meta or None)
                for value, meta in candidates(ctx, slot, incomplete)]

    return shell_complete


# -- live names ----------------------------------------------------------------------------

class NameSource:
    """Live names of one root (or of one member of its cluster), read through the API on
    every call (the shells' protocol: one process per TAB)."""

    #: whether containers come with their state (``Running``; the admin shell's toolbar
    #: counts them), or by name alone (a TAB through the shells' protocol reads no status)
    detailed = False

    def __init__(self, root: str | None, member: str | None = None) -> None:
        self.root, self.member = root, member

    def names(self, kind: str, owner: str | None = None) -> list[tuple[str, str]]:
        """``(name, meta)`` pairs of ``kind`` (of ``owner``: the container of snapshots,
        the pool of volumes); none when the host cannot say (not initialised, a member
        offline): completion never fails a prompt."""
        try:
            kwargs = {"member": self.member} if self.member else {}
            with cliapp.make_client(self.root, **kwargs) as client:
                fetch = FETCH[kind] if self.detailed else QUICK.get(kind, FETCH[kind])
                return fetch(client, owner)
        except (SysmgrError, OSError):
            return []


def _containers(client: Any, _owner: str | None) -> list[tuple[str, str]]:
    return [(c.name, c.status + (f" on {c.location}" if c.location else ""))
            for c in client.containers.all()]


def _images(client: Any, _owner: str | None) -> list[tuple[str, str]]:
    out = []
    for image in client.images.all():
        out += [(a, f"image {image.fingerprint[:12]}") for a in image.aliases]
        out.append((image.fingerprint[:12], ", ".join(image.aliases) or "image"))
    return out


def _snapshots(client: Any, owner: str | None) -> list[tuple[str, str]]:
    if not owner:
        return []
    return [(s.name, "snapshot of " + owner) for s in client.containers.get(owner).snapshots.all()]


def _devices(client: Any, owner: str | None) -> list[tuple[str, str]]:
    """The devices of ``container/NAME`` (its expanded ones: a profile's can be overridden)
    or ``profile/NAME``."""
    kind, _, name = (owner or "").partition("/")
    if not name:
        return []
    if kind == "profile":
        devices = client.profiles.get(name).devices
    else:
        devices = client.containers.get(name).expanded_devices
    return [(dev, f"{conf.get('type', '')} device") for dev, conf in sorted(devices.items())]


def _members(client: Any, _owner: str | None) -> list[tuple[str, str]]:
    if not client.clustered:
        return []
    return [(m.name, m.url) for m in client.cluster.members.all()]


def _volumes(client: Any, owner: str | None) -> list[tuple[str, str]]:
    return [(v.name, f"volume on {v.pool}") for v in client.storage_volumes.all(owner or None)]


#: how each kind of name is read through the API
FETCH: dict[str, Callable[[Any, str | None], list[tuple[str, str]]]] = {
    "container": _containers,
    "image": _images,
    "profile": lambda c, _o: [(p.name, p.description) for p in c.profiles.all()],
    "network": lambda c, _o: [(n.name, f"{n.type} network") for n in c.networks.all()],
    "pool": lambda c, _o: [(p.name, f"{p.driver} pool") for p in c.storage_pools.all()],
    "member": _members,
    "snapshot": _snapshots,
    "device": _devices,
    "volume": _volumes,
}

#: what is read instead when no detail is wanted
QUICK: dict[str, Callable[[Any, str | None], list[tuple[str, str]]]] = {
    "container": lambda c, _o: [(n, "container") for n in c.containers.names()],
}

#: the source the admin shell installs (cached, refreshed in the background); None: read
#: through the API on each call
_installed: list[NameSource] = []


def use_source(source: NameSource | None) -> None:
    """Make ``source`` answer every live-name completion in this process (None: back to
    reading through the API each time)."""
    _installed[:] = [source] if source is not None else []


def source_for(ctx: click.Context) -> NameSource:
    """The installed source, else one reading the root the command line names."""
    if _installed:
        return _installed[0]
    return NameSource(ctx.find_root().params.get("root"))


# -- candidates ----------------------------------------------------------------------------

def candidates(ctx: click.Context, slot: Slot, incomplete: str) -> list[tuple[str, str]]:
    """``(value, meta)`` pairs for ``slot`` that match ``incomplete`` (fuzzy), best first."""
    if slot.kind == "keys":
        return fuzzy(incomplete, key_items(slot.table, slot.assign))
    if slot.assign or "=" in incomplete:
        return []
    source = source_for(ctx)
    if slot.kind == "snapshot":
        owner = ctx.params.get("name") or ctx.params.get("src")
        return fuzzy(incomplete, source.names("snapshot", owner)) if owner else []
    if slot.kind == "device":
        owner = ctx.params.get("name")
        return fuzzy(incomplete, source.names("device", f"{slot.table}/{owner}")) if owner else []
    if slot.kind == "volume":
        return fuzzy(incomplete, source.names("volume", ctx.params.get("pool")))
    if slot.kind in ("source", "path") and "/" in incomplete:
        owner = incomplete.split("/", 1)[0]
        if slot.kind == "path":
            return []  # a path inside the container: typed
        return fuzzy(incomplete, [(f"{owner}/{s}", meta)
                                  for s, meta in source.names("snapshot", owner)])
    names = source.names("container" if slot.kind in ("source", "path") else slot.kind)
    if slot.kind == "path":
        names = [(f"{n}/", meta) for n, meta in names]
    return fuzzy(incomplete, names)


def key_items(table: str, assign: bool) -> list[tuple[str, str]]:
    """The config keys of ``table`` with their docs (``KEY=`` when ``assign``); a pattern key
    (``user.*``) as its prefix; server-set and unsupported ones left out."""
    if table == "container":
        from sysmgr.model.keys import describe_keys

        rows = [(k, doc) for k, doc, _live in describe_keys()]
    elif table == "volume":
        from sysmgr.model.volume_keys import describe_volume_keys

        rows = [(k, doc) for k, doc, _live in describe_volume_keys()]
    else:
        from sysmgr.model.network_keys import describe_network_keys
        from sysmgr.model.pool_keys import describe_pool_keys

        triples = describe_pool_keys() if table == "pool" else describe_network_keys()
        rows = list({k: doc for _t, k, doc in triples}.items())
    out = []
    for key, doc in rows:
        if key.startswith(("volatile.", "image.", "raw.*")):
            continue
        out.append((key[:-1], doc) if key.endswith(".*") else
                   (key + "=" if assign else key, doc))
    return out


def fuzzy(incomplete: str, items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The items whose value matches ``incomplete``: prefixes first, then substrings, then
    initials of the dotted words (``lm`` finds ``limits.memory``), then subsequences (``wb1``
    finds ``web1``), tighter matches before looser; case-blind."""
    want = incomplete.lower()
    ranked = []
    for order, (value, meta) in enumerate(dict(items).items()):
        rank = match_rank(want, value.lower())
        if rank is not None:
            ranked.append((rank, order, value, meta))
    ranked.sort()
    return [(value, meta) for _r, _o, value, meta in ranked]


def match_rank(want: str, have: str) -> tuple[int, int] | None:
    """How well ``have`` matches ``want`` (lower is better), or None."""
    if have.startswith(want):
        return (0, len(have))
    at = have.find(want)
    if at >= 0:
        return (1, at)
    if want[:1] == have[:1] and _initials(want, have):
        return (2, len(have))
    pos, spread, start = 0, 0, -1
    for ch in want:
        found = have.find(ch, pos)
        if found < 0:
            return None
        start = found if start < 0 else start
        spread += found - pos
        pos = found + 1
    return (3, spread)


_WORD_START = re.compile(r"(?:^|(?<=[.\-_/]))\w")


def _initials(want: str, have: str) -> bool:
    """Whether ``want`` is a run of the starts of ``have``'s words, in order (each letter
    may also begin a run inside one word: ``lmem`` -> limits.memory)."""
    starts = [m.start() for m in _WORD_START.finditer(have)]
    pos = 0
    for i, ch in enumerate(want):
        if pos < len(have) and have[pos] == ch and i:
            pos += 1  # the word goes on
            continue
        nxt = [s for s in starts if s >= pos and have[s] == ch]
        if not nxt:
            return False
        pos = nxt[0] + 1
    return True


# -- the engine ----------------------------------------------------------------------------

def complete(cli: click.Command, args: Sequence[str], incomplete: str
             ) -> list[tuple[str, str]]:
    """Completions of ``incomplete`` after ``args`` (a command line without ``sysmgr``), as
    ``(value, meta)`` pairs, best first: click's resolution of the command tree (verbs,
    options, choices) and the live names of the parameter in that position."""
    comp = ShellComplete(cli, {}, PROG, COMPLETE_VAR)
    try:
        items = comp.get_completions(list(args), incomplete)
    except (click.ClickException, SysmgrError, OSError):
        return []
    out = [(str(i.value), i.help or "") for i in items]
    if incomplete and not incomplete.startswith("-"):
        # click matches verbs and choices by prefix: the other fuzzy matches too
        more = comp.get_completions(list(args), "")
        out = fuzzy(incomplete, [*out, *((str(i.value), i.help or "") for i in more)])
    return out
