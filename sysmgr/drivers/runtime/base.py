"""The runtime driver interface.

A runtime starts a container's init from a :class:`RuntimeSpec`, reports its state from the
kernel, stops, freezes, applies cgroup limits live and runs processes inside. It keeps no
process of its own per container: what it needs to find a container again is the
:class:`InitRecord` returned by :meth:`Runtime.start`, which the engine stores in state.
"""

from __future__ import annotations

import abc
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping, Sequence, TypeVar

from sysmgr.errors import SysmgrError
from sysmgr.types import IdMap, Limits  # noqa: F401  (re-exported: drivers take them from here)

T = TypeVar("T")

#: The console log, inside the container's root filesystem: under the tmpfs the container
#: gets on /dev, so the file only shows up as the read-only bind on /dev/console. It lives on
#: the container's own volume (never a file of the host's filesystem bound in: escape row 5),
#: moves and goes with it, and outlives the container's stop for ``console --show-log``.
CONSOLE_LOG = "/dev/.sysmgr-console.log"

STOPPED, RUNNING, FROZEN = "STOPPED", "RUNNING", "FROZEN"


@dataclass(frozen=True)
class DiskMount:
    """A host file or directory bound into the container (a ``disk`` device with a source,
    or a custom volume), LXD's options as data.

    ``propagation`` is one of LXD's words (``private``, ``rslave``...); ``shift`` idmaps the
    source through the container's user namespace (its host root's files are root's inside;
    without it they show as nobody). The mount is read-only *and locked* read-only for an
    unprivileged container: its root cannot remount it writable."""

    source: str                 # absolute host path (it exists: the engine checked)
    path: str                   # where inside the container
    readonly: bool = False
    shift: bool = False
    recursive: bool = False
    propagation: str = "private"


@dataclass(frozen=True)
class RuntimeSpec:
    """Everything a runtime needs to start one container."""

    name: str                              # container name; also its hostname
    rootfs: str                            # absolute host path of the root filesystem
    runtime_dir: str                       # bundle dir: config.json, console.log live here
    cgroup: str                            # cgroup path below each hierarchy, e.g. "sysmgr-1a2b3c/web1"
    init: tuple[str, ...] = ("/sbin/init",)
    env: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = Limits()
    halt_signal: int = int(signal.SIGPWR)
    no_new_privs: bool = False
    idmap: IdMap | None = None             # None: privileged (host user ns)
    idmapped_rootfs: bool = True           # with idmap: False when the rootfs was shifted on disk
    cap_add: tuple[str, ...] = ()          # given back beyond the default set (security.capabilities.add)
    cap_drop: tuple[str, ...] = ()         # dropped beyond the default drops (security.capabilities.drop)
    apparmor_profile: str = ""             # a loaded AppArmor profile init and exec run under ("": none)
    disks: tuple[DiskMount, ...] = ()      # binds, in the order they are mounted (LXD's)


@dataclass(frozen=True)
class InitRecord:
    """How to find a started container again: host pid of its init + that pid's start time.

    The start time (field 22 of /proc/PID/stat) guards against pid reuse.
    """

    pid: int
    starttime: int
    cgroup: str
    engine: str = ""            # the runtime driver that started it ("": the host's default)


@dataclass(frozen=True)
class Status:
    state: str                  # STOPPED | RUNNING | FROZEN
    pid: int | None = None      # host pid of init when running


@dataclass(frozen=True)
class Usage:
    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None
    pids: int | None = None
    cpu_ns: int | None = None
    oom_kills: int | None = None   # processes the OOM killer killed in the container
    # the memory it may use: its cgroup limit (the engine fills the host's memory in when
    # the cgroup has none)
    memory_limit_bytes: int | None = None
    swap_bytes: int | None = None
    # memory.stat under LXD's metric names (RSS, Cached, Shmem, Active_anon, ...), bytes
    memory_stat: Mapping[str, int] = field(default_factory=dict)
    # CPU time by CPU and mode: {"0": {"user": ns, "system": ns}} (v2 knows no per-CPU
    # split: one entry "0", as LXD reports it)
    cpu_modes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessSpec:
    """A process to run inside a running container."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    # (rows, columns) of a pty the process gets: set before it starts, so a command that
    # asks at once (``stty size``) never sees 0x0 before the proxy copies the size over
    window: tuple[int, int] | None = None


@dataclass(frozen=True)
class RuntimeInfo:
    """Capability flags: branch on these, never on the driver's name."""

    freeze: bool = True
    user_namespaces: bool = False
    live_limits: bool = True
    network_namespaces: bool = True     # inits get a netns that nics can be plugged into
    apparmor: bool = False              # runs init and exec under RuntimeSpec.apparmor_profile
    live_mounts: bool = False           # mount_disk/unmount_disk on a running container
    resource_views: bool = False        # binds lxcfs's views over /proc (a real kernel's)
    idmapped_mounts: bool = True        # can attach a rootfs or disk through an idmapped mount
    #                                     (else the engine shifts the rootfs's files on disk)
    exec_helper_outside: bool = True    # an exec's host-side helper stays out of the cgroup


