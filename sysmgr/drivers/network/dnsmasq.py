"""One dnsmasq per managed network: DHCP with static reservations and DNS for ``NAME.<domain>``.

Rendering is pure (:func:`render_argv`, :func:`render_dhcp_hosts`, :func:`render_hosts`,
golden-tested); :class:`Dnsmasq` supervises the daemon.

**Lifetime.** dnsmasq must outlive the sysmgr command that starts it, so it runs daemonized
(no ``--keep-in-foreground``): its parent exits only once the daemon is listening, with a
non-zero status and a message when it cannot (address in use...), so a plain
:func:`sysmgr._util.proc.run` both starts it and reports failures. The daemon writes its pid
to ``<state_dir>/dnsmasq.pid``. Whether that pid is *our* dnsmasq is decided from
``/proc/PID/cmdline``: it must contain ``--pid-file=<that path>`` (unique per root and
network); it is *current* when the whole command line equals the one rendered now and it
runs in the expected network namespace. :meth:`Dnsmasq.ensure_running` restarts it otherwise
(level-based: a crashed, killed or reconfigured daemon is fixed by the next ensure). Signals
go through a pidfd opened after that check, so a recycled pid is never signalled.

**Files** in the per-network state dir (all root-owned; dnsmasq runs as root, as in
PLATFORM.md, because dropping to an unprivileged user needs a world-traversable state dir)::

    dnsmasq.pid     pid of the daemon
    dhcp-hosts      static reservations "MAC,IP,NAME" (--dhcp-hostsfile, re-read on SIGHUP)
    hosts           DNS names "IP NAME.DOMAIN NAME" (--addn-hosts, re-read on SIGHUP)
    dnsmasq.leases  active leases (--dhcp-leasefile; read by dnsmasq only at start)
    dnsmasq.log     warnings and errors (--log-facility; DHCP chatter is off)
    loaded          pid of the daemon known to have read the host files as they are

**Reloads only on a change.** Every start pushes its network's reservations again (level-based),
so :meth:`Dnsmasq.set_leases` writes and signals only when the files change or the running
daemon is not the one ``loaded`` names: ``loaded`` is removed before the files are written and
written again once the daemon was signalled (or started), so a command killed in between
leaves no false record.

DNS listens on port 53 of the gateway address only (``--bind-interfaces``, so it coexists
with other DNS servers on the host). Names outside the domain go to the host's resolvers
only when the network asks for it (``dns_upstream``); otherwise nothing leaves the host.

Layer: drivers (network).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import select
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sysmgr._util import proc
from sysmgr.drivers.network import _netlink
from sysmgr.drivers.network.base import Lease, NetworkSpec
from sysmgr.errors import CommandFailed, DriverError, DriverUnavailable, ValidationError

PID_FILE = "dnsmasq.pid"
LEASE_FILE = "dnsmasq.leases"
DHCP_HOSTS_FILE = "dhcp-hosts"
HOSTS_FILE = "hosts"
LOG_FILE = "dnsmasq.log"
LOADED_FILE = "loaded"
LOG_ROTATE_BYTES = 1 << 20
LEASE_TIME = "1h"
STOP_TIMEOUT = 5.0
_HINT = "apt-get install dnsmasq-base"


@dataclass(frozen=True)
class DnsmasqConfig:
    """Everything the command line is rendered from."""

    bridge: str
    gateway: str
    prefixlen: int
    domain: str
    state_dir: str                               # per network: <networks>/<name>
    dhcp: bool = True
    dhcp_ranges: tuple[tuple[str, str], ...] = ()
    mtu: int | None = None
    upstream: bool = False                       # forward other names to /etc/resolv.conf
    lease_time: str = LEASE_TIME
    user: str = "root"

    @classmethod
    def for_network(cls, net: NetworkSpec, state_dir: str) -> DnsmasqConfig:
        return cls(bridge=net.ifname, gateway=net.gateway, prefixlen=net.prefixlen,
                   domain=net.dns_domain, state_dir=state_dir, dhcp=net.dhcp,
                   dhcp_ranges=tuple(net.dhcp_ranges), mtu=net.mtu, upstream=net.dns_upstream)

    def path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)


# -- rendering (pure) -------------------------------------------------------------------------

def render_argv(cfg: DnsmasqConfig) -> list[str]:
    """The dnsmasq command line for ``cfg`` (also the identity a running daemon is checked
    against: any change here restarts running daemons on their next ensure)."""
    net = ipaddress.IPv4Interface(f"{cfg.gateway}/{cfg.prefixlen}").network
    argv = [
        "dnsmasq",
        "--conf-file=/dev/null",                 # never read /etc/dnsmasq.conf{,.d}
        f"--pid-file={cfg.path(PID_FILE)}",      # also the marker of our daemon
        f"--user={cfg.user}",
        "--bind-interfaces",                     # coexist with other DNS/DHCP servers
        f"--interface={cfg.bridge}",
        "--except-interface=lo",
        f"--listen-address={cfg.gateway}",
        "--no-hosts",                            # the host's /etc/hosts is not for containers
        f"--addn-hosts={cfg.path(HOSTS_FILE)}",
        f"--domain={cfg.domain}",
        f"--local=/{cfg.domain}/",               # never forward the containers' domain
        "--domain-needed",
        "--bogus-priv",
        f"--log-facility={cfg.path(LOG_FILE)}",
        "--quiet-dhcp",
        f"--dhcp-leasefile={cfg.path(LEASE_FILE)}",
    ]
    if not cfg.upstream:
        argv.append("--no-resolv")               # no upstream: no query leaves the host
    if cfg.dhcp:
        mask = str(net.netmask)
        if cfg.dhcp_ranges:
            argv += [f"--dhcp-range={a},{b},{mask},{cfg.lease_time}" for a, b in cfg.dhcp_ranges]
        else:
            # reservations only: every address comes from sysmgr's IPAM
            argv.append(f"--dhcp-range={net.network_address},static,{mask},{cfg.lease_time}")
        argv += [
            f"--dhcp-hostsfile={cfg.path(DHCP_HOSTS_FILE)}",
            f"--dhcp-option=option:router,{cfg.gateway}",
            f"--dhcp-option=option:dns-server,{cfg.gateway}",
            "--dhcp-authoritative",              # re-lease at once after a restart
            "--dhcp-no-override",
            "--no-ping",                         # no ICMP probe delaying offers
        ]
        if cfg.mtu:
            argv.append(f"--dhcp-option=option:mtu,{cfg.mtu}")
    return argv


def _check_field(value: str, what: str) -> str:
    if not value or any(c in value for c in ", \t\r\n#"):
        raise ValidationError(f"invalid {what} {value!r} for a DHCP/DNS entry")
    return value


@functools.lru_cache(maxsize=8192)
def _address(text: str) -> ipaddress.IPv4Address:
    """``text`` parsed (once: every start renders every reservation of its network)."""
    return ipaddress.IPv4Address(text)


def _sorted(leases: Iterable[Lease]) -> list[Lease]:
    return sorted(leases, key=lambda lz: (
        int(_address(lz.ipv4)) if lz.ipv4 else 1 << 33, lz.mac.lower(), lz.hostname))


def render_dhcp_hosts(leases: Iterable[Lease]) -> str:
    """``--dhcp-hostsfile`` content: one ``MAC,IP,NAME`` (or ``MAC,NAME``) per reservation."""
    lines = ["# static DHCP reservations, written by sysmgr"]
    for lz in _sorted(leases):
        fields = [_check_field(lz.mac.lower(), "MAC address")]
        if lz.ipv4:
            fields.append(str(_address(lz.ipv4)))
        fields.append(_check_field(lz.hostname, "hostname"))
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def render_hosts(leases: Iterable[Lease], domain: str) -> str:
    """``--addn-hosts`` content: ``IP NAME.DOMAIN NAME`` for every lease with an address."""
    lines = ["# container names, written by sysmgr"]
    for lz in _sorted(leases):
        if lz.ipv4:
            name = _check_field(lz.hostname, "hostname")
            lines.append(f"{_address(lz.ipv4)}\t{name}.{domain}\t{name}")
    return "\n".join(lines) + "\n"


def parse_dhcp_hosts(text: str) -> list[Lease]:
    """Reservations from a file written by :func:`render_dhcp_hosts`."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(",")
        if len(parts) == 3:
            out.append(Lease(parts[0].lower(), parts[1], parts[2]))
        elif len(parts) == 2:
            out.append(Lease(parts[0].lower(), None, parts[1]))
    return out


