"""Plans are data: frozen, typed actions in dependency order.

Each action says what it does (``describe``) and what kind of change it is (``effect``):

- ``create`` / ``update``: a new object or a changed record, nothing running is disturbed;
- ``live``: applied to a running container without a restart;
- ``start`` / ``stop`` / ``restart``: changes what runs (``disruptive`` for stop/restart);
- ``destroy``: removes data (never planned implicitly by apply).

``diff`` prints exactly the actions ``apply`` executes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class Change:
    """One changed key: ``path`` like ``config.limits.memory`` or ``devices.eth0``."""

    path: str
    old: object
    new: object

    def describe(self) -> str:
        if self.old is None:
            return f"+ {self.path}: {_fmt(self.new)}"
        if self.new is None:
            return f"- {self.path}: {_fmt(self.old)}"
        return f"~ {self.path}: {_fmt(self.old)} -> {_fmt(self.new)}"


def _fmt(v: object) -> str:
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {v[k]}" for k in sorted(v)) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)


@dataclass(frozen=True)
class Action:
    kind = "Action"
    effect = "update"
    name: str

    @property
    def disruptive(self) -> bool:
        return self.effect in ("stop", "restart", "destroy")

    @property
    def subject(self) -> str:
        return f"{self.kind} {self.name}"

    def describe(self) -> str:
        return f"{self.effect} {self.subject}"

    def details(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class CreatePool(Action):
    kind = "StoragePool"
    effect = "create"
    driver: str = "dir"
    config: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def details(self) -> tuple[str, ...]:
        return (f"driver: {self.driver}",) + tuple(f"config.{k}: {v}" for k, v in sorted(self.config.items()))


@dataclass(frozen=True)
class CreateVolume(Action):
    """Make a custom storage volume; ``name`` is ``POOL/VOLUME``."""

    kind = "StorageVolume"
    effect = "create"
    pool: str = ""
    volume: str = ""
    config: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def details(self) -> tuple[str, ...]:
        return tuple(f"config.{k}: {v}" for k, v in sorted(self.config.items()))


@dataclass(frozen=True)
class UpdateVolume(CreateVolume):
    """A custom volume's new config and description (a size is a quota: live)."""

    effect = "update"
    changes: tuple[Change, ...] = ()

    def details(self) -> tuple[str, ...]:
        return tuple(c.describe() for c in self.changes)


@dataclass(frozen=True)
class CreateNetwork(Action):
    kind = "Network"
    effect = "create"
    type: str = "bridge"
    config: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def details(self) -> tuple[str, ...]:
        return (f"type: {self.type}",) + tuple(f"config.{k}: {v}" for k, v in sorted(self.config.items()))


@dataclass(frozen=True)
class UpdateNetwork(Action):
    """Store a network's new config and make the host match (bridge, dnsmasq, nftables);
    ``restart`` names running containers whose nics only pick the change up on a restart."""

    kind = "Network"
    effect = "update"
    type: str = "bridge"
    config: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    changes: tuple[Change, ...] = ()
    restart: tuple[str, ...] = ()

    def details(self) -> tuple[str, ...]:
        lines = tuple(c.describe() for c in self.changes)
        if self.restart:
            lines += (f"restart needed to pick it up: {', '.join(self.restart)}",)
        return lines


@dataclass(frozen=True)
class RepairNetwork(Action):
    """Bring a recorded network back (after a host reboot, a killed dnsmasq...)."""

    kind = "Network"
    effect = "update"
    problems: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"repair {self.subject}"

    def details(self) -> tuple[str, ...]:
        return self.problems


@dataclass(frozen=True)
class PutProfile(Action):
    kind = "Profile"
    effect = "create"        # "update" when the profile exists
    description: str = ""
    config: Mapping[str, str] = field(default_factory=dict)
    devices: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    changes: tuple[Change, ...] = ()

    def details(self) -> tuple[str, ...]:
        return tuple(c.describe() for c in self.changes)


@dataclass(frozen=True)
class UpdateProfile(PutProfile):
    effect = "update"


@dataclass(frozen=True)
class BuildImage(Action):
    kind = "Image"
    effect = "create"
    builder: str = ""
    options: Mapping[str, str] = field(default_factory=dict)

    def details(self) -> tuple[str, ...]:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return (f"build with {self.builder}" + (f" ({opts})" if opts else ""),)


