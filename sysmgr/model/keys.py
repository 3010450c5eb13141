"""Config-key rule tables: every key sysmgr understands, its validator, normaliser and docs.

Model layer, pure (stdlib only, plus the ``Limits`` dataclass of the runtime interface). The
tables are the single source of truth: manifests and ``-c KEY=VALUE`` are validated against
them, diffs compare values through their normalisers (``64MiB`` == ``67108864``, ``yes`` ==
``true``), the engine asks :func:`is_live` whether a change needs a restart, and the docs and
``--help`` text come from :func:`describe_keys`. Unknown keys are rejected, except the
free-form ``user.*`` family (LXD's rule).

Values are strings, as in LXD; the empty string means "unset" (so a container can unset a key
its profile sets), hence every validator accepts ``""``.

Key families (``user.*``, ``environment.*``...) are table entries whose name ends in ``.*``.
Server-managed families (``volatile.*``, ``image.*``) are rejected in manifests and dropped by
:func:`normalize_config`, so diffs ignore them.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from sysmgr._util.sizes import parse_size
from sysmgr.drivers.runtime.base import Limits
from sysmgr.errors import Issue, ValidationError
from sysmgr.model.names import device_name_problem, ifname_problem, object_name_problem
# the pool key table lives in pool_keys; re-exported for the importers of these names here
from sysmgr.model.pool_keys import (  # noqa: F401
    POOL_DRIVER_KEYS, describe_pool_keys, normalize_pool_config, validate_pool_config)

Validator = Callable[[str], str | None]
Normalizer = Callable[[str], str]
Problem = tuple[str, str]  # (key path, reason)

MIN_MEMORY = 4 * 1024 * 1024


def _same(value: str) -> str:
    return value


def _accept(value: str) -> None:
    return None


@dataclass(frozen=True)
class Key:
    """One config key (or a key family when ``name`` ends in ``.*``).

    Attributes:
        name: the key, e.g. ``limits.memory``, or a family such as ``user.*``.
        validate: returns the reason a value is invalid, or None. Gets a string.
        normalize: canonical form of a *valid* value, used to compare values in diffs.
        live: a change can be applied to a running container without a restart.
        doc: one line for docs and ``--help``.
        default: the value that applies when the key is unset (None: no default/unlimited).
        managed: server-generated (``volatile.*``, ``image.*``): rejected in manifests,
            ignored by diffs.
        suffix_check: families only: checks the part of the key after the prefix.
    """

    name: str
    validate: Validator = _accept
    normalize: Normalizer = _same
    live: bool = False
    doc: str = ""
    default: str | None = None
    managed: bool = False
    suffix_check: Callable[[str], str | None] | None = None

    @property
    def is_family(self) -> bool:
        return self.name.endswith(".*")

    @property
    def prefix(self) -> str:
        """``user.`` for ``user.*``; the name itself for a plain key."""
        return self.name[:-1] if self.is_family else self.name


# -- value parsers (raise ValueError with the reason) ------------------------------------------

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def parse_bool(value: str) -> bool:
    """Parse an LXD-style boolean (true/false, yes/no, on/off, 1/0, any case).

    Raises:
        ValueError: with a readable reason when ``value`` is not a boolean.
    """
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"invalid boolean {value!r}: expected true or false (or yes/no, on/off, 1/0)")


def _parse_int(value: str, *, minimum: int | None = None, maximum: int | None = None,
               what: str = "integer") -> int:
    v = value.strip()
    if not re.fullmatch(r"[+-]?\d+", v):
        raise ValueError(f"invalid {what} {value!r}: expected a whole number")
    n = int(v)
    if minimum is not None and n < minimum:
        raise ValueError(f"invalid {what} {value!r}: must be at least {minimum}")
    if maximum is not None and n > maximum:
        raise ValueError(f"invalid {what} {value!r}: must be at most {maximum}")
    return n


def _parse_percent(value: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
    if not m:
        raise ValueError(f"invalid percentage {value!r}: expected a number followed by %, such as 50%")
    pct = float(m.group(1))
    if not 0 < pct <= 100:
        raise ValueError(f"invalid percentage {value!r}: must be more than 0% and at most 100%")
    return pct


def _fmt_number(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


def parse_cpu(value: str) -> int | tuple[int, ...]:
    """Parse ``limits.cpu``: a CPU count (``"2"``) or a CPU set (``"0-1"``, ``"0,2"``, ``"0-1,3"``).

    As in LXD, a lone number is a count; pin a single CPU with ``"3-3"``.

    Returns:
        The count as an int, or the set as a sorted tuple of CPU numbers.

    Raises:
        ValueError: with a readable reason.
    """
    v = value.strip()
    if re.fullmatch(r"\d+", v):
        n = int(v)
        if n < 1:
            raise ValueError(
                f"invalid CPU count {value!r}: must be at least 1 (to pin CPU 0 use the set '0-0')"
            )
        return n
    if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", v):
        raise ValueError(
            f"invalid CPU limit {value!r}: expected a count such as 2 or a CPU set such as 0-1, 0,2 or 0-1,3"
        )
    cpus: set[int] = set()
    for part in v.split(","):
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if a > b:
            raise ValueError(f"invalid CPU set {value!r}: range {part!r} goes backwards")
        cpus.update(range(a, b + 1))
    return tuple(sorted(cpus))


def format_cpuset(cpus: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the kernel's list format)."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(set(cpus)):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [c]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def _norm_cpu(value: str) -> str:
    parsed = parse_cpu(value)
    if isinstance(parsed, int):
        return str(parsed)
    text = format_cpuset(parsed)
    # a one-CPU set must not read back as a count
    return f"{parsed[0]}-{parsed[0]}" if len(parsed) == 1 else text


_TIME_RE = re.compile(r"^\s*(\d+)\s*(ms|us)\s*/\s*(\d+)\s*(ms|us)\s*$")


def parse_cpu_allowance(value: str) -> tuple[str, float | tuple[int, int]]:
    """Parse ``limits.cpu.allowance``: ``"50%"`` (soft) or ``"25ms/100ms"`` (hard).

    Returns:
        ``("soft", percent)`` or ``("hard", (quota_us, period_us))``.

    Raises:
        ValueError: with a readable reason.
    """
    v = value.strip()
    if v.endswith("%"):
        return "soft", _parse_percent(v)
    m = _TIME_RE.match(v)
    if not m:
        raise ValueError(
            f"invalid CPU allowance {value!r}: expected a percentage such as 50% (soft limit) "
            "or a time per period such as 25ms/100ms (hard limit)"
        )
    mult = {"ms": 1000, "us": 1}
    quota = int(m.group(1)) * mult[m.group(2)]
    period = int(m.group(3)) * mult[m.group(4)]
    # the kernel's CFS bounds: period 1ms..1s, quota at least 1ms
    if not 1000 <= period <= 1_000_000:
        raise ValueError(f"invalid CPU allowance {value!r}: the period must be between 1ms and 1000ms")
    if quota < 1000:
        raise ValueError(f"invalid CPU allowance {value!r}: the time must be at least 1ms")
    return "hard", (quota, period)


def _norm_allowance(value: str) -> str:
    kind, parsed = parse_cpu_allowance(value)
    if kind == "soft":
        assert isinstance(parsed, float)
        return _fmt_number(parsed) + "%"
    assert isinstance(parsed, tuple)

    def t(us: int) -> str:
        return f"{us // 1000}ms" if us % 1000 == 0 else f"{us}us"

    return f"{t(parsed[0])}/{t(parsed[1])}"


def parse_memory(value: str) -> int | float:
    """Parse ``limits.memory``: a size (``64MiB``, ``1GB``, bytes) or a percentage (``50%``).

    Returns:
        Bytes as an int, or the percentage of host memory as a float.

    Raises:
        ValueError: with a readable reason (also when below 4MiB).
    """
    v = value.strip()
    if v.endswith("%"):
        return _parse_percent(v)
    n = parse_size(v)
    if n < MIN_MEMORY:
        raise ValueError(f"memory limit {value!r} is too small: the minimum is 4MiB")
    return n


def _norm_memory(value: str) -> str:
    parsed = parse_memory(value)
    return _fmt_number(parsed) + "%" if isinstance(parsed, float) else str(parsed)


def _abs_path(value: str) -> None:
    if not value.startswith("/"):
        raise ValueError(f"invalid path {value!r}: must be absolute (start with '/')")
    if "\0" in value:
        raise ValueError("invalid path: must not contain NUL")


def normalize_path(value: str) -> str:
    """``/srv//pool/`` -> ``/srv/pool`` (same directory, same string; ``//x`` -> ``/x``)."""
    n = posixpath.normpath(value)
    # POSIX lets normpath keep a leading "//"; on Linux it is just "/"
    return "/" + n.lstrip("/") if n.startswith("//") else n


