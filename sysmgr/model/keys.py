"""Container (and profile) config keys: their rule table, validation, normalisation, docs, and
their translation into runtime data (:func:`limits_from_config`, :func:`env_from_config`).

Model layer, pure (stdlib only; no host reads: host facts are arguments). The tables are the
single source of truth: manifests and ``-c KEY=VALUE`` are validated against them, diffs
compare values through their normalisers (``64MiB`` == ``67108864``, ``yes`` == ``true``), the
engine asks :func:`is_live` whether a change needs a restart, and the docs and ``--help`` text
come from :func:`describe_keys`. Unknown keys are rejected, except the free-form ``user.*``
family (LXD's rule).

Values are strings, as in LXD; the empty string means "unset" (so a container can unset a key
its profile sets), hence every validator accepts ``""``.

Key families (``user.*``, ``environment.*``...) are table entries whose name ends in ``.*``.
Server-managed families (``volatile.*``, ``image.*``) are rejected in manifests and dropped by
:func:`normalize_config`, so diffs ignore them.

The rule machinery lives in :mod:`sysmgr.model.keyrules` and the device tables in
:mod:`sysmgr.model.device_keys`; the names other code imports from here are re-exported.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

from sysmgr._util import capabilities
from sysmgr._util.sizes import parse_size
from sysmgr.errors import Issue, ValidationError
from sysmgr.model import bootorder, restart, schedule
from sysmgr.model.idmaps import normalize_raw_idmap, parse_raw_idmap
# re-exported: the engine, API, CLI and tests import the device rules from here
from sysmgr.model.device_keys import (  # noqa: F401
    DEVICE_TYPES, describe_device_keys, device_change_is_live, disk_order, is_bind_disk,
    is_root_disk, normalize_devices, root_disk_pool, root_disk_size, validate_devices)
from sysmgr.model.expand import env_from_config  # noqa: F401  (defined there for exec)
# also re-exported from here: Key, Problem, normalize_path, parse_bool, value_to_str
from sysmgr.model.keyrules import (  # noqa: F401
    BOOL, NORM_BOOL, Key, Problem, accept, check, choice_key, int_key, key_table, lookup_key, norm,
    normalize_path, normalize_table, parse_bool, reject, same, size_key, validate_table,
    value_to_str)
# the pool key table lives in pool_keys; re-exported for the importers of these names here
from sysmgr.model.pool_keys import (  # noqa: F401
    POOL_DRIVER_KEYS, describe_pool_keys, normalize_pool_config, validate_pool_config)
from sysmgr.types import Limits

MIN_MEMORY = 4 * 1024 * 1024



# -- value parsers (raise ValueError with the reason) ------------------------------------------

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


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_suffix(name: str) -> str | None:
    if not _ENV_NAME.match(name):
        return (f"invalid environment variable name {name!r}: letters, digits and '_', "
                "not starting with a digit")
    return None


def _norm_caps(value: str) -> str:
    return ",".join(capabilities.parse_names(value))


def parse_raw_apparmor(value: str) -> str:
    """``raw.apparmor``: AppArmor rules added inside the container's profile, one per line,
    stripped, blank lines dropped. A rule's grammar is the parser's to check (at start); here
    the braces must balance, so the text cannot close the profile and add rules outside it."""
    depth = 0
    for n, line in enumerate(value.splitlines(), 1):
        code = line.split("#", 1)[0]  # a comment may say anything
        for ch in code:
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if depth < 0:
                raise ValueError(f"line {n}: '}}' closes a block it did not open")
    if depth:
        raise ValueError("a '{' is never closed")
    if "\0" in value:
        raise ValueError("NUL characters are not allowed")
    return "\n".join(line.strip() for line in value.splitlines() if line.strip())


# -- the container (and profile) config table -------------------------------------------------

_PROCESSES = int_key(minimum=1, what="process limit")
_PRIORITY = int_key(minimum=0, what="priority")
_SECONDS = int_key(minimum=0, what="number of seconds")
_BACKOFF_MAX = int_key(minimum=1, maximum=86400, what="number of seconds")
_IDMAP_SIZE = int_key(minimum=65536, maximum=1 << 31, what="id map size")
_EVACUATE = choice_key("auto", "migrate", "stop", what="evacuation mode")
#: the runtime drivers a container may run under (sysmgr.drivers.registry's, but fake)
RUNTIME_ENGINES = ("native", "crun", "runc")
_ENGINE = choice_key(*RUNTIME_ENGINES, what="runtime engine")
_ROUNDS = int_key(minimum=0, maximum=50, what="number of rounds")
_SIZE = size_key()


def parse_init(value: str) -> list[str]:
    """``boot.init``: an absolute path and its arguments, split as a shell splits words."""
    import shlex

    try:
        argv = shlex.split(value)
    except ValueError as e:
        raise ValueError(f"cannot split {value!r} into words: {e}") from None
    if not argv or not argv[0].startswith("/"):
        raise ValueError("must start with an absolute path (e.g. /sbin/init)")
    return argv


def normalize_init(value: str) -> str:
    import shlex

    return shlex.join(parse_init(value))


CONTAINER_KEYS: dict[str, Key] = key_table(
    Key("limits.cpu", check(parse_cpu), norm(_norm_cpu), live=True,
        doc="CPUs the container may run on: a count (2, pinned to that many CPUs) "
            "or a CPU set (0-1, 0,2, 0-1,3)."),
    Key("limits.cpu.allowance", check(parse_cpu_allowance), norm(_norm_allowance), live=True,
        doc="Share of CPU time: 50% (soft, relative weight under contention) "
            "or 25ms/100ms (hard quota per period)."),
    Key("limits.memory", check(parse_memory), norm(_norm_memory), live=True,
        doc="Memory limit: a size (64MiB, 1GB, bytes) or a percentage of host memory (50%); "
            "at least 4MiB."),
    Key("limits.memory.swap", BOOL, NORM_BOOL, live=True, default="true",
        doc="Whether the container may use swap (false: memory+swap capped at limits.memory)."),
    Key("limits.processes", _PROCESSES[0], _PROCESSES[1], live=True,
        doc="Maximum number of processes (pids.max)."),
    Key("boot.autostart", BOOL, NORM_BOOL, live=True,
        doc="Start the container when the host boots ('sysmgr init'): true always, false "
            "never; unset restores the last state (starts it if it ran when the host went "
            "down)."),
    Key("boot.autostart.priority", _PRIORITY[0], _PRIORITY[1], live=True, default="0",
        doc="Start order at host boot: higher starts first."),
    Key("boot.autostart.delay", _SECONDS[0], _SECONDS[1], live=True, default="0",
        doc="Seconds to wait after starting this container before starting the next one."),
    Key("boot.depends", check(bootorder.parse_depends), norm(bootorder.normalize_depends),
        live=True, listable=True,
        doc="Containers this one starts after, comma-separated (db1,cache1; a YAML list in "
            "manifests): at boot and on a restart it waits until they run. A dependency cycle "
            "is refused."),
    Key("boot.restart", check(restart.parse_policy), norm(restart.parse_policy), live=True,
        default="no",
        doc="Restart the container when its init dies (the controller watches): no, "
            "on-failure (not after a clean poweroff/exit 0) or always; the delay doubles "
            "from 1s with each crash in a row."),
    Key("boot.restart.backoff.max", _BACKOFF_MAX[0], _BACKOFF_MAX[1], live=True,
        default=str(restart.DEFAULT_BACKOFF_MAX),
        doc="Longest delay in seconds before restarting a crashed container."),
    Key("boot.init", check(parse_init), norm(normalize_init), live=False,
        doc="The command the container boots as its init (PID 1), an absolute path with "
            "arguments (e.g. '/bin/busybox init'), instead of the image's (/sbin/init). "
            "For an image that has none, such as most OCI images; a change restarts it."),
    Key("runtime.engine", _ENGINE[0], _ENGINE[1], live=False, default="native",
        doc="The runtime that starts the container: native (sysmgr's own), crun or runc (the "
            "OCI reference runtimes, running the same bundle; installed separately). A "
            "running container keeps the one it started with: a change needs a restart."),
    Key("boot.host_shutdown_timeout", _SECONDS[0], _SECONDS[1], live=True, default="30",
        doc="Seconds to wait for a clean halt before killing the container."),
    Key("cluster.evacuate", _EVACUATE[0], _EVACUATE[1], live=True, default="auto",
        doc="What 'sysmgr cluster evacuate' does with the container: auto (move it to another "
            "member when one can take it, else stop it), migrate (move it; an error when no "
            "member can), stop. 'cluster restore' brings moved containers back."),
    Key("migration.precopy.rounds", _ROUNDS[0], _ROUNDS[1], live=True, default="4",
        doc="A live move copies the running container in rounds, each sending what changed "
            "since the last, before it stops it for the final one: at most this many rounds "
            "after the first full copy (0: stop after the first copy)."),
    Key("migration.precopy.threshold", _SIZE[0], _SIZE[1], live=True,
        default="8MiB",
        doc="A live move stops pre-copying once a round sent at most this much (the final "
            "round, while the container is stopped, then sends about as much again)."),
    Key("security.protection.delete", BOOL, NORM_BOOL, live=True, default="false",
        doc="Refuse to delete the container while true."),
    Key("snapshots.schedule", check(schedule.parse_schedule), norm(str.strip), live=True,
        doc="Automatic snapshots: a cron expression (minute hour day month weekday) or "
            "aliases such as @hourly, @daily, @weekly; taken by 'sysmgr snapshot auto'."),
    Key("snapshots.schedule.stopped", BOOL, NORM_BOOL, live=True, default="false",
        doc="Whether scheduled snapshots are also taken while the container is stopped."),
    Key("snapshots.expiry", check(schedule.parse_expiry), norm(str.strip), live=True,
        doc="Lifetime of new snapshots, e.g. 2w, 3d, 12H, 30M (M minutes, H hours, d days, "
            "w weeks, m months, y years); 'sysmgr snapshot prune' deletes expired ones."),
    Key("security.capabilities.add", check(capabilities.parse_names), norm(_norm_caps),
        live=False,
        doc="Capabilities given back beyond the default set, comma-separated "
            "(e.g. dac_read_search,syslog); by default a container lacks sys_module, sys_rawio, "
            "sys_time, mac_admin, mac_override, dac_read_search, syslog, bpf, perfmon, "
            "audit_control, wake_alarm, block_suspend. A change restarts the container."),
    Key("security.capabilities.drop", check(capabilities.parse_names), norm(_norm_caps),
        live=False,
        doc="Capabilities dropped beyond the defaults, comma-separated (wins over "
            "security.capabilities.add). A change restarts the container."),
    Key("security.privileged", BOOL, NORM_BOOL, live=False, default="false",
        doc="Run without a user namespace: root inside is root on the host (explicit opt-in; "
            "the default runs container root as an unprivileged host uid from /etc/subuid)."),
    Key("security.idmap.isolated", BOOL, NORM_BOOL, live=False, default="false",
        doc="Give the container a host id range of its own instead of the range unprivileged "
            "containers share."),
    Key("security.idmap.size", _IDMAP_SIZE[0], _IDMAP_SIZE[1], live=False, default="65536",
        doc="How many ids the container's map has (at least 65536: images need nobody, 65534)."),
    Key("raw.idmap", check(parse_raw_idmap), norm(normalize_raw_idmap), live=False,
        doc="Extra host ids mapped in, one per line: 'uid|gid|both HOST NS' (ids or A-B "
            "ranges), e.g. 'both 1000 1000'."),
    Key("user.*", accept, same, live=True,
        doc="Free-form user metadata; sysmgr never interprets it."),
    # not live: init's environment only changes at a start, and a declared environment that
    # init does not have would be a silent drift (LXD calls it live because exec sees it)
    Key("environment.*", accept, same, live=False,
        doc="Environment variable NAME for init and for exec; a change restarts the container.",
        suffix_check=_env_suffix),
    Key("volatile.*", reject("volatile keys are managed by sysmgr"), managed=True, live=True,
        doc="Server-generated state (MAC addresses, ids...); read-only, ignored by diff."),
    Key("image.*", reject("image keys are managed by sysmgr (recorded from the image)"),
        managed=True, live=True,
        doc="Properties of the image the container was created from; read-only."),
    Key("raw.apparmor", check(parse_raw_apparmor), norm(parse_raw_apparmor), live=False,
        doc="AppArmor rules appended to the container's profile (where the host has "
            "AppArmor; ignored elsewhere), e.g. 'deny /data/secret/** rw,'. A change takes "
            "effect at the next start."),
    Key("raw.*", reject("raw.* keys are not supported by sysmgr (there is no LXC config "
                         "to pass through)"),
        doc="Not supported."),
)


def lookup(key: str) -> Key | None:
    """The rule for a container/profile config key (exact key or family), or None if unknown."""
    return lookup_key(CONTAINER_KEYS, key)


def validate_config(config: Mapping[str, object], *, where: str = "config") -> list[Problem]:
    """Check a container's or profile's config map against :data:`CONTAINER_KEYS`.

    Args:
        config: key -> value (strings; bools and numbers are converted as LXD does).
        where: prefix of the returned key paths.

    Returns:
        One ``(key path, reason)`` per problem, e.g.
        ``("config.limits.memory", "invalid size 'lots': ...")``; empty when valid.
    """
    return validate_table(CONTAINER_KEYS, config, where, "config")


def normalize_config(config: Mapping[str, object], *, drop_managed: bool = True) -> dict[str, str]:
    """Canonical form of a config map, for comparing desired and actual config.

    Valid values are normalised (sizes to bytes, booleans to ``true``/``false``, CPU sets to the
    kernel list format); invalid or unknown ones are kept as they are. Server-managed keys
    (``volatile.*``, ``image.*``) are dropped unless ``drop_managed`` is False, so diffs ignore
    them.

    Returns:
        A new dict of strings.
    """
    return normalize_table(CONTAINER_KEYS, config, drop_managed)


def is_listable(key: str) -> bool:
    """Whether a manifest may give ``key``'s value as a YAML list (joined with commas)."""
    rule = lookup(key)
    return bool(rule and rule.listable)


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

