#!/usr/bin/env python3
"""Network benchmark: prints medians (never asserts) beside LXC's and LXD's figures.

With busybox containers on a managed network (``init`` with a network; the default pool: a
btrfs loop file when the host can run it), it measures:

- through the CLI, as users and scripts meet it (issue 14): ``start`` of a container with a
  nic, ``launch`` (create + start) with a nic, ``--batch`` containers with nics started by
  one ``start`` call, stopped by one ``stop --force`` call and deleted (running) by one
  ``delete --force`` call; LXC's figure beside each, measured in the same run when
  ``lxc-start`` is installed (a veth on the same bridge), else the anchors measured on the
  reference machine (``../shared/anchors/lxc-lxd-baseline.md``), the ratio, and LXD's anchor;
- in-process (API): from ``start`` until the container answers a ping from the host, for a
  nic sysmgr configures before init (static, the default) and a nic left to the guest's DHCP
  client (``ipv4.dhcp: true``); and the network's share of a start (prepare: records,
  network check, resolv.conf; attach: veth, address, route before init runs).

The whole process runs in a network namespace of its own (unshared at start), so the bridge,
dnsmasq and nftables table it makes never touch the host, and everything is removed at the
end. Pings are raw ICMP echo requests every 2 ms; the bridge's ARP retransmit time is lowered
to 10 ms in that namespace, so an address that appears between two ARP attempts (DHCP) is
measured when it answers, not at the kernel's next 1 s retry. The CLI is ``python -m sysmgr``
with this interpreter and environment (``PYTHONPATH`` included); its bytecode is written by a
warm-up call, as an installed package has it.

Run as root: ``.venv/bin/python bench/network.py [--runs N] [--batch N] [--batch-runs N]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import install_mode, median_ms, reap_children, teardown  # noqa: E402

# LXC 5.0.2 (lxcfs hooks cleared) and LXD 5.0.2 on the reference machine (../shared/anchors):
# start -> RUNNING with a veth on a bridge; LXD's start and launch always have one. LXC's
# 100-container figures were taken without a network (net=empty), LXD's with its bridge.
LXC_ANCHOR = {"start": (14.1, "ms"), "batch_start": (1.5, "s"), "batch_stop": (0.9, "s")}
LXD_ANCHOR = {"start": (221.3, "ms", "lxc start"), "launch": (362.3, "ms", "lxc launch"),
              "batch_start": (39.6, "s", "lxc launch x100"),
              "batch_stop": (77.7, "s", "lxc delete -f x100"),
              "batch_delete": (77.7, "s", "lxc delete -f x100")}


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class Pinger:
    """ICMP echo from this namespace: :meth:`wait` returns once ``address`` replied."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setblocking(False)
        self.ident = os.getpid() & 0xFFFF
        self.seq = 0

    def _send(self, address: str) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        head = struct.pack("!BBHHH", 8, 0, 0, self.ident, self.seq)
        body = b"sysmgr-bench"
        packet = struct.pack("!BBHHH", 8, 0, checksum(head + body), self.ident, self.seq) + body
        try:
            self.sock.sendto(packet, (address, 0))
        except OSError:
            pass  # no route yet, or the neighbour failed: try again

    def wait(self, address: str, timeout: float = 10.0, every: float = 0.002) -> float:
        start = time.perf_counter()
        deadline = start + timeout
        while time.perf_counter() < deadline:
            self._send(address)
            end = time.perf_counter() + every
            while (left := end - time.perf_counter()) > 0:
                if not select.select([self.sock], [], [], left)[0]:
                    break
                data, (src, _) = self.sock.recvfrom(2048)
                ihl = (data[0] & 0x0F) * 4
                kind, _, _, ident = struct.unpack("!BBHH", data[ihl:ihl + 6])
                if kind == 0 and ident == self.ident and src == address:
                    return time.perf_counter() - start
        raise TimeoutError(f"{address} did not answer within {timeout:.0f} s")


