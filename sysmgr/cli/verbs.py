"""The bodies of the hot verbs (``exec``, ``shell``, ``start``, ``stop``, ``list``), without
click.

Their click commands (``commands/exec.py``, ``commands/lifecycle.py``) and the fast path
(:mod:`sysmgr.cli.fast`) both call these, so a verb does and prints the same whichever way
its arguments were parsed. Each reaches the containers by name in one call to the API (no
object read first and re-read after); ``start`` and ``stop`` hand all their names to one
(``start_many``, ``stop_many``), which shares the kernel work between them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from sysmgr.cli.app import AppContext, confirm, echo_err, parse_assignments, raise_failures
from sysmgr.errors import SysmgrError


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


def report(outcomes: Sequence[Any], said: Callable[[Any], str]) -> None:
    """Each done container's warnings and confirmation (``said(outcome)``: its verb), then
    one error naming every failure (as :func:`sysmgr.cli.app.for_each`)."""
    failures = []
    for o in outcomes:
        for w in o.warnings:
            echo_err(f"warning: {w}")
        if o.ok:
            confirm("Container", o.name, said(o))
        else:
            err = SysmgrError(o.error, hint=o.hint)
            err.exit_code = o.exit_code
            failures.append((o.name, err))
    raise_failures(failures, len(outcomes))


def start(app: AppContext, names: Sequence[str]) -> None:
    """Start the containers in one API call (one pass over their networks, each whole or
    not at all; one error names every failure)."""
    if names:
        report(app.client.containers.start_many(names), lambda o: "started")


def stop(app: AppContext, names: Sequence[str], *, force: bool = False,
         timeout: float | None = None) -> None:
    """Stop the containers in one API call (every signal sent before any is waited for;
    one error names every failure)."""
    if names:
        report(app.client.containers.stop_many(names, timeout=timeout, force=force),
               lambda o: "stopped" if o.graceful is not False else "stopped (killed)")


def list_(app: AppContext, filters: Sequence[str] = (), columns: str | None = None,
          fast: bool = False, fmt: str = "table") -> int:
    """``list``: the table (or JSON, YAML, CSV) of the containers; the exit code."""
    from sysmgr.cli import listing  # columns, filters, rendering: list's own

    return listing.list_containers(app, filters, columns, fast, fmt)
