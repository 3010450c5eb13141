"""Placement: which cluster member gets a new container (model layer, pure).

LXD's rule, plus what a daemonless cluster can know cheaply: a member qualifies when it is
online, not evacuated, in the requested group (``--target @group``), willing to be chosen
(its ``scheduler.instance`` key) and has the free memory the container's ``limits.memory``
asks for; among those the one with the fewest containers wins, ties going to the first by
name. Free memory only filters: it moves all the time, and a plan shown by ``diff`` must be
the one ``apply`` makes.

No I/O: the API gathers each member's facts (``hello``) and the engine asks :func:`place`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from sysmgr.model.keys import parse_memory

#: ``scheduler.instance`` values (LXD's): chosen by placement; only when named by
#: ``--target``; only when targeted through one of its groups
SCHEDULERS = ("all", "manual", "group")


@dataclass(frozen=True)
class Candidate:
    """One member as placement sees it."""

    name: str
    online: bool = True
    offline_reason: str = ""
    evacuated: bool = False
    groups: tuple[str, ...] = ()
    scheduler: str = "all"
    containers: int = 0
    memory_free: int | None = None       # bytes; None when the member did not say
    memory_total: int | None = None


@dataclass(frozen=True)
class Request:
    """What the new container asks for: a group (``@web`` -> ``web``) and its
    ``limits.memory`` as configured (a size, or a percentage of the member's memory)."""

    group: str | None = None
    memory: str | None = None


@dataclass(frozen=True)
class Placement:
    """The chosen member (None: no member qualifies) and why each other one was passed over."""

    member: str | None
    rejected: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def reason(self) -> str:
        """Why nothing qualified, one clause per member (for the error message)."""
        return "; ".join(f"{n}: {why}" for n, why in self.rejected) or "the cluster has no members"


def memory_need(memory: str | None) -> int | None:
    """Bytes a ``limits.memory`` value needs free on a member, or None when it sets no
    absolute floor. A percentage is a share of whichever host runs the container, so every
    member fits it by definition; an invalid value was refused by validation already."""
    if not memory:
        return None
    try:
        parsed = parse_memory(memory)
    except ValueError:
        return None
    return parsed if isinstance(parsed, int) else None


def _fmt(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}".replace(".0" + unit, unit)
    return f"{n}B"


def refusal(c: Candidate, request: Request) -> str | None:
    """Why ``c`` cannot take the container (None: it can)."""
    if not c.online:
        return f"offline ({c.offline_reason})" if c.offline_reason else "offline"
    if c.evacuated:
        return "evacuated"
    if request.group is not None:
        if request.group not in c.groups:
            return f"not in group {request.group!r}"
    elif c.scheduler == "group":
        return "scheduler.instance=group: only chosen through --target @GROUP"
    if c.scheduler == "manual":
        return "scheduler.instance=manual: only chosen by --target MEMBER"
    need = memory_need(request.memory)
    if need is not None and c.memory_free is not None and c.memory_free < need:
        return f"limits.memory {request.memory} needs {_fmt(need)}, {_fmt(c.memory_free)} free"
    return None


def place(candidates: Sequence[Candidate], request: Request) -> Placement:
    """Choose a member for one new container (see the module docstring for the rule)."""
    fit: list[Candidate] = []
    rejected: list[tuple[str, str]] = []
    for c in candidates:
        why = refusal(c, request)
        if why is None:
            fit.append(c)
        else:
            rejected.append((c.name, why))
    if not fit:
        return Placement(None, tuple(rejected))
    best = min(fit, key=lambda c: (c.containers, c.name))
    return Placement(best.name, tuple(rejected))


def after(c: Candidate, request: Request) -> Candidate:
    """``c`` once it holds one more container of ``request`` (placing several containers in
    one plan spreads them as placing them one by one would)."""
    need = memory_need(request.memory) or 0
    free = None if c.memory_free is None else max(0, c.memory_free - need)
    return Candidate(c.name, c.online, c.offline_reason, c.evacuated, c.groups, c.scheduler,
                     c.containers + 1, free, c.memory_total)
