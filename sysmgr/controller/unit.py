"""The systemd unit that runs a root's controller (``sysmgr controller install-unit``).

``KillMode=process``: stopping the service signals the controller alone (it finishes its
pass and exits); containers live in cgroups of their own and keep running, as they do when
a person's ``sysmgr`` command exits. ``Restart=on-failure`` brings a crashed controller
back; its first pass converges whatever was half-done.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Sequence

UNIT_DIR = "/etc/systemd/system"


def unit_name(root: str) -> str:
    """``sysmgr-controller.service`` for the default root, else one named after the root."""
    if os.path.abspath(root) == "/var/lib/sysmgr":
        return "sysmgr-controller.service"
    tag = "".join(c if c.isalnum() else "-" for c in os.path.abspath(root).strip("/"))
    return f"sysmgr-controller-{tag}.service"


def unit_text(root: str, sources: Sequence[str], *, interval: str | None = None,
              self_heal: bool = True, command: Sequence[str] | None = None) -> str:
    argv = list(command or [sys.executable, "-m", "sysmgr"])
    argv += ["--root", os.path.abspath(root), "controller", "run"]
    for s in sources:
        argv += ["--source", s]
    if interval:
        argv += ["--interval", interval]
    if not self_heal:
        argv.append("--no-self-heal")
    return f"""\
[Unit]
Description=sysmgr controller for {os.path.abspath(root)}
Documentation=man:sysmgr(1)
After=network-online.target local-fs.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={shlex.join(argv)}
ExecReload=/bin/kill -HUP $MAINPID
KillMode=process
TimeoutStopSec=300
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""