def limits_from_config(expanded: Mapping[str, str], *, host_cpus: int,
                       host_mem: int | None = None) -> Limits:
    """Turn the ``limits.*`` keys of an expanded config into kernel terms (LXD semantics).

    Pure: the host facts are arguments (the engine reads them with
    :func:`sysmgr._util.hostinfo.host_facts`).

    - ``limits.cpu`` count N -> cpuset ``0-(N-1)`` clamped to the host's CPUs; a set is used
      as given (it must exist on the host).
    - ``limits.cpu.allowance`` ``P%`` -> ``cpu_shares = 1024*P/100``; ``Q/P`` -> quota/period.
    - ``limits.memory`` size -> bytes; ``P%`` -> P% of ``host_mem``.
    - ``limits.memory.swap`` -> ``memory_swap``; ``limits.processes`` -> ``pids_max``.

    Args:
        expanded: the expanded config (profiles merged); empty values mean unset.
        host_cpus: number of host CPUs.
        host_mem: host memory in bytes; needed only when ``limits.memory`` is a percentage.

    Returns:
        The :class:`~sysmgr.types.Limits`.

    Raises:
        ValidationError: a value is invalid or names CPUs the host does not have.
        TypeError: ``limits.memory`` is a percentage and ``host_mem`` was not given.
    """
    issues: list[Issue] = []

    def get(key: str) -> str | None:
        return _limit_value(expanded, key, issues)

    # keys are read in this order so that issues keep the order they always had
    cpuset = None
    if (v := get("limits.cpu")) is not None:
        cpuset = _cpuset(v, host_cpus, issues)
    shares, quota, period = None, None, 100_000
    if (v := get("limits.cpu.allowance")) is not None:
        shares, quota, period = _cpu_time(v)
    memory = None
    if (v := get("limits.memory")) is not None:
        memory = _memory_bytes(v, host_mem)
    swap = parse_bool(v) if (v := get("limits.memory.swap")) is not None else True
    pids = int(v.strip()) if (v := get("limits.processes")) is not None else None

    if issues:
        raise ValidationError(issues)
    return Limits(cpuset=cpuset, cpu_quota_us=quota, cpu_period_us=period, cpu_shares=shares,
                  memory_bytes=memory, memory_swap=swap, pids_max=pids)


