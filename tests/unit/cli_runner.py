"""``sysmgr --root ROOT ...`` run in-process through click's runner and the exit-code mapper
(the unit tests' way to drive the CLI without a subprocess)."""

from __future__ import annotations

from click.testing import CliRunner

from sysmgr.cli.main import cli


class CliAt:
    """The CLI on one root; ``ok=True`` asserts a zero exit code."""

    def __init__(self, root: str) -> None:
        self.root = root

    def __call__(self, *args: str, input: str | None = None, ok: bool = False):
        res = CliRunner().invoke(cli, ["--root", self.root, *args], input=input)
        if ok:
            assert res.exit_code == 0, (args, res.output)
        return res
