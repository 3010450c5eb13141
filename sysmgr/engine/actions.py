"""Plans are data: frozen, typed actions in dependency order.

Each action says what it does (``describe``) and what kind of change it is (``effect``):

- ``create`` / ``update``: a new object or a changed record, nothing running is disturbed;
- ``live``: applied to a running container without a restart;
- ``start`` / ``stop`` / ``restart``: changes what runs (``disruptive`` for stop/restart);
- ``destroy``: removes data (never planned implicitly by apply).

``diff`` prints exactly the actions ``apply`` executes. A change that puts back what the host
lost or had changed by hand, while the manifests still say what they said at the last apply, is
*drift*: its action's line says so (``update Container web1 (drift: limits.memory 128MiB ->
256MiB)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from sysmgr._util import durations


@dataclass(frozen=True)
class Change:
    """One changed key: ``path`` like ``config.limits.memory`` or ``devices.eth0``."""

    path: str
    old: object
    new: object
    drift: bool = False     # the manifests did not change it: the host did
    # the profile an old/new value comes from, when the container's own key is absent there
    old_from: str = ""
    new_from: str = ""

    def _old(self) -> str:
        return _fmt(self.old) + (f" (profile {self.old_from})" if self.old_from else "")

    def _new(self) -> str:
        return _fmt(self.new) + (f" (profile {self.new_from})" if self.new_from else "")

    def brief(self) -> str:
        """``KEY OLD -> NEW`` for an action's drift note (``config.`` left out)."""
        path = self.path.removeprefix("config.")
        if self.old is None:
            return f"{path} missing"
        if self.new is None:
            return f"{path} added"
        return f"{path} {self._old()} -> {self._new()}"

    def describe(self) -> str:
        if self.old is None:
            return f"+ {self.path}: {self._new()}"
        if self.new is None:
            return f"- {self.path}: {self._old()}"
        return f"~ {self.path}: {self._old()} -> {self._new()}"


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
        """The plan line: the headline, and what drifted when the action puts it back."""
        drift = self.drift()
        return self.headline() + (f" (drift: {'; '.join(drift)})" if drift else "")

    def headline(self) -> str:
        return f"{self.effect} {self.subject}"

    def drift(self) -> tuple[str, ...]:
        """What this action puts back that the host changed (its drifted changes)."""
        return tuple(c.brief() for c in getattr(self, "changes", ()) if c.drift)

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

    def headline(self) -> str:
        return f"repair {self.subject}"

    def drift(self) -> tuple[str, ...]:
        return self.problems  # always the host's doing: the manifests cannot ask for a broken bridge

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

    def headline(self) -> str:
        return f"{'update (live)' if self.live else 'update'} {self.subject}"

    def details(self) -> tuple[str, ...]:
        return tuple(c.describe() for c in self.changes)


@dataclass(frozen=True)
class Start(Action):
    kind = "Container"
    effect = "start"
    changes: tuple[Change, ...] = ()   # the state, when it was stopped by hand (drift)


@dataclass(frozen=True)
class Stop(Action):
    kind = "Container"
    effect = "stop"
    changes: tuple[Change, ...] = ()   # the state, when it was started by hand (drift)


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
    keep_backups: float = 30 * 24 * 3600.0   # seconds the pruned backups are kept

    def headline(self) -> str:
        return f"delete {self.subject}"

    def details(self) -> tuple[str, ...]:
        if self.target_kind == "Container":
            return (f"left the manifests: stopped and exported to backups/pruned/ first (kept "
                    f"{durations.describe(self.keep_backups)})",) \
                if self.backup else ("left the manifests: deleted WITHOUT a backup",)
        return ("left the manifests",)


@dataclass(frozen=True)
class SetPrune(ObjectAction):
    """Record whether an object created from manifests may be pruned (``prune: false``)."""

    effect = "update"
    prune: bool = True

    def headline(self) -> str:
        return f"record {self.subject} (prune: {'true' if self.prune else 'false'})"


@dataclass(frozen=True)
class ForgetInventory(ObjectAction):
    """Drop the inventory record of an object that is gone (deleted by hand)."""

    effect = "update"

    def headline(self) -> str:
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
    # (kind, name, JSON) of what the manifests ask: recorded by a successful apply, so the
    # next plan can tell drift from a manifest change (:mod:`sysmgr.engine.drift`)
    applied: tuple[tuple[str, str, str], ...] = ()

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
