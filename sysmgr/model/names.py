"""Name rules for the objects a manifest declares (model layer, pure).

Container names become hostnames, cgroup and directory names, so they follow LXD's hostname
rule. Profiles, pools, networks and devices are only ever keys and directory names, so their
rule is looser; image aliases may additionally contain ``/`` (``debian/12``). Every function
returns a reason (a sentence fragment without the name itself) or ``None`` when the name is
fine, so callers can phrase the issue as ``invalid name 'x': <reason>``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

from sysmgr.errors import Conflict

if TYPE_CHECKING:  # pragma: no cover
    import random

MAX_NAME = 63

_HOSTNAME_RULE = (
    "a container name is a hostname: 1 to 63 letters, digits and hyphens, "
    "not all digits, not starting or ending with a hyphen"
)
_HOSTNAME_CHARS = re.compile(r"^[A-Za-z0-9-]+$")


def name_problem(name: str) -> str | None:
    """Check a container name (LXD's hostname rule).

    Args:
        name: the proposed name.

    Returns:
        The reason the name is invalid, or None when it is valid.
    """
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME:
        return f"is {len(name)} characters long, at most {MAX_NAME} are allowed"
    # the path-like mistakes first: they are the dangerous ones and deserve a precise reason
    if "/" in name:
        return f"must not contain '/' ({_HOSTNAME_RULE})"
    if ".." in name:
        return f"must not contain '..' ({_HOSTNAME_RULE})"
    if "." in name:
        return f"must not contain '.' ({_HOSTNAME_RULE})"
    if not _HOSTNAME_CHARS.match(name):
        bad = next(c for c in name if not (c.isascii() and (c.isalnum() or c == "-")))
        return f"must not contain {bad!r} ({_HOSTNAME_RULE})"
    if name.isdigit():  # LXD allows a digit first (``0abc``), but a number is no hostname
        return f"must not be all digits ({_HOSTNAME_RULE})"
    if name[0] == "-":
        return f"must not start with a hyphen ({_HOSTNAME_RULE})"
    if name[-1] == "-":
        return f"must not end with a hyphen ({_HOSTNAME_RULE})"
    return None


def _loose_problem(name: object, *, allow_slash: bool) -> str | None:
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME:
        return f"is {len(name)} characters long, at most {MAX_NAME} are allowed"
    if name in (".", ".."):
        return f"must not be {name!r}"
    if name.startswith("."):
        return "must not start with '.'"
    for c in name:
        if c.isspace():
            return "must not contain whitespace"
        if not c.isprintable():
            return f"must not contain the control character {c!r}"
    if "/" in name:
        if not allow_slash:
            return "must not contain '/'"
        if name.startswith("/"):
            return "must not start with '/'"
        if name.endswith("/"):
            return "must not end with '/'"
        for seg in name.split("/"):
            if seg in ("", ".", ".."):
                return f"must not contain an empty, '.' or '..' path segment ({seg!r})"
    return None


def object_name_problem(name: str) -> str | None:
    """Check the name of a profile, storage pool or network (looser than containers).

    1 to 63 printable characters, no ``/``, no whitespace, not starting with ``.``.

    Args:
        name: the proposed name.

    Returns:
        The reason the name is invalid, or None when it is valid.
    """
    return _loose_problem(name, allow_slash=False)


def alias_problem(name: str) -> str | None:
    """Check an image alias: like :func:`object_name_problem`, but ``/`` separates segments.

    ``debian/12`` is fine; ``/x``, ``x/``, ``a//b`` and ``a/../b`` are not.

    Args:
        name: the proposed alias.

    Returns:
        The reason the alias is invalid, or None when it is valid.
    """
    return _loose_problem(name, allow_slash=True)


def device_name_problem(name: str) -> str | None:
    """Check a device name (the key under ``devices:``); same rule as profile names.

    Args:
        name: the proposed device name.

    Returns:
        The reason the name is invalid, or None when it is valid.
    """
    return _loose_problem(name, allow_slash=False)


_IFNAME_MAX = 15  # IFNAMSIZ - 1


def ifname_problem(name: str) -> str | None:
    """Check a Linux network interface name (``nic`` ``name``/``parent``).

    Args:
        name: the proposed interface name.

    Returns:
        The reason the name is invalid, or None when it is valid.
    """
    if not name:
        return "must not be empty"
    if len(name) > _IFNAME_MAX:
        return f"is {len(name)} characters long, interface names have at most {_IFNAME_MAX}"
    if name in (".", ".."):
        return f"must not be {name!r}"
    for c in name:
        if c == "/" or c == ":" or c.isspace() or not c.isprintable():
            return f"must not contain {c!r}"
    return None


# -- names for containers launched without one (LXD's petname style: adjective-noun) ----------

_ADJECTIVES = (
    "able", "amber", "apt", "bold", "brave", "bright", "brisk", "calm", "clear", "clever",
    "cosmic", "crisp", "daring", "deep", "eager", "fair", "fast", "fine", "fond", "free",
    "fresh", "glad", "golden", "grand", "happy", "humble", "jolly", "keen", "kind", "lucky",
    "merry", "mighty", "modest", "neat", "noble", "plucky", "polite", "proud", "quick",
    "quiet", "rapid", "ready", "robust", "sharp", "shiny", "smart", "steady", "sunny",
    "swift", "tidy", "vivid", "warm", "wise", "witty", "young", "zesty")
_NOUNS = (
    "badger", "beagle", "bison", "cattle", "condor", "coyote", "crane", "cricket", "dingo",
    "dolphin", "eagle", "falcon", "ferret", "finch", "fox", "gecko", "gibbon", "gopher",
    "grouse", "hawk", "heron", "ibex", "impala", "jackal", "koala", "lemur", "lynx",
    "macaw", "marmot", "mink", "moose", "newt", "ocelot", "orca", "osprey", "otter", "owl",
    "panda", "pelican", "puffin", "quail", "rabbit", "raven", "salmon", "seal", "shrew",
    "sloth", "stork", "swan", "tapir", "tiger", "toucan", "trout", "turtle", "walrus",
    "weasel", "wombat", "yak", "zebra")


def pick_name(taken: Callable[[str], bool], rng: random.Random | None = None,
              tries: int = 50) -> str:
    """A free container name in LXD's style, ``adjective-noun`` (``fond-cricket``); after
    ``tries`` taken ones, a number is appended (``fond-cricket-7``)."""
    import random  # (its import costs the checks of every name a millisecond)

    rng = rng or random.SystemRandom()
    for i in range(tries + 100):
        name = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
        if i >= tries:
            name += f"-{rng.randrange(2, 1000)}"
        if not taken(name):
            return name
    raise Conflict("no free container name found: give one")  # pragma: no cover - 3M names