def parse_leases(text: str) -> list[Lease]:
    """Active leases from a dnsmasq lease file (``EXPIRY MAC IP NAME CLIENTID`` lines)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] == "duid":
            continue
        out.append(Lease(parts[1].lower(), parts[2], "" if parts[3] == "*" else parts[3]))
    return out


def leases_to_release(active: Sequence[Lease], old: Sequence[Lease],
                      new: Sequence[Lease]) -> list[Lease]:
    """Active leases that must go when reservations change from ``old`` to ``new``.

    dnsmasq refuses a reserved address while another MAC still holds a lease on it ("not
    using configured address ... because it is leased to ..."): a container recreated with
    a new MAC would get no lease for up to the lease time. Released: a lease on an address
    now reserved for another MAC, a lease of a MAC whose reservation moved to another
    address, and a lease of a MAC whose reservation was removed. Leases of clients sysmgr
    never reserved (dynamic ranges) are kept.
    """
    by_ip = {lz.ipv4: lz for lz in new if lz.ipv4}
    by_mac = {lz.mac.lower(): lz for lz in new}
    old_macs = {lz.mac.lower() for lz in old}
    out = []
    for lz in active:
        mac = lz.mac.lower()
        owner = by_ip.get(lz.ipv4) if lz.ipv4 else None
        mine = by_mac.get(mac)
        taken = owner is not None and owner.mac.lower() != mac
        moved = mine is not None and bool(mine.ipv4) and mine.ipv4 != lz.ipv4
        removed = mine is None and mac in old_macs
        if taken or moved or removed:
            out.append(lz)
    return out


def without_leases(text: str, release: Sequence[Lease]) -> str:
    """Lease-file ``text`` minus the lines of ``release`` (matched by MAC and address)."""
    gone = {(lz.mac.lower(), lz.ipv4) for lz in release}
    keep = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] != "duid" and (parts[1].lower(), parts[2]) in gone:
            continue
        keep.append(line)
    return "".join(line + "\n" for line in keep)


# -- files ------------------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise DriverError(f"cannot read {path}: {e.strerror}") from e


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # dnsmasq never sees a half-written file
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise DriverError(f"cannot write {path}: {e.strerror}") from e


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


# -- supervision ------------------------------------------------------------------------------

class Dnsmasq:
    """The dnsmasq of one network, in namespace ``netns`` (None: the caller's)."""

    def __init__(self, cfg: DnsmasqConfig, netns: str | None = None) -> None:
        self.cfg = cfg
        self.netns = netns
        self.argv = render_argv(cfg)
        self._marker = f"--pid-file={cfg.path(PID_FILE)}"

    # -- observation -------------------------------------------------------------------------
    def _pid_from_file(self) -> int | None:
        text = _read(self.cfg.path(PID_FILE)).strip()
        return int(text) if text.isdigit() else None

    def _ours(self, pid: int) -> bool:
        argv = _cmdline(pid)  # empty for a zombie or a gone process
        return bool(argv) and os.path.basename(argv[0]) == "dnsmasq" and self._marker in argv

    def _current(self, pid: int) -> bool:
        return (_cmdline(pid) == self.argv
                and _netlink.netns_id(_netlink.pid_netns(pid)) == _netlink.netns_id(self.netns))

    def pid(self) -> int | None:
        """Pid of our daemon running with the current configuration, else None."""
        pid = self._pid_from_file()
        if pid is not None and self._ours(pid) and self._current(pid):
            return pid
        return None

    def leases(self) -> list[Lease]:
        return parse_leases(_read(self.cfg.path(LEASE_FILE)))

    def reservations(self) -> list[Lease]:
        return parse_dhcp_hosts(_read(self.cfg.path(DHCP_HOSTS_FILE)))

    # -- control -----------------------------------------------------------------------------
    def ensure_running(self) -> int:
        """Start the daemon unless ours runs with this configuration; return its pid."""
        pid = self.pid()
        if pid is not None:
            return pid
        self.stop()  # ours with another configuration (or namespace): replace it
        return self._start()

    def _prepare_files(self) -> None:
        try:
            os.makedirs(self.cfg.state_dir, mode=0o700, exist_ok=True)
            for name in (HOSTS_FILE, DHCP_HOSTS_FILE, LEASE_FILE):
                path = self.cfg.path(name)
                if not os.path.exists(path):
                    _write_atomic(path, "")
            log = self.cfg.path(LOG_FILE)
            if os.path.exists(log) and os.path.getsize(log) > LOG_ROTATE_BYTES:
                os.replace(log, log + ".1")  # bounded log: one old generation
        except OSError as e:
            raise DriverError(f"cannot prepare {self.cfg.state_dir}: {e.strerror}") from e

    def _start(self) -> int:
        if proc.which("dnsmasq") is None:
            raise DriverUnavailable("dnsmasq is not installed", hint=_HINT)
        self._prepare_files()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.cfg.path(PID_FILE))  # a stale pid must not be mistaken for the new
        try:
            proc.run(_netlink.netns_argv(self.netns, self.argv), timeout=30)
        except CommandFailed as e:
            reason = e.stderr.strip().splitlines()[-1] if e.stderr.strip() else str(e)
            hint = None
            if "in use" in reason:
                hint = f"something else already serves DNS or DHCP on {self.cfg.gateway}"
            raise DriverError(f"cannot start dnsmasq on {self.cfg.bridge}: {reason}",
                              hint=hint) from e
        # the parent exits once the daemon is up and has written its pid file
        pid = self._pid_from_file()
        if pid is None or not self._ours(pid):
            raise DriverError(f"dnsmasq on {self.cfg.bridge} exited right after starting "
                              f"(see {self.cfg.path(LOG_FILE)})")
        self._mark_loaded(pid)  # it read the host files at start
        return pid

    def _mark_loaded(self, pid: int | None) -> None:
        """Record that daemon ``pid`` has read the host files as they are (None: forget)."""
        path = self.cfg.path(LOADED_FILE)
        if pid is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        else:
            _write_atomic(path, f"{pid}\n")

    def _loaded(self, files: dict[str, str]) -> bool:
        """The host files already say ``files`` and the running daemon has read them."""
        if any(_read(self.cfg.path(name)) != text for name, text in files.items()):
            return False
        pid = self.pid()
        return pid is not None and _read(self.cfg.path(LOADED_FILE)).strip() == str(pid)

    def _open(self) -> tuple[int, int] | None:
        """(pid, pidfd) of our daemon, checked after the pidfd exists (no pid-reuse race)."""
        pid = self._pid_from_file()
        if pid is None:
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            return None
        if not self._ours(pid):
            os.close(pidfd)
            return None
        return pid, pidfd

    def reload(self) -> None:
        """Make the daemon re-read its host files (SIGHUP); start it if it is not running."""
        opened = self._open() if self.pid() is not None else None
        if opened is None:
            self.ensure_running()  # a fresh daemon reads the files at start
            return
        pid, pidfd = opened
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGHUP)
        except ProcessLookupError:
            self.ensure_running()  # it exited between the check and the signal
            return
        finally:
            os.close(pidfd)
        self._mark_loaded(pid)

    def stop(self) -> None:
        """Stop our daemon (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`); idempotent."""
        opened = self._open()
        if opened is None:
            return
        pid, pidfd = opened
        try:
            for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
                try:
                    signal.pidfd_send_signal(pidfd, sig)
                except ProcessLookupError:
                    break
                # a pidfd becomes readable when the process exits (zombie or reaped)
                if select.select([pidfd], [], [], wait)[0]:
                    break
            else:
                raise DriverError(f"dnsmasq (pid {pid}) on {self.cfg.bridge} did not exit")
        finally:
            os.close(pidfd)
        # it may be our child (a subreaper such as the test runner adopts daemons)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.cfg.path(PID_FILE))
        self._mark_loaded(None)

    def set_leases(self, leases: Sequence[Lease]) -> None:
        """Write reservations and names, release leases that would block them, reload;
        nothing when the running daemon has read these already."""
        files = {DHCP_HOSTS_FILE: render_dhcp_hosts(leases),
                 HOSTS_FILE: render_hosts(leases, self.cfg.domain)}
        self._prepare_files()
        release = leases_to_release(self.leases(), self.reservations(), list(leases))
        if not release and self._loaded(files):
            return
        self._mark_loaded(None)
        for name, text in files.items():
            _write_atomic(self.cfg.path(name), text)
        if not release:
            self.reload()
            return
        # dnsmasq reads its lease file only at start: stop, edit, start
        self.stop()
        lease_path = self.cfg.path(LEASE_FILE)
        _write_atomic(lease_path, without_leases(_read(lease_path), release))
        self.ensure_running()

    def remove_files(self) -> None:
        """Delete the state files and the directory (after :meth:`stop`)."""
        for name in (PID_FILE, LEASE_FILE, DHCP_HOSTS_FILE, HOSTS_FILE, LOG_FILE,
                     LOG_FILE + ".1", LOADED_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.cfg.path(name))
        try:
            os.rmdir(self.cfg.state_dir)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise DriverError(f"cannot remove {self.cfg.state_dir}: {e.strerror}") from e

