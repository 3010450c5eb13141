"""The ``debian`` image builder: a Debian root filesystem with systemd as init, via mmdebstrap.

``mmdebstrap --variant=minbase --include=systemd-sysv,...`` builds the tree (about 20-30 s and
about 210 MB for bookworm). The packages come from the same Debian archive the host's apt uses:
the host's sources for the requested suite are handed to mmdebstrap (its built-in default,
``security.debian.org``, may be a host the host itself never talks to), together with the
host's apt proxy and date-check settings. Then the tree is prepared for life as a container:

* ``/etc/hostname``, ``/etc/hosts``, ``/etc/resolv.conf`` and ``/etc/machine-id`` are reset
  (mmdebstrap copies the build host's ones; systemd fills an empty machine-id at boot);
* units that cannot work in a container are masked: gettys (the container's console is a log
  file, not a tty: agetty would fail and be restarted forever), kernel debug/trace/config
  filesystems and the audit socket (not available in a container's namespaces);
* build-only apt settings are removed again.

Layer: drivers (images). Needs the ``mmdebstrap`` apt package.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import ClassVar, Mapping

from sysmgr._util import proc, safefs
from sysmgr.drivers.images.base import ImageBuilder, ImageMetadata, Progress
from sysmgr.errors import CommandFailed, DriverError, DriverUnavailable, SysmgrError, ValidationError

DEFAULT_RELEASE = "bookworm"
DEFAULT_VARIANT = "minbase"
# Lean but usable: ip, ps/top, ping, TLS roots. systemd-sysv makes /sbin/init systemd.
# dbus: hostnamectl, timedatectl and loginctl talk to their daemons over it
BASE_PACKAGES = ("systemd-sysv", "dbus", "iproute2", "procps", "iputils-ping", "ca-certificates")
VARIANTS = ("essential", "apt", "required", "minbase", "buildd", "important", "debootstrap", "standard")

MASKED_UNITS = (
    "console-getty.service",
    "getty-static.service",
    "serial-getty@.service",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "systemd-journald-audit.socket",
)

HOSTS = """127.0.0.1\tlocalhost
::1\t\tlocalhost ip6-localhost ip6-loopback
ff02::1\t\tip6-allnodes
ff02::2\t\tip6-allrouters
"""

# host apt settings worth passing on: how to reach the archive, and how strictly to check
# Release dates (a snapshot mirror serves Release files whose Valid-Until has passed)
_APTOPT_RE = re.compile(r'^(Acquire::(?:https?|ftp)::Proxy(?:::\S+)?|Acquire::Check-Valid-Until'
                        r'|Acquire::Check-Date) "(.*)";$')
_RELEASE_RE = re.compile(r"^[a-z][a-z0-9.-]{1,40}$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` line of the host's apt configuration."""

    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str | None = None

    def line(self) -> str:
        opts = f"[signed-by={self.signed_by}] " if self.signed_by else ""
        return f"deb {opts}{self.uri} {self.suite} {' '.join(self.components)}"


def _parse_one_line(text: str) -> list[AptSource]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        opts: dict[str, str] = {}
        rest = line[4:].strip()
        if rest.startswith("["):
            inner, _, rest = rest[1:].partition("]")
            for kv in inner.split():
                k, _, v = kv.partition("=")
                opts[k] = v
        parts = rest.split()
        if len(parts) >= 3:
            out.append(AptSource(parts[0], parts[1], tuple(parts[2:]), opts.get("signed-by")))
    return out


def _parse_deb822(text: str) -> list[AptSource]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for raw in para.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key:
                fields[key] += "\n" + raw.strip()
                continue
            k, sep, v = raw.partition(":")
            if sep:
                key = k.strip().lower()
                fields[key] = v.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        signed = fields.get("signed-by")
        if signed and ("\n" in signed or not signed.startswith("/")):
            signed = None  # an inline key cannot be written into a one-line entry
        comps = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                out.append(AptSource(uri, suite, comps, signed))
    return out


def host_apt_sources(etc_apt: str = "/etc/apt") -> list[AptSource]:
    """The ``deb`` entries apt on this host uses (sources.list, *.list, *.sources)."""
    out: list[AptSource] = []
    files = [os.path.join(etc_apt, "sources.list")]
    files += sorted(glob.glob(os.path.join(etc_apt, "sources.list.d", "*.list")))
    files += sorted(glob.glob(os.path.join(etc_apt, "sources.list.d", "*.sources")))
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        out += _parse_deb822(text) if path.endswith(".sources") else _parse_one_line(text)
    return out


def mirrors_for(release: str, sources: list[AptSource]) -> list[str]:
    """mmdebstrap MIRROR arguments reaching ``release`` the way the host reaches Debian.

    The host's entries for ``release``, ``release-updates`` and ``release-security`` when it
    has any; otherwise the host's main Debian archive with ``release``; otherwise nothing
    (mmdebstrap's default).
    """
    wanted = {release, f"{release}-updates", f"{release}-security"}
    same = [s for s in sources if s.suite in wanted and s.components]
    if same:
        return [s.line() for s in same]
    for s in sources:
        if s.uri.rstrip("/").endswith("/debian") and "main" in s.components:
            return [AptSource(s.uri, release, ("main",), s.signed_by).line()]
    return []


