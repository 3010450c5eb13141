"""The README's Python API snippet runs as written (against a throw-away root, inside a network
namespace of its own: the snippet makes the default network)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO, bind_netns, remove_networks, requires_root, run_cli

pytestmark = requires_root


def test_readme_python_snippet_runs(sysmgr_root, netns):
    with open(os.path.join(REPO, "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert blocks, "README has a Python example"
    code = blocks[0].replace('"/var/lib/sysmgr"', repr(sysmgr_root))
    bind_netns(sysmgr_root, netns)
    try:
        res = subprocess.run(netns.argv(sys.executable, "-c", code), cwd=REPO, text=True,
                             capture_output=True, env=dict(os.environ, PYTHONPATH=REPO),
                             timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "0 api1" in res.stdout
        assert "Running" in res.stdout
        assert "(eth0)" in res.stdout
        assert "api2 started" in res.stdout and "api3 started" in res.stdout
    finally:
        import json

        out = run_cli("list", "--format", "json", root=sysmgr_root).stdout
        for c in json.loads(out or "[]"):
            run_cli("delete", "--force", c["name"], root=sysmgr_root)
        remove_networks(sysmgr_root)