class Cli:
    """The ``sysmgr`` command on the bench's root, timed (a blocking wait, no timeout:
    ``Popen.wait(timeout=...)`` polls with back-off and skews millisecond figures)."""

    def __init__(self, root: str) -> None:
        # the package's entry point as this interpreter and environment import it (run from
        # "/": the working directory must not shadow the installed package)
        self.argv = [sys.executable, "-m", "sysmgr"]
        self.env = dict(os.environ, SYSMGR_ROOT=root)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its bytecode

    def __call__(self, *args: str) -> float:
        t = time.perf_counter()
        res = subprocess.run([*self.argv, *args], env=self.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, cwd="/")
        took = time.perf_counter() - t
        if res.returncode:
            raise SystemExit(f"bench: sysmgr {' '.join(args[:3])}... failed: {res.stderr.decode()}")
        return took


def in_process(client, runs: int) -> dict[str, list[float]]:
    """Start until ping (static, DHCP), and the network's share of a start (API)."""
    from sysmgr.engine import lifecycle
    from sysmgr.engine.nics import NicEngine

    host = client.host
    client.containers.create("st", "busybox")
    client.containers.create("dh", "busybox", devices={
        "eth0": {"type": "nic", "network": "benchbr0", "name": "eth0", "ipv4.dhcp": "true"}})
    client.containers.create("none", "busybox", devices={"eth0": {"type": "none"}})
    address = {n: client.containers.get(n).nics["eth0"]["ipv4"] for n in ("st", "dh")}
    pinger = Pinger()
    out: dict[str, list[float]] = {k: [] for k in (
        "st", "dh", "start_nic", "start_none", "prepare", "attach")}
    driver = host.network_driver
    attach, prepare = driver.attach, NicEngine.prepare

    def timed_attach(nic, pid):
        t = time.perf_counter()
        attach(nic, pid)
        out["attach"].append(time.perf_counter() - t)

    def timed_prepare(self, starting):
        t = time.perf_counter()
        result = prepare(self, starting)
        out["prepare"].append(time.perf_counter() - t)
        return result

    driver.attach = timed_attach                   # type: ignore[method-assign]
    NicEngine.prepare = timed_prepare              # type: ignore[method-assign]
    try:
        for _ in range(runs):
            for name in ("st", "dh"):
                t = time.perf_counter()
                lifecycle.start(host, name)
                started = time.perf_counter()
                pinger.wait(address[name])
                out[name].append(time.perf_counter() - t)
                if name == "st":
                    out["start_nic"].append(started - t)
                lifecycle.stop(host, name, force=True)
                reap_children()
            t = time.perf_counter()
            lifecycle.start(host, "none")
            out["start_none"].append(time.perf_counter() - t)
            lifecycle.stop(host, "none", force=True)
            reap_children()
    finally:
        NicEngine.prepare = prepare                # type: ignore[method-assign]
        driver.attach = attach                     # type: ignore[method-assign]
    for name in ("st", "dh", "none"):
        client.containers.get(name).delete(force=True)
    return out


def through_cli(client, cli: Cli, runs: int, batch: int, batch_runs: int
                ) -> dict[str, list[float]]:
    """The issue's rows: start and launch with a nic, and a batch in one call each way."""
    cli("create", "busybox", "one")
    client.containers.create("bare", "busybox", devices={"eth0": {"type": "none"}})
    cli("start", "one")                            # the warm-up: bytecode written
    cli("stop", "--force", "one")
    out: dict[str, list[float]] = {k: [] for k in (
        "start", "start_bare", "launch", "batch_start", "batch_stop", "batch_delete")}
    for i in range(runs):
        out["start"].append(cli("start", "one"))
        cli("stop", "--force", "one")
        out["start_bare"].append(cli("start", "bare"))
        cli("stop", "--force", "bare")
        out["launch"].append(cli("launch", "busybox", f"l{i}"))
        cli("delete", "--force", f"l{i}")
        reap_children()
    names = [f"b{i}" for i in range(batch)]
    for _ in range(batch_runs):
        for n in names:                             # created in-process: not what is timed
            client.containers.create(n, "busybox")
        out["batch_start"].append(cli("start", *names))
        out["batch_stop"].append(cli("stop", "--force", *names))
        reap_children()
        cli("start", *names)
        out["batch_delete"].append(cli("delete", "--force", *names))
        reap_children()
        settle_pool(client)
    return out