def _limit_value(expanded: Mapping[str, str], key: str, issues: list[Issue]) -> str | None:
    """The value of ``key`` when set and valid; an invalid one is added to ``issues``."""
    v = expanded.get(key)
    if v is None or v == "":
        return None
    reason = CONTAINER_KEYS[key].validate(v)
    if reason:
        issues.append(Issue(reason, path=f"config.{key}"))
        return None
    return v


def _cpuset(value: str, host_cpus: int, issues: list[Issue]) -> str:
    """``limits.cpu`` as a kernel CPU list: a count pins CPUs 0..N-1 (clamped to the host),
    a set is kept; CPUs the host lacks are added to ``issues``."""
    parsed = parse_cpu(value)
    if isinstance(parsed, int):
        n = max(1, min(parsed, host_cpus))
        return "0" if n == 1 else f"0-{n - 1}"
    missing = [c for c in parsed if c >= host_cpus]
    if missing:
        issues.append(Issue(
            f"CPU {missing[0]} does not exist on this host "
            f"(it has {host_cpus} CPUs: 0-{host_cpus - 1})",
            path="config.limits.cpu"))
    return format_cpuset(parsed)


def _cpu_time(value: str) -> tuple[int | None, int | None, int]:
    """``limits.cpu.allowance`` as ``(shares, quota_us, period_us)``: a soft limit sets only
    the shares, a hard one quota and period."""
    kind, parsed = parse_cpu_allowance(value)
    if kind == "soft":
        assert isinstance(parsed, float)
        return max(2, int(1024 * parsed / 100)), None, 100_000  # the kernel's minimum weight is 2
    assert isinstance(parsed, tuple)
    return None, parsed[0], parsed[1]


def _memory_bytes(value: str, host_mem: int | None) -> int:
    """``limits.memory`` in bytes; a percentage is of ``host_mem``."""
    parsed = parse_memory(value)
    if not isinstance(parsed, float):
        return parsed
    if host_mem is None:
        # a caller bug, not a user error: the engine always knows the host's memory
        raise TypeError(f"limits_from_config: limits.memory is {value!r}, a percentage of "
                        "host memory: pass host_mem=")
    return int(host_mem * parsed / 100)


def capabilities_from_config(expanded: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``security.capabilities.add`` and ``.drop`` of an expanded config as canonical names
    (``("dac_read_search", "syslog")``); unset keys are empty.

    Raises:
        ValidationError: a value names an unknown capability.
    """
    out: list[tuple[str, ...]] = []
    issues: list[Issue] = []
    for key in ("security.capabilities.add", "security.capabilities.drop"):
        try:
            out.append(capabilities.parse_names(str(expanded.get(key) or "")))
        except ValueError as e:
            issues.append(Issue(str(e), path=f"config.{key}"))
            out.append(())
    if issues:
        raise ValidationError(issues)
    return out[0], out[1]
