#!/usr/bin/env python3
"""Network benchmark: prints medians (never asserts).

Measures, with busybox containers on a managed network, over ``--runs`` runs each:
  - time from ``start`` until the container answers a ping from the host: a nic sysmgr
    configures before init (static, the default) and a nic left to the guest's DHCP client
    (``ipv4.dhcp: true``: busybox rcS runs udhcpc, dnsmasq serves the reserved address)
  - per-container network set-up cost: the nic's records, the network health check and
    ``resolv.conf`` before the start (prepare), and the veth + address + route plugged into
    init's namespace before it runs (attach); start with a nic against start without one
The whole process runs in a network namespace of its own (unshared at start), so the bridge,
dnsmasq and nftables table it makes never touch the host, and everything is removed at the
end. Pings are raw ICMP echo requests every 2 ms. Within that namespace the bridge's ARP
retransmit time is lowered to 10 ms, so an address that appears between two ARP attempts
(the DHCP case) is measured when it answers, not at the kernel's next 1 s retry.

Run as root: ``.venv/bin/python bench/network.py [--runs N]``. Targets (issue 4): static
< 100 ms, DHCP < 500 ms on the reference machine.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import socket
import struct
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import median_ms, reap_children  # noqa: E402


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


def row(name: str, samples: list[float], target: str = "") -> None:
    ms = median_ms(samples)
    spread = f"(min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f})"
    print(f"  {name:<52} {ms:8.1f} ms  {spread:<26} {target}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    from sysmgr._util import linux

    linux.unshare(linux.CLONE_NEWNET)       # this process (and dnsmasq) get a namespace of their own
    linux.set_child_subreaper()             # reap the container inits we stop
    os.system("ip link set lo up")

    import sysmgr
    from sysmgr.engine import lifecycle
    from sysmgr.engine.nics import NicEngine

    root = tempfile.mkdtemp(prefix="sysmgr-bench-net-")
    client = sysmgr.Client(root=root)
    host = client.host
    try:
        client.init(storage_driver="dir", network="benchbr0")
        client.images.build("busybox", alias="busybox")
        net = client.networks.get("benchbr0")
        with open(f"/proc/sys/net/ipv4/neigh/{net.bridge}/retrans_time_ms", "w") as f:
            f.write("10")
        client.containers.create("st", "busybox")
        client.containers.create("dh", "busybox", devices={
            "eth0": {"type": "nic", "network": "benchbr0", "name": "eth0", "ipv4.dhcp": "true"}})
        client.containers.create("none", "busybox", devices={"eth0": {"type": "none"}})
        address = {n: client.containers.get(n).nics["eth0"]["ipv4"] for n in ("st", "dh")}
        pinger = Pinger()

        driver = host.network_driver
        attach_times: list[float] = []
        prepare_times: list[float] = []
        attach, prepare = driver.attach, NicEngine.prepare_start

        def timed_attach(nic, pid):
            t = time.perf_counter()
            attach(nic, pid)
            attach_times.append(time.perf_counter() - t)

        def timed_prepare(self, name, rootfs):
            t = time.perf_counter()
            out = prepare(self, name, rootfs)
            if out:  # a container with nics
                prepare_times.append(time.perf_counter() - t)
            return out

        driver.attach = timed_attach                   # type: ignore[method-assign]
        NicEngine.prepare_start = timed_prepare        # type: ignore[method-assign]

        results: dict[str, list[float]] = {"st": [], "dh": [], "start_nic": [], "start_none": []}
        for _ in range(args.runs):
            for name in ("st", "dh"):
                t = time.perf_counter()
                lifecycle.start(host, name)
                started = time.perf_counter()
                pinger.wait(address[name])
                results[name].append(time.perf_counter() - t)
                if name == "st":
                    results["start_nic"].append(started - t)
                lifecycle.stop(host, name, force=True)
                reap_children()
            t = time.perf_counter()
            lifecycle.start(host, "none")
            results["start_none"].append(time.perf_counter() - t)
            lifecycle.stop(host, "none", force=True)
            reap_children()

        print(f"sysmgr network benchmark ({args.runs} runs each, medians; own network namespace)")
        row("start -> answers ping, address set before init", results["st"], "target < 100 ms")
        row("start -> answers ping, DHCP in the guest (udhcpc)", results["dh"], "target < 500 ms")
        print("  per-container network set-up:")
        row("  prepare (records, network check, resolv.conf)", prepare_times)
        row("  attach (veth, address, route; before init runs)", attach_times)
        row("  start with one nic (API call)", results["start_nic"])
        row("  start without a nic (API call)", results["start_none"])
    finally:
        for c in client.containers.all():
            c.delete(force=True)
        prof = client.profiles.get("default")
        prof.devices.pop("eth0", None)
        prof.save()
        for n in client.networks.all():
            n.delete()
        client.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
