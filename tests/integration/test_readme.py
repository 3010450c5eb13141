"""The README's Python API snippet runs as written (against a throw-away root)."""

from __future__ import annotations

import os
import re

from tests.conftest import REPO, requires_root

pytestmark = requires_root


def test_readme_python_snippet_runs(sysmgr_root, monkeypatch, capsys):
    with open(os.path.join(REPO, "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert blocks, "README has a Python example"
    code = blocks[0].replace('"/var/lib/sysmgr"', repr(sysmgr_root))
    monkeypatch.chdir(REPO)
    import sysmgr

    try:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
        out = capsys.readouterr().out
        assert "0 api1" in out
        assert "Running" in out
    finally:
        with sysmgr.Client(root=sysmgr_root) as client:
            for c in client.containers.all():
                c.delete(force=True)
