"""The ``busybox`` image builder: a ~3 MB system-container rootfs from the host's busybox-static.

The image is ``/bin/busybox`` plus one symlink per applet, busybox init as ``/sbin/init``
with an inittab and an ``rcS`` suited to a container (the runtime already mounted /proc,
/sys and /dev; networking is ``lo`` plus DHCP on every ``eth*`` that has no address yet),
and the few files a login needs. It builds in well under a second and needs no network.
"""

from __future__ import annotations

import gzip
import os
import platform
import re
import shutil
import struct
from typing import ClassVar, Mapping

from sysmgr._util.proc import run
from sysmgr.drivers.images.base import ImageBuilder, ImageMetadata, Progress
from sysmgr.errors import DriverError, DriverUnavailable

BUSYBOX = "/bin/busybox"
_HINT = "apt-get install busybox-static"
_DHCP_EXAMPLE = "/usr/share/doc/busybox-static/examples/udhcp/simple.script"

# busybox init runs the sysinit action, then keeps the respawn line alive, and on the halt
# signal (SIGUSR2 = poweroff) runs the shutdown actions before killing everything.
INITTAB = """\
# /etc/inittab for a busybox system container (written by sysmgr's busybox builder).
::sysinit:/etc/init.d/rcS
# The console is a log file (no tty), so a shell on it would read EOF and respawn in a tight
# loop. /sbin/console-getty behaves like a getty instead: a login shell when the console is a
# real terminal (another runtime may give a pty), otherwise it waits quietly forever.
::respawn:/sbin/console-getty
::ctrlaltdel:/sbin/reboot
# Shutdown: flush, then unmount what rcS mounted (the runtime's mounts go with the mount
# namespace). Never "umount -a -r": remounting the root bind mount's filesystem read-only
# would make the *host's* filesystem read-only.
::shutdown:/bin/sync
::shutdown:/bin/sh -c 'umount /tmp /run 2>/dev/null; true'
"""

RCS = """\
#!/bin/sh
# System initialisation for a busybox system container (written by sysmgr's busybox builder).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

mounted() { grep -q " $1 " /proc/mounts 2>/dev/null; }

mounted /proc || mount -t proc -o nosuid,nodev,noexec proc /proc
mounted /sys || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
[ -d /dev/pts ] || mkdir -p /dev/pts
mounted /dev/pts || mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
mounted /run || mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
mounted /tmp || mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp

[ -s /etc/hostname ] && hostname -F /etc/hostname

ip link set lo up
for path in /sys/class/net/eth*; do
    [ -e "$path" ] || continue
    ifc=${path##*/}
    ip link set "$ifc" up
    # an address may already be configured statically by the host: DHCP only without one
    if ! ip -4 addr show dev "$ifc" | grep -q "inet "; then
        udhcpc -i "$ifc" -n -q -t 3 -T 1 -s /usr/share/udhcpc/default.script \\
            -x "hostname:$(hostname)" >/dev/null 2>&1 &
    fi
done

echo "$(hostname) booted" > /run/booted
"""

CONSOLE_GETTY = """\
#!/bin/sh
# A getty for a console that may be a log file: see /etc/inittab.
if [ -t 0 ]; then
    exec /bin/login -f root
fi
exec /bin/sleep 2147483647
"""

# Fallback when busybox-static's example is missing: configure the lease with `ip`.
DHCP_SCRIPT = """\
#!/bin/sh
# udhcpc event script (minimal equivalent of busybox's examples/udhcp/simple.script)
[ -n "$1" ] || { echo "Error: should be called from udhcpc"; exit 1; }
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set dev "$interface" up
        ;;
    renew|bound)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast $broadcast} dev "$interface"
        if [ -n "$router" ]; then
            while ip route del default dev "$interface" 2>/dev/null; do :; done
            for r in $router; do ip route add default via "$r" dev "$interface"; break; done
        fi
        if [ -n "$dns" ]; then
            : > /etc/resolv.conf
            [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
            for s in $dns; do echo "nameserver $s" >> /etc/resolv.conf; done
        fi
        ;;
esac
exit 0
"""

PROFILE = """\
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\\u@\\h:\\w\\$ '
export HOME="${HOME:-/root}"
umask 022
"""