def host_aptopts() -> list[str]:
    """The host's apt proxy and date-check settings, as mmdebstrap ``--aptopt`` values."""
    try:
        out = proc.run(["apt-config", "dump"]).stdout.decode(errors="replace")
    except (CommandFailed, DriverUnavailable):
        return []
    opts = []
    for line in out.splitlines():
        m = _APTOPT_RE.match(line.strip())
        if m:
            opts.append(f'{m.group(1)} "{m.group(2)}";')
    return opts


def _architecture(rootfs: str) -> str:
    try:
        arch = safefs.read_file(rootfs, "/var/lib/dpkg/arch").decode().split()
        if arch:
            return arch[0]
    except (SysmgrError, UnicodeDecodeError):
        pass  # fall back to asking the host's dpkg
    try:
        return proc.run(["dpkg", "--print-architecture"]).stdout.decode().strip()
    except (CommandFailed, DriverUnavailable):
        return os.uname().machine


class DebianBuilder(ImageBuilder):
    """Debian + systemd root filesystems built with mmdebstrap."""

    name: ClassVar[str] = "debian"
    options: ClassVar[Mapping[str, str]] = {
        "release": f"Debian suite or codename (default {DEFAULT_RELEASE})",
        "variant": f"mmdebstrap variant (default {DEFAULT_VARIANT})",
        "include": "extra packages, comma-separated (added to " + ",".join(BASE_PACKAGES) + ")",
        "mirror": "Debian mirror URI or a 'deb ...' line (default: the host's apt sources)",
    }

    def _argv(self, dest: str, options: Mapping[str, str]) -> tuple[list[str], str, str]:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValidationError(f"unknown option {unknown[0]!r} for image builder debian "
                                  f"(known: {', '.join(sorted(self.options))})")
        release = options.get("release") or DEFAULT_RELEASE
        variant = options.get("variant") or DEFAULT_VARIANT
        if not _RELEASE_RE.match(release):
            raise ValidationError(f"invalid Debian release {release!r}")
        if variant not in VARIANTS:
            raise ValidationError(f"invalid variant {variant!r} (use one of {', '.join(VARIANTS)})")
        packages = list(BASE_PACKAGES)
        for p in (options.get("include") or "").split(","):
            p = p.strip()
            if not p:
                continue
            if not _PACKAGE_RE.match(p):
                raise ValidationError(f"invalid package name {p!r} in include")
            if p not in packages:
                packages.append(p)
        mirror = (options.get("mirror") or "").strip()
        if mirror and "://" not in mirror:
            raise ValidationError(f"invalid mirror {mirror!r}: expected a URI such as "
                                  "http://deb.debian.org/debian or a 'deb ...' line")
        mirrors = [mirror] if mirror else mirrors_for(release, host_apt_sources())
        argv = ["mmdebstrap", f"--variant={variant}", f"--include={','.join(packages)}"]
        argv += [f"--aptopt={o}" for o in host_aptopts()]
        argv += [release, dest, *mirrors]
        return argv, release, variant

    def build(self, dest: str, options: Mapping[str, str], progress: Progress | None = None) -> ImageMetadata:
        """Fill the empty directory ``dest``; on failure its content is the caller's to remove."""
        if proc.which("mmdebstrap") is None:
            raise DriverUnavailable("mmdebstrap is not installed (needed to build Debian images)",
                                    hint="apt-get install mmdebstrap")
        if not os.path.isdir(dest) or os.listdir(dest):
            raise DriverError(f"image build destination {dest} must be an empty directory")
        argv, release, variant = self._argv(dest, options)
        say = progress or (lambda _line: None)
        say(f"building Debian {release} ({variant}) with mmdebstrap")
        self._run(argv, say)
        say("preparing the root filesystem for a container")
        self._prepare(dest)
        return ImageMetadata(
            properties={
                "os": "debian",
                "release": release,
                "variant": variant,
                "architecture": _architecture(dest),
                "description": f"Debian {release} (systemd)",
                "serial": time.strftime("%Y%m%d_%H%M", time.gmtime()),
            },
            init="/sbin/init",
            halt_signal="SIGRTMIN+3",
            no_new_privs=False,
        )

    @staticmethod
    def _run(argv: list[str], say: Progress) -> None:
        """Run mmdebstrap, passing each status line (it writes them to stderr) to ``say``."""
        tail: collections.deque[str] = collections.deque(maxlen=30)
        p = proc.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
        try:
            assert p.stderr is not None
            for raw in p.stderr:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    tail.append(line)
                    say(line)
            rc = p.wait()
        except BaseException:
            p.kill()
            p.wait()
            raise
        finally:
            if p.stderr is not None:
                p.stderr.close()
        if rc != 0:
            raise CommandFailed(argv, rc, "\n".join(tail))

    @staticmethod
    def _prepare(root: str) -> None:
        """Reset host-specific files and mask units that cannot work in a container."""
        safefs.write_file(root, "/etc/hostname", b"localhost\n")
        safefs.write_file(root, "/etc/hosts", HOSTS.encode())
        safefs.write_file(root, "/etc/machine-id", b"", 0o444)
        safefs.unlink(root, "/var/lib/dbus/machine-id")
        safefs.write_file(root, "/etc/resolv.conf", b"")
        # C.UTF-8 is built into the C library: a locale that needs no locales package
        safefs.write_file(root, "/etc/default/locale", b"LANG=C.UTF-8\n")
        safefs.unlink(root, "/etc/apt/apt.conf.d/99mmdebstrap")  # build-host settings only
        for unit in MASKED_UNITS:
            safefs.symlink(root, f"/etc/systemd/system/{unit}", "/dev/null")