def settle_pool(client) -> None:
    """Let btrfs finish cleaning the deleted volumes up (it does so in the background, and
    would compete with the next round's starts for the 2 cores)."""
    drv = client.host.pool_driver("default")
    if getattr(drv, "name", "") == "btrfs" and shutil.which("btrfs"):
        subprocess.run(["btrfs", "subvolume", "sync", drv.path], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def lxc_figures(rootfs: str, bridge: str, subnet: str, runs: int, batch: int
                ) -> dict[str, list[float]] | None:
    """LXC on the same bridge, configured as the anchors were (lxcfs hooks cleared, a veth
    with an address): start -> RUNNING, and ``batch`` containers (own rootfs copies) started
    one after the other, then ``lxc-stop -k`` each. None without ``lxc-start``."""
    if not shutil.which("lxc-start") or batch > 100:
        return None
    net = ipaddress.IPv4Network(subnet)
    base = tempfile.mkdtemp(prefix="sysmgr-bench-lxc-")
    names = ["smlxc"] + [f"smlxc{i}" for i in range(batch)]
    try:
        for i, name in enumerate(names):
            os.makedirs(f"{base}/{name}")
            subprocess.run(["cp", "-a", rootfs, f"{base}/{name}/rootfs"], check=True)
            with open(f"{base}/{name}/config", "w") as f:
                f.write("lxc.include = /usr/share/lxc/config/common.conf\n"
                        "lxc.hook.mount =\nlxc.hook.post-stop =\n"
                        f"lxc.uts.name = {name}\nlxc.rootfs.path = dir:{base}/{name}/rootfs\n"
                        f"lxc.net.0.type = veth\nlxc.net.0.link = {bridge}\n"
                        "lxc.net.0.flags = up\nlxc.net.0.name = eth0\n"
                        f"lxc.net.0.ipv4.address = {net.network_address + 150 + i}/{net.prefixlen}\n"
                        "lxc.signal.halt = SIGUSR2\nlxc.tty.max = 0\n"
                        "lxc.apparmor.profile = unconfined\n")

        def run(*argv: str) -> float:
            t = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            return time.perf_counter() - t

        def start(name: str) -> float:
            return run("lxc-start", "-n", name, "-P", base, "-d") + \
                run("lxc-wait", "-n", name, "-P", base, "-s", "RUNNING")

        out: dict[str, list[float]] = {"start": [], "batch_start": [], "batch_stop": []}
        for _ in range(runs):
            out["start"].append(start("smlxc"))
            run("lxc-stop", "-k", "-n", "smlxc", "-P", base)
        out["batch_start"].append(sum(start(n) for n in names[1:]))
        out["batch_stop"].append(sum(run("lxc-stop", "-k", "-n", n, "-P", base)
                                     for n in names[1:]))
        return out
    finally:
        for name in names:
            subprocess.run(["lxc-stop", "-k", "-n", name, "-P", base], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def own_sysfs_net() -> None:
    """/sys shows the interfaces of the namespace that mounted it, not this one's: LXC looks
    for the bridge there ("bridge interface doesn't exist"). In a private mount namespace,
    this network namespace's sysfs view goes over /sys/class/net and /sys/devices/virtual/net
    (for every child: lxc-start and sysmgr alike; nothing is changed for the host)."""
    from sysmgr._util import linux

    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    view = tempfile.mkdtemp(prefix="sysmgr-bench-sysfs-")
    linux.mount("sysfs", view, "sysfs")
    for sub in ("class/net", "devices/virtual/net"):
        linux.mount(os.path.join(view, sub), f"/sys/{sub}", None, linux.MS_BIND)


def row(name: str, samples: list[float], unit: str = "ms", target: str = "",
        lxc: tuple[float, str] | None = None, lxd: tuple[float, str, str] | None = None) -> None:
    """One figure: sysmgr's median (and spread), the target, LXC's and the ratio, LXD's."""
    scale, digits = (1000, 1) if unit == "ms" else (1, 2)
    mine = median_ms(samples) / 1000 * scale
    spread = f"(min {min(samples) * scale:.{digits}f}, max {max(samples) * scale:.{digits}f})"
    text = f"  {name:<56} {mine:8.{digits}f} {unit:<2} {spread:<24} {target:<9}"
    if lxc is not None:
        value, src = lxc
        text += f"  LXC {value:.2f} {unit} ({src}), {mine / value:.2f}x"
    if lxd is not None:
        text += f"  LXD {lxd[0]:g} {lxd[1]} ({lxd[2]})"
    print(text)


def report(args, cli_fig, api_fig, lxc, mode: str, pool: str) -> None:
    def lxc_of(key: str) -> tuple[float, str] | None:
        if lxc is not None:
            unit = LXC_ANCHOR[key][1]
            return median_ms(lxc[key]) / (1 if unit == "ms" else 1000), "this run"
        if key not in LXC_ANCHOR or (key.startswith("batch") and args.batch != 100):
            return None  # the anchors' batches are of 100
        src = "anchor, no nic" if key.startswith("batch_start") else "anchor"
        return LXC_ANCHOR[key][0], src

    lxd = {k: v for k, v in LXD_ANCHOR.items() if not k.startswith("batch") or args.batch == 100}
    print(f"sysmgr network benchmark: medians; own network namespace; pool {pool}; "
          f"the CLI: {mode}")
    print(f"through the CLI ({args.runs} runs; batches of {args.batch}, {args.batch_runs} runs):")
    row("start with a nic", cli_fig["start"], "ms", "<= 80 ms", lxc_of("start"), lxd["start"])
    row("  the same container without its nic", cli_fig["start_bare"], "ms", "<= 60 ms")
    row("launch with a nic (create + start)", cli_fig["launch"], "ms", "<= 100 ms",
        None, lxd["launch"])
    row(f"{args.batch} with nics started by one start", cli_fig["batch_start"], "s", "<= 3 s",
        lxc_of("batch_start"), lxd.get("batch_start"))
    row(f"{args.batch} stopped by one stop --force", cli_fig["batch_stop"], "s", "<= 3 s",
        lxc_of("batch_stop"), None)
    row(f"{args.batch} running deleted by one delete --force", cli_fig["batch_delete"], "s",
        "<= 3 s", None, lxd.get("batch_delete"))
    print(f"in-process (API, {args.runs} runs):")
    row("start -> answers ping, address set before init", api_fig["st"], "ms", "< 100 ms")
    row("start -> answers ping, DHCP in the guest (udhcpc)", api_fig["dh"], "ms", "< 500 ms")
    row("start with one nic", api_fig["start_nic"])
    row("start without a nic", api_fig["start_none"])
    row("  of it: prepare (records, network check, resolv.conf)", api_fig["prepare"])
    row("  of it: attach (veth, address, route; before init runs)", api_fig["attach"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--batch-runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    from sysmgr._util import linux

    linux.unshare(linux.CLONE_NEWNET)       # this process (and dnsmasq) get a namespace of their own
    linux.set_child_subreaper()             # reap the container inits we stop
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    own_sysfs_net()

    import sysmgr

    root = tempfile.mkdtemp(prefix="sysmgr-bench-net-")
    client = sysmgr.Client(root=root)
    try:
        client.init(network="benchbr0")     # the default pool: btrfs on a loop file if possible
        client.images.build("busybox", alias="busybox")
        net = client.networks.get("benchbr0")
        with open(f"/proc/sys/net/ipv4/neigh/{net.bridge}/retrans_time_ms", "w") as f:
            f.write("10")
        pool = client.storage_pools.get("default").driver
        api_fig = in_process(client, args.runs)
        cli_fig = through_cli(client, Cli(root), args.runs, args.batch, args.batch_runs)
        rootfs = client.host.pool_driver("default").container_path("one")
        subnet = str(ipaddress.IPv4Interface(net.config["ipv4.address"]).network)
        lxc = lxc_figures(rootfs, net.bridge, subnet, args.runs, args.batch)
    finally:
        teardown(client)
        client.close()
        shutil.rmtree(root, ignore_errors=True)
    report(args, cli_fig, api_fig, lxc, "; ".join(install_mode(sys.executable)), pool)


if __name__ == "__main__":
    main()