FILES: dict[str, tuple[str, int]] = {
    "etc/inittab": (INITTAB, 0o644),
    "etc/init.d/rcS": (RCS, 0o755),
    "sbin/console-getty": (CONSOLE_GETTY, 0o755),
    "etc/profile": (PROFILE, 0o644),
    "etc/passwd": ("root:x:0:0:root:/root:/bin/sh\n"
                   "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
                   "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
    "etc/group": ("root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n", 0o644),
    # locked password: root comes in through `sysmgr shell`/exec, never a password
    "etc/shadow": ("root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o640),
    "etc/hostname": ("busybox\n", 0o644),
    "etc/hosts": ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644),
    "etc/resolv.conf": ("", 0o644),
    "etc/fstab": ("# the runtime mounts /proc, /sys and /dev; rcS mounts /run and /tmp\n", 0o644),
    "etc/shells": ("/bin/sh\n/bin/ash\n", 0o644),
}
DIRS: dict[str, int] = {
    "bin": 0o755, "sbin": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "usr/share/udhcpc": 0o755,
    "etc/init.d": 0o755, "root": 0o700, "tmp": 0o1777, "run": 0o755, "var/log": 0o755,
    "var/run": 0o755, "proc": 0o555, "sys": 0o555, "dev": 0o755, "home": 0o755, "mnt": 0o755,
}


def is_static_elf(path: str) -> bool:
    """True for an ELF executable without a PT_INTERP program header (no dynamic loader)."""
    with open(path, "rb") as f:
        ident = f.read(64)
        if len(ident) < 64 or ident[:4] != b"\x7fELF":
            return False
        is64 = ident[4] == 2
        end = "<" if ident[5] == 1 else ">"
        if is64:
            phoff, = struct.unpack_from(end + "Q", ident, 32)
            phentsize, phnum = struct.unpack_from(end + "HH", ident, 54)
        else:
            phoff, = struct.unpack_from(end + "I", ident, 28)
            phentsize, phnum = struct.unpack_from(end + "HH", ident, 42)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, = struct.unpack_from(end + "I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


class BusyboxBuilder(ImageBuilder):
    """Builds the busybox system-container image (no options)."""

    name: ClassVar[str] = "busybox"
    options: ClassVar[Mapping[str, str]] = {}

    def __init__(self, busybox: str = BUSYBOX) -> None:
        self.busybox = busybox

    def _check_binary(self) -> None:
        if not os.path.isfile(self.busybox):
            raise DriverUnavailable(f"{self.busybox} not found: the busybox image needs busybox-static", hint=_HINT)
        try:
            static = is_static_elf(self.busybox)
        except OSError as e:
            raise DriverUnavailable(f"cannot read {self.busybox}: {e.strerror}", hint=_HINT) from e
        if not static:
            raise DriverUnavailable(
                f"{self.busybox} is dynamically linked: the image needs a static busybox", hint=_HINT
            )

    def version(self) -> str:
        out = run([self.busybox], check=False).stdout.decode(errors="replace")
        m = re.search(r"BusyBox v([0-9][^\s]*)", out)
        return m.group(1) if m else "unknown"

    def build(self, dest: str, options: Mapping[str, str], progress: Progress | None = None) -> ImageMetadata:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise DriverError(f"busybox builder: unknown option {unknown[0]!r} (it takes none)")
        self._check_binary()
        say = progress or (lambda _msg: None)
        version = self.version()
        try:
            say(f"installing busybox {version}")
            for d, mode in DIRS.items():
                path = os.path.join(dest, d)
                os.makedirs(path, exist_ok=True)
                os.chmod(path, mode)
            shutil.copyfile(self.busybox, os.path.join(dest, "bin/busybox"))
            os.chmod(os.path.join(dest, "bin/busybox"), 0o755)
            applets = run([self.busybox, "--list-full"]).stdout.decode().split()
            say(f"linking {len(applets)} applets")
            for rel in applets + ["sbin/init"]:
                rel = rel.strip("/")
                link = os.path.join(dest, rel)
                if rel == "bin/busybox" or os.path.lexists(link):
                    continue
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink("/bin/busybox", link)
            say("writing configuration")
            for rel, (text, mode) in FILES.items():
                self._write(dest, rel, text, mode)
            self._write(dest, "usr/share/udhcpc/default.script", self._dhcp_script(), 0o755)
            self._write(dest, "etc/os-release", self._os_release(version), 0o644)
        except OSError as e:
            raise DriverError(f"cannot build the busybox image in {dest}: {e.strerror or e}") from e
        return ImageMetadata(
            properties={
                "os": "busybox",
                "release": version,
                "description": f"BusyBox {version} system container",
                "architecture": platform.machine(),
            },
            init="/sbin/init",
            halt_signal="SIGUSR2",  # busybox init: SIGUSR2 = poweroff (SIGTERM would reboot)
            no_new_privs=False,
        )

    @staticmethod
    def _write(dest: str, rel: str, text: str, mode: int) -> None:
        path = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)

    @staticmethod
    def _dhcp_script() -> str:
        for cand in (_DHCP_EXAMPLE, _DHCP_EXAMPLE + ".gz"):
            try:
                if cand.endswith(".gz"):
                    with gzip.open(cand, "rt") as f:
                        return f.read()
                with open(cand) as f:
                    return f.read()
            except OSError:
                continue
        return DHCP_SCRIPT

    @staticmethod
    def _os_release(version: str) -> str:
        return (
            'NAME="BusyBox"\n'
            "ID=busybox\n"
            f"VERSION_ID={version}\n"
            f'PRETTY_NAME="BusyBox {version}"\n'
            'HOME_URL="https://busybox.net/"\n'
        )
