"""Cluster members as the model knows them: ``kind: Member`` documents, member URLs, member
names and groups, the member config-key table, and ``--target`` values (model layer, pure).

A member is reached either over SSH (``url: ssh://user@host[:port]``, or ``address:`` with an
``ssh: {user, port, key}`` map) or directly (``url: "local:"``: a root on the admin host
itself). Member config keys are LXD's: ``scheduler.instance`` (all | manual | group) decides
whether placement may choose the member; ``user.*`` is free-form; ``ssh.persist`` (seconds)
is how long the member's connection is kept for the next command.

    kind: Member
    name: node2
    address: 10.0.0.2
    ssh: {user: root, port: 22, key: /root/.ssh/id_ed25519}
    root: /var/lib/sysmgr
    groups: [web]
    config:
      scheduler.instance: all
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Mapping

from sysmgr.model.keyrules import (Key, Problem, accept, choice_key, int_key, key_table, same,
                                   size_key, validate_table)
from sysmgr.model.names import name_problem, object_name_problem
from sysmgr.model.objects import MemberDoc
from sysmgr.model.placement import SCHEDULERS
from sysmgr.types import MemberSpec

DEFAULT_ROOT = "/var/lib/sysmgr"
DEFAULT_SYSMGR = "sysmgr"
DEFAULT_USER = "root"
LOCAL_URL = "local:"

_SCHEDULER = choice_key(*SCHEDULERS, what="scheduler")
_PERSIST = int_key(minimum=0, what="number of seconds")
_COUNT = int_key(minimum=0, what="number of containers")
_SIZE = size_key()
#: how long a member's connection outlives the command that opened it, by default
DEFAULT_PERSIST = 60
MEMBER_KEYS: dict[str, Key] = key_table(
    Key("scheduler.instance", _SCHEDULER[0], _SCHEDULER[1], live=True, default="all",
        doc="Whether placement may choose this member: all (yes), manual (only when "
            "--target names it), group (only through --target @GROUP)."),
    Key("ssh.persist", _PERSIST[0], _PERSIST[1], live=True, default=str(DEFAULT_PERSIST),
        doc="Seconds the admin host keeps its SSH connection to the member (and the "
            "member's RPC server) open after a command, for the next command to reuse "
            "(OpenSSH's ControlPersist); 0 connects afresh for every command. The "
            "SYSMGR_SSH_PERSIST environment variable overrides it."),
    Key("limits.instances", _COUNT[0], _COUNT[1], live=True,
        doc="At most this many containers on the member (placement reserves a slot in the "
            "cluster store first, so concurrent launches never exceed it)."),
    Key("limits.memory", _SIZE[0], _SIZE[1], live=True,
        doc="At most this much memory (the sum of the containers' absolute limits.memory) "
            "placed on the member; default: the memory its controller reports."),
    Key("user.*", accept, same, live=True, doc="Free-form user metadata."),
)

MEMBER_SCHEMA: dict[str, Any] = {
    "kind": {"type": "string", "required": True},
    "name": {"type": "string", "required": True},
    "url": {"type": "string"},
    "address": {"type": "string"},
    "ssh": {"type": "dict", "nullable": True, "schema": {
        "user": {"type": "string"},
        "port": {"type": "integer", "min": 1, "max": 65535},
        "key": {"type": "string"},
    }},
    "root": {"type": "string"},
    "groups": {"type": "list", "schema": {"type": "string"}},
    "sysmgr": {"type": "string"},
    "host_key": {"type": "string"},
    "config": {"type": "dict", "nullable": True, "keysrules": {"type": "string"},
               "valuesrules": {"type": ["string", "integer", "float", "boolean"]}},
    "description": {"type": ["string", "integer", "float"], "nullable": True},
}

_URL = re.compile(r"ssh://(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^@/:\s\[\]]+)"
                  r"(?::(?P<port>\d+))?/?")
_HOST_KEY = re.compile(r"SHA256:[A-Za-z0-9+/]{43}=?")


def member_name_problem(name: str) -> str | None:
    """Members are named like containers (the name may become a hostname)."""
    reason = name_problem(name)
    return reason.replace("a container name", "a member name") if reason else None


def group_name_problem(name: str) -> str | None:
    return object_name_problem(name)


def parse_url(url: str) -> tuple[str, int | None, str] | None:
    """``ssh://user@host[:port]`` as ``(user, port, host)`` (user defaults to root); None
    when ``url`` is no such URL. ``local:`` is not parsed here (see :func:`url_problem`)."""
    m = _URL.fullmatch(url.strip())
    if m is None:
        return None
    port = int(m.group("port")) if m.group("port") else None
    return m.group("user") or DEFAULT_USER, port, m.group("host")


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a member URL (``ssh://user@host[:port]`` or ``local:``)."""
    if url == LOCAL_URL:
        return None
    parsed = parse_url(url)
    if parsed is None:
        return "expected ssh://USER@HOST[:PORT] (or local: for a root on this host)"
    port = parsed[1]
    if port is not None and not 1 <= port <= 65535:
        return f"port {port} is out of range (1-65535)"
    return None


def make_url(user: str, host: str, port: int | None) -> str:
    """The canonical URL of an SSH member (the user is always written)."""
    return f"ssh://{user}@{host}" + (f":{port}" if port else "")


def normalize_url(url: str) -> str:
    """``ssh://host`` -> ``ssh://root@host``; ``local:`` stays. ``url`` must be valid."""
    if url == LOCAL_URL:
        return url
    parsed = parse_url(url)
    assert parsed is not None, url
    user, port, host = parsed
    return make_url(user, host, port)