class ExecProcess(abc.ABC):
    """A process started inside a container. ``wait`` returns its exit code
    (128+N when killed by signal N, as shells report it)."""

    pid: int

    @abc.abstractmethod
    def wait(self) -> int: ...


class PendingStart(abc.ABC):
    """A start begun with :meth:`Runtime.begin_start`: :meth:`finish` it (or :meth:`abort`
    it), exactly once."""

    @abc.abstractmethod
    def finish(self) -> InitRecord:
        """Complete the start as :meth:`Runtime.start` (``before_go`` runs here)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Give the start up; nothing of it is left behind."""


class _Deferred(PendingStart):
    """A start that does all its work in :meth:`finish` (runtimes with nothing to overlap)."""

    def __init__(self, runtime: Runtime, spec: RuntimeSpec,
                 before_go: Callable[[int], object] | None) -> None:
        self.runtime, self.spec, self.before_go = runtime, spec, before_go

    def finish(self) -> InitRecord:
        return self.runtime.start(self.spec, before_go=self.before_go)

    def abort(self) -> None:
        pass


class Runtime(abc.ABC):
    name: ClassVar[str]
    info: ClassVar[RuntimeInfo]

    @classmethod
    def for_root(cls, state_dir: str) -> Runtime:
        """The driver as one sysmgr root uses it; ``state_dir`` is a directory of that root's
        (made on demand) for a driver that keeps state of its own (an OCI runtime's
        ``--root``), so roots never see each other's containers."""
        return cls()

    def unavailable_reason(self) -> str | None:
        """Why this driver cannot run containers on this host (its program is not
        installed...), or None when it can."""
        return None

    @abc.abstractmethod
    def start(self, spec: RuntimeSpec, *, before_go: Callable[[int], object] | None = None
              ) -> InitRecord:
        """Start init; return once init has been exec'ed (or raise, leaving nothing behind).

        ``before_go`` is called with init's host pid once its namespaces exist and before
        init runs (the engine plugs the container's nics in there)."""

    def begin_start(self, spec: RuntimeSpec, *,
                    before_go: Callable[[int], object] | None = None) -> PendingStart:
        """Begin what :meth:`start` does and return before init runs, so that a caller
        starting several containers can prepare the next one meanwhile (the container's
        set-up goes on in its own processes); its :meth:`PendingStart.finish` completes it.
        The default defers everything to ``finish``."""
        return _Deferred(self, spec, before_go)

    @abc.abstractmethod
    def status(self, rec: InitRecord | None) -> Status:
        """Read the state from the kernel; a dead or reused pid means STOPPED."""

    @abc.abstractmethod
    def stop(self, rec: InitRecord, *, halt_signal: int, timeout: float, force: bool) -> bool:
        """Graceful: halt signal, wait up to ``timeout``, then kill every process of the
        cgroup. ``force``: kill at once. Returns when init is gone and the cgroup removed:
        True when init exited by itself on the halt signal, False when it had to be killed."""

    def stop_many(self, stops: Sequence[tuple[InitRecord, int, float]], *, force: bool
                  ) -> list[bool | SysmgrError]:
        """Stop several containers, each ``(init, halt signal, timeout)`` as :meth:`stop`,
        so that their shutdowns overlap: runtimes send every signal (``force``: every kill)
        before waiting for any, each timeout counting from the call. One result per stop, in
        order: :meth:`stop`'s, or the error that one ran into (the others go on). This
        default stops them one after the other."""
        out: list[bool | SysmgrError] = []
        for rec, halt_signal, timeout in stops:
            try:
                out.append(self.stop(rec, halt_signal=halt_signal, timeout=timeout, force=force))
            except SysmgrError as e:
                out.append(e)
        return out

    def stop_overlapped(self, stops: Sequence[tuple[InitRecord, int, float]], *, force: bool,
                        send: Callable[[InitRecord, int], bool | None],
                        wait: Callable[[InitRecord, float], bool]) -> list[bool | SysmgrError]:
        """:meth:`stop_many` for runtimes that can signal an init and wait for it apart:
        ``send(init, signal)`` (True: sent, False: init was gone, None: could not, its own
        :meth:`stop` says why) for every stop first, then ``wait(init, seconds)`` (whether it
        exited) and :meth:`stop` for what is left, each timeout counting from the call."""
        if len(stops) < 2:
            return Runtime.stop_many(self, stops, force=force)
        start = time.monotonic()
        sent: list[bool | None] = []
        for rec, halt_signal, _ in stops:  # every signal first: the shutdowns overlap
            try:
                sent.append(send(rec, signal.SIGKILL if force else halt_signal))
            except SysmgrError:
                sent.append(None)
        out: list[bool | SysmgrError] = []
        for (rec, halt_signal, timeout), signalled in zip(stops, sent):
            left = max(0.0, start + timeout - time.monotonic())
            try:
                if signalled is None:
                    out.append(self.stop(rec, halt_signal=halt_signal, timeout=left, force=force))
                    continue
                # gone before any signal, or by itself on the halt signal; not by our kill
                exited = not signalled or (not force and wait(rec, left))
                self.stop(rec, halt_signal=halt_signal, timeout=0, force=True)  # what is left
                out.append(exited)
            except SysmgrError as e:
                out.append(e)
        return out

    @abc.abstractmethod
    def freeze(self, rec: InitRecord) -> None: ...

    @abc.abstractmethod
    def unfreeze(self, rec: InitRecord) -> None: ...

    @abc.abstractmethod
    def set_limits(self, cgroup: str, limits: Limits) -> None:
        """Apply limits live to an existing container cgroup."""

    @abc.abstractmethod
    def usage(self, cgroup: str, *, detail: bool = False) -> Usage:
        """The cgroup's figures: memory, peak, processes, CPU time, OOM kills; ``detail``:
        also the memory limit, swap, ``memory.stat`` and CPU time by CPU and mode (``top``,
        ``metrics``: a listing does not read them)."""

    @abc.abstractmethod
    def exec(
        self, rec: InitRecord, proc: ProcessSpec, *, stdin: int, stdout: int, stderr: int
    ) -> ExecProcess:
        """Start ``proc`` inside the container with the given fds as its stdio."""

    @abc.abstractmethod
    def exec_pty(self, rec: InitRecord, proc: ProcessSpec) -> tuple[ExecProcess, int]:
        """Start ``proc`` on a new pty of the container's devpts; return (process, master fd)."""

    @abc.abstractmethod
    def cleanup(self, cgroup: str) -> None:
        """Remove leftovers of a stopped container (cgroups); idempotent."""

    def mount_disk(self, rec: InitRecord, disk: DiskMount) -> None:
        """Mount ``disk`` into the running container (``info.live_mounts``), as a start
        would have: its path made inside if missing, never through a symlink out."""
        raise NotImplementedError(f"runtime {self.name} cannot mount into a running container")

    def unmount_disk(self, rec: InitRecord, path: str) -> None:
        """Unmount what is mounted on ``path`` in the running container (``info.live_mounts``);
        nothing mounted there is success."""
        raise NotImplementedError(f"runtime {self.name} cannot unmount in a running container")

    def watch(self, rec: InitRecord) -> int | None:
        """An fd that becomes readable once init has exited (a zombie counts), for a
        supervisor to poll instead of asking :meth:`status` again and again; the caller
        closes it. None when init is gone already, or when this runtime has no such fd
        (then ask :meth:`status`)."""
        return None

    def reap(self, rec: InitRecord) -> int | None:
        """If init has exited and this process may collect it (its parent or subreaper, and
        nobody did yet): collect it and return its shell-style exit code (128+N when killed
        by signal N). None otherwise: still running, already collected, or not ours."""
        return None

    def as_container_root(self, rec: InitRecord, fn: Callable[[], T]) -> T:
        """Run ``fn`` with the identity of the container's root: for writes into a running
        unprivileged container's files, which the host's root may not create through its
        idmapped root filesystem. Runtimes without user namespaces just call ``fn``."""
        return fn()

    def can_idmap(self, path: str) -> bool:
        """Whether the filesystem holding ``path`` can be attached through an idmapped mount
        (else the engine shifts the container's files on disk). Runtimes that attach no
        idmapped mounts have nothing to ask of it."""
        return True

    def console_log(self, rootfs: str) -> str:
        """What init and its children wrote to ``/dev/console`` (the last start's), read from
        the container's volume without following anything its tenant planted there."""
        from sysmgr._util import safefs  # only `console --show-log` needs it
        from sysmgr.errors import NotFound
        try:
            return safefs.read_file(rootfs, CONSOLE_LOG).decode(errors="replace")
        except NotFound:
            return ""


def exit_code(wait_status: int) -> int:
    """Shell-style exit code from an ``os.waitpid`` status."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def signal_number(name: str | int) -> int:
    """``"SIGRTMIN+3"``, ``"SIGUSR2"``, ``"USR2"``, ``"10"`` -> signal number."""
    if isinstance(name, int):
        return name
    s = str(name).strip().upper()
    if s.isdigit():
        return int(s)
    if not s.startswith("SIG"):
        s = "SIG" + s
    if s.startswith("SIGRTMIN"):
        off = s[len("SIGRTMIN"):]
        return int(signal.SIGRTMIN) + (int(off) if off else 0)
    if s.startswith("SIGRTMAX"):
        off = s[len("SIGRTMAX"):]
        return int(signal.SIGRTMAX) + (int(off) if off else 0)
    try:
        return int(getattr(signal, s))
    except AttributeError:
        raise ValueError(f"unknown signal {name!r}") from None