def _mac(value: str) -> None:
    if not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", value.strip()):
        raise ValueError(f"invalid MAC address {value!r}: expected six hex pairs such as 00:16:3e:12:34:56")
    if int(value.strip()[:2], 16) & 1:
        raise ValueError(f"invalid MAC address {value!r}: a multicast address cannot be a nic's address")


def _ipv4(value: str) -> None:
    try:
        ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise ValueError(f"invalid IPv4 address {value!r}: expected an address such as 10.0.3.5") from None


# -- validator/normaliser builders -------------------------------------------------------------

def _check(parse: Callable[[str], object]) -> Validator:
    """Turn a raising parser into a validator; ``""`` (unset) is always valid."""

    def validate(value: str) -> str | None:
        if value == "":
            return None
        try:
            parse(value)
        except ValueError as e:
            return str(e)
        return None

    return validate


def _norm(fn: Normalizer) -> Normalizer:
    def normalize(value: str) -> str:
        return "" if value == "" else fn(value)

    return normalize


def _reject(reason: str) -> Validator:
    def validate(value: str) -> str | None:
        return reason

    return validate


_BOOL = _check(parse_bool)
_NORM_BOOL = _norm(lambda v: "true" if parse_bool(v) else "false")


def _int_key(minimum: int | None = None, maximum: int | None = None, what: str = "integer"
             ) -> tuple[Validator, Normalizer]:
    def parse(v: str) -> int:
        return _parse_int(v, minimum=minimum, maximum=maximum, what=what)

    return _check(parse), _norm(lambda v: str(parse(v)))


