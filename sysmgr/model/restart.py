"""Restart policy: whether and when a container whose init died is started again.

Model layer, pure: the decisions take the clock (``now``) as an argument and the volatile
record as a mapping. The engine (:mod:`sysmgr.engine.supervise`) observes crashes, writes
what :func:`crash_record` returns and starts the container when :func:`decide` says.

``boot.restart``:

- ``no`` (default): never restarted.
- ``on-failure``: restarted unless init ended cleanly. A system container's clean end is
  init exiting 0, or a ``poweroff``/``halt`` inside it, which the kernel reports as init
  killed by SIGINT. A ``reboot`` inside (init killed by SIGHUP) asks to run again, so it
  restarts; so does an exit sysmgr could not observe (``unknown``: it was not the init's
  reaper), which is far more often a kill than a poweroff.
- ``always``: restarted whatever the exit.

The delay before a restart doubles with each crash of a streak, from 1 s up to
``boot.restart.backoff.max`` (default 300 s). A run that lasted at least
``max(60 s, 10 x the delay it was restarted after)`` ends the streak: its crash counts as
the first again. A container that crashed :data:`LOOP_CRASHES` times within
:data:`LOOP_WINDOW` seconds is reported as crash-looping.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

POLICIES = ("no", "on-failure", "always")
DEFAULT_BACKOFF_MAX = 300
FIRST_BACKOFF = 1.0
STABLE_RUN = 60.0        # seconds of running that end a crash streak (at least)
STABLE_FACTOR = 10       # ... or this many times the delay the run was restarted after
LOOP_CRASHES = 5         # crashes within LOOP_WINDOW that make a container crash-looping
LOOP_WINDOW = 600.0

# the volatile keys (``volatile.restart.*``) this policy keeps with the container
COUNT = "restart.count"          # crashes in the current streak
BACKOFF = "restart.backoff"      # the delay before the pending (or last) restart, seconds
RECENT = "restart.recent"        # times of the crashes within LOOP_WINDOW
LAST_EXIT = "restart.last_exit"  # init's exit code (128+N: killed by signal N) or "unknown"
LAST_CRASH = "restart.last_crash"  # when it was seen dead (epoch seconds)
NEXT = "restart.next"            # when to start it again (epoch seconds); absent: never
ERROR = "restart.error"          # why the last restart failed
PENDING_BOOT = "start.pending"   # a boot start that waits for its dependencies
#: what a start or a stop by hand cancels: a scheduled restart, a deferred boot start
PENDING_KEYS = (NEXT, PENDING_BOOT, ERROR)

#: volatile key: what a running container takes only at its next start (a changed non-live
#: key, a network's MTU): kept until it starts again, so every plan says so
RESTART_NEEDED = "restart.needed"


def parse_policy(value: str) -> str:
    """``boot.restart``: ``no``, ``on-failure`` or ``always`` (any case). YAML reads an
    unquoted ``no`` as false, which arrives here as ``"false"``: it means ``no``.

    Raises:
        ValueError: with a readable reason.
    """
    word = value.strip().lower()
    if word == "false":
        return "no"
    if word not in POLICIES:
        raise ValueError(f"invalid restart policy {value!r}: expected one of {', '.join(POLICIES)}")
    return word


@dataclass(frozen=True)
class Policy:
    mode: str = "no"
    backoff_max: float = DEFAULT_BACKOFF_MAX

    @classmethod
    def from_config(cls, config: Mapping[str, str]) -> "Policy":
        """The policy of an expanded config; invalid values count as unset."""
        from sysmgr.model.keyrules import parse_int  # the key rules: not on a stop's path

        try:
            mode = parse_policy(config.get("boot.restart") or "no")
        except ValueError:
            mode = "no"
        try:
            cap = parse_int(config.get("boot.restart.backoff.max") or str(DEFAULT_BACKOFF_MAX),
                            minimum=1)
        except ValueError:
            cap = DEFAULT_BACKOFF_MAX
        return cls(mode, float(cap))


def exit_kind(code: int | None) -> str:
    """``clean`` (exit 0, poweroff/halt inside), ``reboot`` (reboot inside), ``failure``
    (any other exit, a kill) or ``unknown`` (not observed)."""
    if code is None:
        return "unknown"
    if code in (0, 128 + signal.SIGINT):
        return "clean"
    if code == 128 + signal.SIGHUP:
        return "reboot"
    return "failure"


def describe_exit(code: int | None) -> str:
    """``"exit 3"``, ``"killed by SIGKILL (137)"``, ``"poweroff/halt (SIGINT, 130)"``."""
    if code is None:
        return "unknown"
    if code == 128 + signal.SIGINT:
        return f"poweroff/halt inside (SIGINT, {code})"
    if code == 128 + signal.SIGHUP:
        return f"reboot inside (SIGHUP, {code})"
    if code > 128:
        try:
            return f"killed by {signal.Signals(code - 128).name} ({code})"
        except ValueError:
            return f"killed by signal {code - 128} ({code})"
    return f"exit {code}"


@dataclass(frozen=True)
class RestartState:
    """What :func:`decide` looks at: the end just seen and the streak before it."""

    exit_code: int | None          # None: unknown (or a start that failed)
    ran_for: float | None = None   # how long init ran before it ended (None: unknown)
    count: int = 0                 # crashes earlier in the streak
    backoff: float = 0.0           # the delay the run that ended was restarted after


@dataclass(frozen=True)
class Decision:
    at: float | None   # when to restart (epoch seconds); None: never
    backoff: float     # the delay chosen (0 when never)
    count: int         # crashes in the streak, this one included
    reason: str


def backoff_for(count: int, cap: float) -> float:
    """The delay before the restart after the ``count``-th crash of a streak: 1, 2, 4... s,
    at most ``cap``."""
    return min(cap, FIRST_BACKOFF * 2 ** min(max(count - 1, 0), 62))


def stable(ran_for: float | None, backoff: float) -> bool:
    """Whether a run was long enough to end its crash streak."""
    return ran_for is not None and ran_for >= max(STABLE_RUN, STABLE_FACTOR * backoff)


def decide(policy: Policy, state: RestartState, now: float) -> Decision:
    """When to start the container again after its init ended (or its restart failed)."""
    count = 1 if stable(state.ran_for, state.backoff) else state.count + 1
    kind = exit_kind(state.exit_code)
    if policy.mode == "no":
        return Decision(None, 0.0, count, "boot.restart is no")
    if policy.mode == "on-failure" and kind == "clean":
        return Decision(None, 0.0, count,
                        f"clean end ({describe_exit(state.exit_code)}); boot.restart is on-failure")
    delay = backoff_for(count, policy.backoff_max)
    return Decision(now + delay, delay, count,
                    f"crash {count} in a row: restart in {delay:g}s")


def recent_crashes(times: Sequence[float], now: float) -> list[float]:
    """The crash times within :data:`LOOP_WINDOW` before ``now``."""
    return [t for t in times if now - t <= LOOP_WINDOW]


def crash_looping(times: Sequence[float], now: float) -> bool:
    return len(recent_crashes(times, now)) >= LOOP_CRASHES


def state_of(volatile: Mapping[str, Any], exit_code: int | None, ran_for: float | None
             ) -> RestartState:
    """The :class:`RestartState` of a container's volatile record and the end just seen."""
    return RestartState(exit_code, ran_for, int(volatile.get(COUNT) or 0),
                        float(volatile.get(BACKOFF) or 0.0))


def crash_record(volatile: Mapping[str, Any], decision: Decision, exit_code: int | None,
                 now: float) -> dict[str, Any]:
    """The ``restart.*`` keys to record for a crash seen at ``now``."""
    times = recent_crashes(list(volatile.get(RECENT) or ()), now) + [now]
    out: dict[str, Any] = {COUNT: decision.count, BACKOFF: decision.backoff,
                           RECENT: times[-LOOP_CRASHES:],
                           LAST_EXIT: "unknown" if exit_code is None else exit_code,
                           LAST_CRASH: now}
    if decision.at is not None:
        out[NEXT] = decision.at
    return out


def failed_start_record(decision: Decision, error: str) -> dict[str, Any]:
    """The ``restart.*`` keys to record when a restart's start failed."""
    out: dict[str, Any] = {COUNT: decision.count, BACKOFF: decision.backoff, ERROR: error}
    if decision.at is not None:
        out[NEXT] = decision.at
    return out