@dataclass(frozen=True)
class ImportImage(Action):
    kind = "Image"
    effect = "create"
    path: str = ""
    fingerprint: str = ""

    def details(self) -> tuple[str, ...]:
        return (f"import {self.path}",)


@dataclass(frozen=True)
class CreateContainer(Action):
    kind = "Container"
    effect = "create"
    image: str = ""
    profiles: tuple[str, ...] = ()
    config: Mapping[str, str] = field(default_factory=dict)
    devices: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    description: str = ""

    def details(self) -> tuple[str, ...]:
        lines = [f"image: {self.image}", f"profiles: {_fmt(self.profiles)}"]
        lines += [f"config.{k}: {v}" for k, v in sorted(self.config.items())]
        lines += [f"devices.{k}: {_fmt(v)}" for k, v in sorted(self.devices.items())]
        return tuple(lines)


@dataclass(frozen=True)
class UpdateContainer(Action):
    """Store a container's new local definition; ``live`` when it is running and every
    changed key applies without a restart (else a ``Restart`` action follows)."""

    kind = "Container"
    effect = "update"
    profiles: tuple[str, ...] = ()
    config: Mapping[str, str] = field(default_factory=dict)
    devices: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    description: str = ""
    changes: tuple[Change, ...] = ()
    live: bool = False

    def describe(self) -> str:
        return f"{'update (live)' if self.live else 'update'} {self.subject}"

    def details(self) -> tuple[str, ...]:
        return tuple(c.describe() for c in self.changes)


@dataclass(frozen=True)
class Start(Action):
    kind = "Container"
    effect = "start"


@dataclass(frozen=True)
class Stop(Action):
    kind = "Container"
    effect = "stop"


@dataclass(frozen=True)
class Restart(Action):
    kind = "Container"
    effect = "restart"
    reason: str = ""

    def details(self) -> tuple[str, ...]:
        return (f"restart needed: {self.reason}",) if self.reason else ()


@dataclass(frozen=True)
class ObjectAction(Action):
    """An action on an object of any kind (``target_kind``), named by it."""

    target_kind: str = ""

    @property
    def subject(self) -> str:
        return f"{self.target_kind} {self.name}"


@dataclass(frozen=True)
class Prune(ObjectAction):
    """Delete an object created from these manifests that left them (``apply --prune``); a
    container is stopped and exported to ``backups/pruned/`` first (``backup``)."""

    effect = "destroy"
    backup: bool = True

    def describe(self) -> str:
        return f"delete {self.subject}"

    def details(self) -> tuple[str, ...]:
        if self.target_kind == "Container":
            return ("left the manifests: stopped and exported to backups/pruned/ first",) \
                if self.backup else ("left the manifests: deleted WITHOUT a backup",)
        return ("left the manifests",)


@dataclass(frozen=True)
class SetPrune(ObjectAction):
    """Record whether an object created from manifests may be pruned (``prune: false``)."""

    effect = "update"
    prune: bool = True

    def describe(self) -> str:
        return f"record {self.subject} (prune: {'true' if self.prune else 'false'})"


@dataclass(frozen=True)
class ForgetInventory(ObjectAction):
    """Drop the inventory record of an object that is gone (deleted by hand)."""

    effect = "update"

    def describe(self) -> str:
        return f"forget {self.subject} (deleted outside the manifests)"


@dataclass(frozen=True)
class Plan:
    """An ordered tuple of actions plus the digest of the state it was planned against,
    and what apply records in the inventory for the objects it creates (``origin``,
    ``revision``; ``keep``: (kind, name) of those that say ``prune: false``)."""

    actions: tuple[Action, ...] = ()
    observed_digest: str = ""
    warnings: tuple[str, ...] = ()
    origin: str = ""
    revision: str = ""
    keep: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.actions

    @property
    def disruptive(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.disruptive)

    def lines(self) -> list[str]:
        """The plan as text: one line per action, indented detail lines."""
        out: list[str] = []
        for a in self.actions:
            out.append(a.describe())
            out.extend("    " + d for d in a.details())
        return out

    def summary(self) -> str:
        if self.empty:
            return "no changes"
        counts: dict[str, int] = {}
        for a in self.actions:
            counts[a.effect] = counts.get(a.effect, 0) + 1
        return "plan: " + ", ".join(f"{n} to {e}" for e, n in counts.items())