def _size_key() -> tuple[Validator, Normalizer]:
    return _check(parse_size), _norm(lambda v: str(parse_size(v)))


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_suffix(name: str) -> str | None:
    if not _ENV_NAME.match(name):
        return (f"invalid environment variable name {name!r}: letters, digits and '_', "
                "not starting with a digit")
    return None


def _schedule():
    from sysmgr.model import schedule  # only when a snapshot key is checked

    return schedule


# -- the container (and profile) config table -------------------------------------------------

_PROCESSES = _int_key(minimum=1, what="process limit")
_PRIORITY = _int_key(minimum=0, what="priority")
_SECONDS = _int_key(minimum=0, what="number of seconds")


def _keys(*keys: Key) -> dict[str, Key]:
    return {k.name: k for k in keys}


CONTAINER_KEYS: dict[str, Key] = _keys(
    Key("limits.cpu", _check(parse_cpu), _norm(_norm_cpu), live=True,
        doc="CPUs the container may run on: a count (2, pinned to that many CPUs) "
            "or a CPU set (0-1, 0,2, 0-1,3)."),
    Key("limits.cpu.allowance", _check(parse_cpu_allowance), _norm(_norm_allowance), live=True,
        doc="Share of CPU time: 50% (soft, relative weight under contention) "
            "or 25ms/100ms (hard quota per period)."),
    Key("limits.memory", _check(parse_memory), _norm(_norm_memory), live=True,
        doc="Memory limit: a size (64MiB, 1GB, bytes) or a percentage of host memory (50%); "
            "at least 4MiB."),
    Key("limits.memory.swap", _BOOL, _NORM_BOOL, live=True, default="true",
        doc="Whether the container may use swap (false: memory+swap capped at limits.memory)."),
    Key("limits.processes", _PROCESSES[0], _PROCESSES[1], live=True,
        doc="Maximum number of processes (pids.max)."),
    Key("boot.autostart", _BOOL, _NORM_BOOL, live=True, default="false",
        doc="Start the container when the host boots."),
    Key("boot.autostart.priority", _PRIORITY[0], _PRIORITY[1], live=True, default="0",
        doc="Start order at host boot: higher starts first."),
    Key("boot.autostart.delay", _SECONDS[0], _SECONDS[1], live=True, default="0",
        doc="Seconds to wait after starting this container before starting the next one."),
    Key("boot.host_shutdown_timeout", _SECONDS[0], _SECONDS[1], live=True, default="30",
        doc="Seconds to wait for a clean halt before killing the container."),
    Key("security.protection.delete", _BOOL, _NORM_BOOL, live=True, default="false",
        doc="Refuse to delete the container while true."),
    Key("snapshots.schedule", _check(lambda v: _schedule().parse_schedule(v)), _norm(str.strip),
        live=True,
        doc="Automatic snapshots: a cron expression (minute hour day month weekday) or "
            "aliases such as @hourly, @daily, @weekly; taken by 'sysmgr snapshot auto'."),
    Key("snapshots.schedule.stopped", _BOOL, _NORM_BOOL, live=True, default="false",
        doc="Whether scheduled snapshots are also taken while the container is stopped."),
    Key("snapshots.expiry", _check(lambda v: _schedule().parse_expiry(v)), _norm(str.strip),
        live=True,
        doc="Lifetime of new snapshots, e.g. 2w, 3d, 12H, 30M (M minutes, H hours, d days, "
            "w weeks, m months, y years); 'sysmgr snapshot prune' deletes expired ones."),
    Key("security.privileged", _BOOL, _NORM_BOOL, live=False, default="true",
        doc="Run without a user namespace. Defaults to true until user-namespace (unprivileged) "
            "containers are implemented; false is accepted and reserved for them."),
    Key("user.*", _accept, _same, live=True,
        doc="Free-form user metadata; sysmgr never interprets it."),
    # not live: init's environment only changes at a start, and a declared environment that
    # init does not have would be a silent drift (LXD calls it live because exec sees it)
    Key("environment.*", _accept, _same, live=False,
        doc="Environment variable NAME for init and for exec; a change restarts the container.",
        suffix_check=_env_suffix),
    Key("volatile.*", _reject("volatile keys are managed by sysmgr"), managed=True, live=True,
        doc="Server-generated state (MAC addresses, ids...); read-only, ignored by diff."),
    Key("image.*", _reject("image keys are managed by sysmgr (recorded from the image)"),
        managed=True, live=True,
        doc="Properties of the image the container was created from; read-only."),
    Key("raw.*", _reject("raw.* keys are not supported by sysmgr (there is no LXC config "
                         "to pass through)"),
        doc="Not supported."),
)