def host_key_problem(value: str) -> str | None:
    if _HOST_KEY.fullmatch(value.strip()):
        return None
    return "expected an SSH key fingerprint as ssh-keygen -l prints it: SHA256:<43 characters>"


def validate_member_config(config: Mapping[str, object]) -> list[Problem]:
    return validate_table(MEMBER_KEYS, config, "config", "member config")


def target_problem(target: str) -> str | None:
    """Why ``target`` is neither a member name nor ``@GROUP``."""
    if target.startswith("@"):
        reason = group_name_problem(target[1:])
        return f"invalid group {target[1:]!r}: {reason}" if reason else None
    reason = member_name_problem(target)
    return f"invalid member name {target!r}: {reason}" if reason else None


def member_problems(spec: MemberSpec) -> list[Problem]:
    """Everything wrong with a member record (``cluster add`` and manifests share it)."""
    problems: list[Problem] = []
    reason = member_name_problem(spec.name)
    if reason:
        problems.append(("name", f"invalid member name {spec.name!r}: {reason}"))
    reason = url_problem(spec.url)
    if reason:
        problems.append(("url", f"invalid member URL {spec.url!r}: {reason}"))
    if not spec.root.startswith("/"):
        problems.append(("root", f"invalid root {spec.root!r}: must be an absolute path"))
    if spec.key is not None and not spec.key.strip():
        problems.append(("ssh.key", "the key file name must not be empty"))
    if not spec.sysmgr.strip():
        problems.append(("sysmgr", "the sysmgr command must not be empty"))
    for i, g in enumerate(spec.groups):
        reason = group_name_problem(g)
        if reason:
            problems.append((f"groups.{i}", f"invalid group name {g!r}: {reason}"))
    if spec.host_key is not None:
        reason = host_key_problem(spec.host_key)
        if reason:
            problems.append(("host_key", f"invalid host key {spec.host_key!r}: {reason}"))
    problems += validate_member_config(dict(spec.config))
    return problems


def member_config(spec: MemberSpec) -> dict[str, str]:
    return dict(spec.config)


def capacity(spec: MemberSpec, memory_total: int | None = None) -> tuple[int | None, int | None]:
    """The member's ``(limits.instances, limits.memory)`` (None: no limit; the memory
    defaults to ``memory_total``, what the member reports)."""
    config = member_config(spec)
    count = config.get("limits.instances", "").strip()
    memory = config.get("limits.memory", "").strip()
    return (int(count) if count else None,
            int(_SIZE[1](memory)) if memory else memory_total)


def scheduler(spec: MemberSpec) -> str:
    """The member's ``scheduler.instance`` (default ``all``)."""
    value = member_config(spec).get("scheduler.instance", "") or "all"
    return value.strip().lower()


# -- kind: Member documents -------------------------------------------------------------------

def _str(doc: Mapping[str, Any], key: str) -> str | None:
    v = doc.get(key)
    return v.strip() if isinstance(v, str) else None


def _member_url(doc: Mapping[str, Any], ctx: Any) -> tuple[str, str | None]:
    """The member's URL and key file from ``url:`` or ``address:`` + ``ssh:``."""
    url, address = _str(doc, "url"), _str(doc, "address")
    ssh = doc.get("ssh") if isinstance(doc.get("ssh"), Mapping) else {}
    key = ssh.get("key") if isinstance(ssh.get("key"), str) else None
    if (url is None) == (address is None):
        ctx.problem(None, "a Member needs either url (ssh://USER@HOST[:PORT] or local:) or "
                          "address (with ssh: {user, port, key}), not both")
        return "", key
    if url is not None:
        if ssh.get("user") is not None or ssh.get("port") is not None:
            ctx.problem("ssh", "with url:, the user and port are part of the URL "
                               "(ssh: may only give the key)")
        return url, key
    assert address is not None
    if not address or any(c in address for c in "@/ ") or address == LOCAL_URL:
        ctx.problem("address", f"invalid address {address!r}: expected a host name or IP "
                               "address (use url: \"local:\" for a root on this host)")
        return "", key
    user = ssh.get("user") if isinstance(ssh.get("user"), str) else DEFAULT_USER
    port = ssh.get("port")
    port = port if isinstance(port, int) and 1 <= port <= 65535 else None  # else: the schema says
    host = f"[{address}]" if ":" in address else address
    return make_url(user, host, port), key


def build_member(doc: Mapping[str, Any], ctx: Any) -> MemberDoc:
    """The builder of ``kind: Member`` documents (the loader's ``KINDS`` entry)."""
    name = doc.get("name") if isinstance(doc.get("name"), str) else ""
    url, key = _member_url(doc, ctx)
    groups = tuple(g for g in doc.get("groups") or () if isinstance(g, str))
    seen: set[str] = set()
    for i, g in enumerate(groups):
        if g in seen:
            ctx.problem(f"groups.{i}", f"group {g!r} is listed twice")
        seen.add(g)
    config = ctx.string_map("config", doc.get("config"))
    spec = MemberSpec(
        name=name, url=url, root=_str(doc, "root") or DEFAULT_ROOT, key=key,
        sysmgr=_str(doc, "sysmgr") or DEFAULT_SYSMGR, groups=tuple(dict.fromkeys(groups)),
        config=tuple(sorted(config.items())), host_key=_str(doc, "host_key"))
    for path, reason in member_problems(spec):
        if path == "url" and not url:
            continue  # reported above
        ctx.problem(path, reason)
    if url and url_problem(url) is None:
        spec = replace(spec, url=normalize_url(url))
    description = doc.get("description")
    return MemberDoc(spec, "" if description is None else ctx.string("description", description),
                     source=ctx.source)
