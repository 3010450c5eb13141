"""The bodies of the hot verbs (``exec``, ``shell``, ``start``, ``stop``, ``list``), without
click.

Their click commands (``commands/exec.py``, ``commands/lifecycle.py``) and the fast path
(:mod:`sysmgr.cli.fast`) both call these, so a verb does and prints the same whichever way
its arguments were parsed. Each reaches the container by name in one call to the API (no
object read first and re-read after).
"""

from __future__ import annotations

from typing import Sequence

from sysmgr.cli.app import AppContext, confirm, echo_err, for_each, parse_assignments


def exec_command(app: AppContext, name: str, command: Sequence[str], *,
                 env: Sequence[str] = (), cwd: str | None = None, user: int | None = None,
                 group: int | None = None, tty: bool | None = None) -> int:
    """Run ``command`` in container ``name`` with this process's stdio; its exit code.
    ``env``: ``KEY=VALUE`` items; ``tty`` None: a pty when stdin and stdout are terminals."""
    return app.client.containers.interactive(name, list(command),
                                             env=parse_assignments(env) or None, cwd=cwd,
                                             tty=tty, user=user, group=group)


def shell(app: AppContext, name: str) -> int:
    """A login shell in container ``name``; its exit code."""
    return app.client.containers.shell(name)


def start(app: AppContext, names: Sequence[str]) -> None:
    """Start each container (every one tried; one error names every failure)."""
    containers = app.client.containers

    def one(name: str) -> None:
        for w in containers.start(name):
            echo_err(f"warning: {w}")
        confirm("Container", name, "started")

    for_each(names, one)


def stop(app: AppContext, names: Sequence[str], *, force: bool = False,
         timeout: float | None = None) -> None:
    """Stop each container (every one tried; one error names every failure)."""
    containers = app.client.containers

    def one(name: str) -> None:
        graceful = containers.stop(name, timeout=timeout, force=force)
        confirm("Container", name, "stopped" if graceful is not False else "stopped (killed)")

    for_each(names, one)


def list_(app: AppContext, filters: Sequence[str] = (), columns: str | None = None,
          fast: bool = False, fmt: str = "table") -> int:
    """``list``: the table (or JSON, YAML, CSV) of the containers; the exit code."""
    from sysmgr.cli import listing  # columns, filters, rendering: list's own

    return listing.list_containers(app, filters, columns, fast, fmt)