def _lookup(table: Mapping[str, Key], key: str) -> Key | None:
    k = table.get(key)
    if k is not None and not k.is_family:
        return k
    best: Key | None = None
    for cand in table.values():
        if cand.is_family and key.startswith(cand.prefix):
            if best is None or len(cand.prefix) > len(best.prefix):
                best = cand
    return best


def lookup(key: str) -> Key | None:
    """The rule for a container/profile config key (exact key or family), or None if unknown."""
    return _lookup(CONTAINER_KEYS, key)


def _suggest(key: str, table: Mapping[str, Key]) -> str:
    plain = [k for k in table if not k.endswith(".*")]
    close = difflib.get_close_matches(key, plain, n=1, cutoff=0.75)
    if close:
        return f" (did you mean {close[0]!r}?)"
    head, dot, rest = key.partition(".")
    if dot:
        prefixes = [k[:-2] for k in table if k.endswith(".*")]
        close = difflib.get_close_matches(head, prefixes, n=1, cutoff=0.75)
        if close:
            return f" (did you mean {close[0] + '.' + rest!r}?)"
    return ""


def value_to_str(value: object) -> str:
    """Convert a config value to its string form as LXD does (``True`` -> ``"true"``).

    Raises:
        TypeError: for None, mappings, lists and other non-scalars.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float, datetime.date)):  # date: YAML 1.1 resolves 2024-01-01
        return str(value)
    what = {dict: "a mapping", list: "a list", type(None): "null"}.get(type(value), type(value).__name__)
    raise TypeError(f"expected a string, number or boolean, got {what}")


def _validate_table(table: Mapping[str, Key], config: Mapping[str, object], where: str,
                    what: str) -> list[Problem]:
    problems: list[Problem] = []
    for key, raw in config.items():
        path = f"{where}.{key}"
        if not isinstance(key, str):
            problems.append((path, f"{what} keys must be strings, got {type(key).__name__}"))
            continue
        try:
            value = value_to_str(raw)
        except TypeError as e:
            problems.append((path, str(e)))
            continue
        rule = _lookup(table, key)
        if rule is None:
            problems.append((path, f"unknown {what} key {key!r}{_suggest(key, table)}"))
            continue
        if rule.is_family and not rule.managed and key == rule.prefix:
            problems.append((path, f"expected a name after {rule.prefix!r}, e.g. {rule.prefix}NAME"))
            continue
        if rule.is_family and rule.suffix_check is not None:
            reason = rule.suffix_check(key[len(rule.prefix):])
            if reason:
                problems.append((path, reason))
                continue
        reason = rule.validate(value)
        if reason:
            problems.append((path, reason))
    return problems


def validate_config(config: Mapping[str, object], *, where: str = "config") -> list[Problem]:
    """Check a container's or profile's config map against :data:`CONTAINER_KEYS`.

    Args:
        config: key -> value (strings; bools and numbers are converted as LXD does).
        where: prefix of the returned key paths.

    Returns:
        One ``(key path, reason)`` per problem, e.g.
        ``("config.limits.memory", "invalid size 'lots': ...")``; empty when valid.
    """
    return _validate_table(CONTAINER_KEYS, config, where, "config")


def _normalize_table(table: Mapping[str, Key], config: Mapping[str, object],
                     drop_managed: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, raw in config.items():
        value = value_to_str(raw)
        rule = _lookup(table, str(key))
        if rule is not None and rule.managed and drop_managed:
            continue
        if rule is not None and rule.validate(value) is None:
            value = rule.normalize(value)
        out[str(key)] = value
    return out


def normalize_config(config: Mapping[str, object], *, drop_managed: bool = True) -> dict[str, str]:
    """Canonical form of a config map, for comparing desired and actual config.

    Valid values are normalised (sizes to bytes, booleans to ``true``/``false``, CPU sets to the
    kernel list format); invalid or unknown ones are kept as they are. Server-managed keys
    (``volatile.*``, ``image.*``) are dropped unless ``drop_managed`` is False, so diffs ignore
    them.

    Returns:
        A new dict of strings.
    """
    return _normalize_table(CONTAINER_KEYS, config, drop_managed)


def is_live(key: str) -> bool:
    """Whether a change of ``key`` can be applied to a running container without a restart.

    Unknown keys are not live (a restart is the safe answer).
    """
    rule = lookup(key)
    return bool(rule and rule.live)


def is_managed(key: str) -> bool:
    """Whether ``key`` is server-managed (``volatile.*``, ``image.*``): never in manifests,
    ignored by diffs."""
    rule = lookup(key)
    return bool(rule and rule.managed)


def describe_keys() -> list[tuple[str, str, bool]]:
    """``(key, doc, live)`` for every container config key, sorted by key, for docs and --help."""
    return sorted((k.name, k.doc, k.live) for k in CONTAINER_KEYS.values())


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """Parse ``KEY=VALUE`` strings (the CLI's ``-c``). The value may contain ``=``.

    Returns:
        key -> value, later assignments of the same key win.

    Raises:
        ValidationError: one issue per item without ``=`` or with an empty key.
    """
    out: dict[str, str] = {}
    issues: list[Issue] = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            issues.append(Issue(f"expected KEY=VALUE, got {item!r}"))
        elif not key.strip():
            issues.append(Issue(f"missing key before '=' in {item!r}"))
        else:
            out[key.strip()] = value
    if issues:
        raise ValidationError(issues, hint="use -c KEY=VALUE, e.g. -c limits.memory=256MiB")
    return out


# -- from config to runtime data ----------------------------------------------------------------

def _host_memory() -> int:
    # the one place the model reads the host, and only when a percentage has to be resolved
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise ValueError("MemTotal missing from /proc/meminfo")  # pragma: no cover


def limits_from_config(expanded: Mapping[str, str], *, host_cpus: int | None = None,
                       host_mem: int | None = None) -> Limits:
    """Turn the ``limits.*`` keys of an expanded config into kernel terms (LXD semantics).

    - ``limits.cpu`` count N -> cpuset ``0-(N-1)`` clamped to the host's CPUs; a set is used
      as given (it must exist on the host).
    - ``limits.cpu.allowance`` ``P%`` -> ``cpu_shares = 1024*P/100``; ``Q/P`` -> quota/period.
    - ``limits.memory`` size -> bytes; ``P%`` -> P% of ``host_mem`` (read from /proc/meminfo
      when not given).
    - ``limits.memory.swap`` -> ``memory_swap``; ``limits.processes`` -> ``pids_max``.

    Args:
        expanded: the expanded config (profiles merged); empty values mean unset.
        host_cpus: number of host CPUs (default: ``os.cpu_count()``).
        host_mem: host memory in bytes (default: MemTotal, read only if a percentage is used).

    Returns:
        The :class:`~sysmgr.drivers.runtime.base.Limits`.

    Raises:
        ValidationError: a value is invalid or names CPUs the host does not have.
    """
    issues: list[Issue] = []

    def get(key: str) -> str | None:
        v = expanded.get(key)
        if v is None or v == "":
            return None
        rule = CONTAINER_KEYS[key]
        reason = rule.validate(v)
        if reason:
            issues.append(Issue(reason, path=f"config.{key}"))
            return None
        return v

    cpus = host_cpus if host_cpus is not None else (os.cpu_count() or 1)
    cpuset = None
    if (v := get("limits.cpu")) is not None:
        parsed = parse_cpu(v)
        if isinstance(parsed, int):
            n = max(1, min(parsed, cpus))
            cpuset = "0" if n == 1 else f"0-{n - 1}"
        else:
            missing = [c for c in parsed if c >= cpus]
            if missing:
                issues.append(Issue(
                    f"CPU {missing[0]} does not exist on this host (it has {cpus} CPUs: 0-{cpus - 1})",
                    path="config.limits.cpu"))
            cpuset = format_cpuset(parsed)

    shares = quota = None
    period = 100_000
    if (v := get("limits.cpu.allowance")) is not None:
        kind, parsed_a = parse_cpu_allowance(v)
        if kind == "soft":
            assert isinstance(parsed_a, float)
            shares = max(2, int(1024 * parsed_a / 100))  # the kernel's minimum weight is 2
        else:
            assert isinstance(parsed_a, tuple)
            quota, period = parsed_a

    memory = None
    if (v := get("limits.memory")) is not None:
        parsed_m = parse_memory(v)
        if isinstance(parsed_m, float):
            total = host_mem if host_mem is not None else _host_memory()
            memory = int(total * parsed_m / 100)
        else:
            memory = parsed_m

    swap = True
    if (v := get("limits.memory.swap")) is not None:
        swap = parse_bool(v)

    pids = None
    if (v := get("limits.processes")) is not None:
        pids = int(v.strip())

    if issues:
        raise ValidationError(issues)
    return Limits(cpuset=cpuset, cpu_quota_us=quota, cpu_period_us=period, cpu_shares=shares,
                  memory_bytes=memory, memory_swap=swap, pids_max=pids)


def env_from_config(expanded: Mapping[str, str]) -> dict[str, str]:
    """The ``environment.*`` keys of an expanded config as ``{NAME: value}``."""
    prefix = "environment."
    return {k[len(prefix):]: str(v) for k, v in expanded.items()
            if k.startswith(prefix) and len(k) > len(prefix)}


# -- devices ---------------------------------------------------------------------------------

def _path_key(doc: str) -> Key:
    return Key("path", _check(_abs_path), _norm(normalize_path), doc=doc)


def _name_check(fn: Callable[[str], str | None], what: str) -> Validator:
    def parse(v: str) -> None:
        reason = fn(v)
        if reason:
            raise ValueError(f"invalid {what} {v!r}: {reason}")

    return _check(parse)


def _nictype(value: str) -> None:
    if value != "bridged":
        raise ValueError(f"invalid nictype {value!r}: only 'bridged' is supported")


_MTU = _int_key(minimum=576, maximum=9000, what="MTU")
_DISK_SIZE = _size_key()

DEVICE_TYPES: dict[str, dict[str, Key]] = {
    "disk": _keys(
        _path_key("Mount point inside the container; '/' is the root disk."),
        Key("source", _accept, _same,
            doc="Host path to mount (absolute), or a volume name when pool is set."),
        Key("pool", _name_check(object_name_problem, "pool name"), _same,
            doc="Storage pool (required for the root disk)."),
        Key("size", _DISK_SIZE[0], _DISK_SIZE[1], live=True,
            doc="Quota of the root disk (64MiB, 10GB...)."),
        Key("readonly", _BOOL, _NORM_BOOL, default="false", doc="Mount read-only."),
        Key("required", _BOOL, _NORM_BOOL, default="true",
            doc="Fail to start when the source is missing (false: skip it)."),
    ),
    "nic": _keys(
        Key("name", _name_check(ifname_problem, "interface name"), _same,
            doc="Interface name inside the container (default: the device name)."),
        Key("network", _name_check(object_name_problem, "network name"), _same,
            doc="Managed network to attach to."),
        Key("nictype", _check(_nictype), _same,
            doc="How to attach when no network is given: bridged (to parent)."),
        Key("parent", _name_check(ifname_problem, "interface name"), _same,
            doc="Host bridge for nictype bridged."),
        Key("hwaddr", _check(_mac), _norm(lambda v: v.strip().lower()),
            doc="MAC address (default: generated and kept in volatile state)."),
        Key("ipv4.address", _check(_ipv4), _norm(lambda v: str(ipaddress.IPv4Address(v.strip()))),
            doc="Static IPv4 address on the managed network (default: sysmgr allocates one "
                "from the subnet and keeps it for the container's life)."),
        Key("ipv4.dhcp", _BOOL, _NORM_BOOL, default="false",
            doc="true: the guest's DHCP client configures the nic (it is served the reserved "
                "address); false: sysmgr configures address and default route before init."),
        Key("mtu", _MTU[0], _MTU[1], doc="MTU (576..9000)."),
    ),
    "none": {},
}


def _disk_rules(dev: Mapping[str, str]) -> list[Problem]:
    path = dev.get("path", "")
    if not path:
        return [("path", "a disk device needs a path (the mount point; '/' for the root disk)")]
    out: list[Problem] = []
    is_root = path.startswith("/") and normalize_path(path) == "/"
    if is_root:
        if not dev.get("pool"):
            out.append(("pool", "the root disk (path: /) needs a pool"))
        if dev.get("source"):
            out.append(("source", "the root disk comes from its pool: remove source"))
    else:
        if dev.get("size"):
            out.append(("size", "size is only supported on the root disk (path: /)"))
        src = dev.get("source", "")
        if not src:
            out.append(("source", "a disk device other than the root disk needs a source"))
        elif not dev.get("pool") and not src.startswith("/"):
            out.append(("source", f"invalid source {src!r}: a host path must be absolute"))
    return out


def _nic_rules(dev: Mapping[str, str]) -> list[Problem]:
    if dev.get("network"):
        out = [(k, f"{k} cannot be used with network (the network decides how to attach)")
               for k in ("nictype", "parent") if dev.get(k)]
        return out
    # an unmanaged bridge has no sysmgr address management: the guest configures itself
    unmanaged = [(k, f"{k} needs a managed network (network: NAME); on nictype bridged the "
                     "guest configures its own address") for k in ("ipv4.address", "ipv4.dhcp")
                 if dev.get(k)]
    if unmanaged:
        return unmanaged
    if not dev.get("nictype"):
        return [("network", "a nic needs a network, or nictype: bridged with a parent bridge")]
    if not dev.get("parent"):
        return [("parent", "nictype bridged needs parent (the host bridge)")]
    return []


_DEVICE_RULES: dict[str, Callable[[Mapping[str, str]], list[Problem]]] = {
    "disk": _disk_rules,
    "nic": _nic_rules,
}


def validate_devices(devices: Mapping[str, object], *, where: str = "devices") -> list[Problem]:
    """Check a ``devices`` map against :data:`DEVICE_TYPES` (each device on its own).

    Args:
        devices: device name -> {key: value}, each with a ``type``.
        where: prefix of the returned key paths.

    Returns:
        One ``(key path, reason)`` per problem, e.g. ``("devices.eth0.mtu", "invalid MTU ...")``.
    """
    problems: list[Problem] = []
    for name, dev in devices.items():
        dpath = f"{where}.{name}"
        if not isinstance(name, str):
            problems.append((dpath, f"device names must be strings, got {type(name).__name__}"))
            continue
        reason = device_name_problem(name)
        if reason:
            problems.append((dpath, f"invalid device name {name!r}: {reason}"))
        if not isinstance(dev, Mapping):
            problems.append((dpath, "a device must be a mapping with a type, e.g. {type: disk, ...}"))
            continue
        dtype = dev.get("type")
        if not isinstance(dtype, str) or not dtype:
            problems.append((f"{dpath}.type", "a device needs a type (one of "
                             + ", ".join(sorted(DEVICE_TYPES)) + ")"))
            continue
        table = DEVICE_TYPES.get(dtype)
        if table is None:
            close = difflib.get_close_matches(dtype, list(DEVICE_TYPES), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append((f"{dpath}.type", f"unknown device type {dtype!r}{hint}; known: "
                             + ", ".join(sorted(DEVICE_TYPES))))
            continue
        rest = {k: v for k, v in dev.items() if k != "type"}
        if dtype == "none" and rest:
            for k in rest:
                problems.append((f"{dpath}.{k}", "a device of type none takes no other keys "
                                 "(it only removes an inherited device)"))
            continue
        found = _validate_table(table, rest, dpath, f"{dtype} device")
        problems.extend(found)
        rules = _DEVICE_RULES.get(dtype)
        if rules:
            strs = {str(k): v if isinstance(v, str) else str(v) for k, v in rest.items()}
            # one problem per key: a key already reported invalid is not reported again
            seen = {p for p, _ in found}
            problems.extend((f"{dpath}.{k}", r) for k, r in rules(strs) if f"{dpath}.{k}" not in seen)
    return problems


def normalize_devices(devices: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, str]]:
    """Canonical form of a devices map for diffs (values normalised per device type).

    Returns:
        A new ``{name: {key: str}}``; unknown types and keys are kept as strings.
    """
    out: dict[str, dict[str, str]] = {}
    for name, dev in devices.items():
        dtype = str(dev.get("type", ""))
        table = DEVICE_TYPES.get(dtype, {})
        rest = {k: v for k, v in dev.items() if k != "type"}
        norm = _normalize_table(table, rest, drop_managed=False)
        out[str(name)] = {"type": dtype, **norm}
    return out


def device_change_is_live(old: Mapping[str, str] | None, new: Mapping[str, str] | None) -> bool:
    """Whether changing a device from ``old`` to ``new`` applies to a running container
    without a restart: same type, and every changed key is a live one (the root disk's
    ``size`` is). Adding or removing a device is not live."""
    if old is None or new is None or old.get("type") != new.get("type"):
        return False
    table = DEVICE_TYPES.get(str(new.get("type", "")))
    if table is None:
        return False
    o = normalize_devices({"d": old})["d"]
    n = normalize_devices({"d": new})["d"]
    changed = {k for k in set(o) | set(n) if o.get(k) != n.get(k)}
    return all(k in table and table[k].live for k in changed)


def root_disk_size(devices: Mapping[str, Mapping[str, str]]) -> int | None:
    """Bytes of the root disk's ``size`` in an expanded devices map, None when unset."""
    for dev in devices.values():
        if is_root_disk(dev) and dev.get("size"):
            return parse_size(str(dev["size"]))
    return None


def is_root_disk(device: Mapping[str, str]) -> bool:
    """Whether a device is the root disk (``type: disk`` with ``path: /``)."""
    path = str(device.get("path", ""))
    return device.get("type") == "disk" and path.startswith("/") and normalize_path(path) == "/"


def describe_device_keys() -> list[tuple[str, str, str, bool]]:
    """``(device type, key, doc, live)`` for every device key, sorted, for docs and --help."""
    return sorted((t, k.name, k.doc, k.live) for t, tab in DEVICE_TYPES.items() for k in tab.values())

