"""The console script's entry point: the hot verbs' common forms without click.

A daemonless tool pays its imports on every command, and click alone costs ~25 ms on the
reference machine, as much as an ``exec`` may take in all. So the forms scripts run in
loops are parsed here with the standard library and run straight away:

    sysmgr [--root DIR] [--debug] --version
    sysmgr [--root DIR] [--debug] exec NAME [--env K=V] [--cwd DIR] [--user N] [--group N] [-t|-T] [--] CMD...
    sysmgr [--root DIR] [--debug] shell NAME
    sysmgr [--root DIR] [--debug] start NAME...
    sysmgr [--root DIR] [--debug] stop [-f|--force] [--timeout SECONDS] NAME...
    sysmgr [--root DIR] [--debug] list [-c COLUMNS | --fast] [-f FORMAT] [FILTER...]

Anything else (another verb, ``--help``, ``--all``, ``--target``, an option in another
spelling, a value click would refuse) goes to the click command tree (:mod:`.main`), which
also produces every usage error: this parser never refuses anything, it only declines. The
verbs' bodies are shared with their click commands (:mod:`.verbs`) and errors are mapped by
the same :func:`sysmgr.cli.exits.guarded`, so a form prints and exits the same either way;
``tests/unit/test_cli_fast.py`` checks that click parses every accepted form the same.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, NoReturn, Sequence

from sysmgr import __version__
from sysmgr.cli import exits, verbs
from sysmgr.cli.app import LIST_FORMATS, AppContext, echo


class Form:
    """One accepted command line: the verb, the root options and the verb's arguments."""

    __slots__ = ("verb", "root", "debug", "params")

    def __init__(self, verb: str, root: str | None, debug: bool, params: dict[str, Any]) -> None:
        self.verb, self.root, self.debug, self.params = verb, root, debug, params

    def __repr__(self) -> str:
        return f"Form({self.verb!r}, root={self.root!r}, params={self.params!r})"


def parse(argv: Sequence[str]) -> Form | None:
    """The form ``argv`` is, or None when click must handle it. Its ``root`` is None
    without ``--root``: the client's default then (``SYSMGR_ROOT``, else /var/lib/sysmgr)."""
    args = list(argv)
    root: str | None = None
    i = 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        if a == "--root" and i + 1 < len(args):
            root, i = args[i + 1], i + 2
        elif a.startswith("--root="):
            root, i = a[len("--root="):], i + 1
        elif a == "--debug":
            i += 1
        elif a == "--version":  # eager, as click's: whatever follows
            return Form("--version", root, False, {})
        else:
            return None
    if i == len(args) or args[i] not in _PARSERS:
        return None
    params = _PARSERS[args[i]](args[i + 1:])
    if params is None:
        return None
    return Form(args[i], root, exits.debug_wanted(args), params)


def _options(args: list[str], flags: dict[str, str], valued: dict[str, str]
             ) -> tuple[dict[str, Any], list[str]] | None:
    """Split ``args`` into options (``flags``: spelling -> name, set to True; ``valued``:
    ``--opt VALUE`` or ``--opt=VALUE``, collected in lists) and positionals; after ``--``
    everything is positional. None at an option not listed (click's to judge)."""
    opts: dict[str, Any] = {}
    pos: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            pos += args[i + 1:]
            break
        if not a.startswith("-") or a == "-":
            if a == "-":
                return None
            pos.append(a)
        elif a in flags:
            opts[flags[a]] = True
        elif a in valued and i + 1 < len(args):
            opts.setdefault(valued[a], []).append(args[i + 1])
            i += 1
        elif "=" in a and a.split("=", 1)[0] in valued:
            key, value = a.split("=", 1)
            opts.setdefault(valued[key], []).append(value)
        else:
            return None
        i += 1
    return opts, pos


def _exec(args: list[str]) -> dict[str, Any] | None:
    # an unknown option before "--" declines: click would pass it on as part of the command
    split = _options(args, {"-t": "t", "--force-interactive": "t", "-T": "T",
                            "--force-noninteractive": "T"},
                     {"--env": "env", "--cwd": "cwd", "--user": "user", "--group": "group"})
    if split is None:
        return None
    opts, pos = split
    ids = {k: _natural(opts[k][-1]) for k in ("user", "group") if k in opts}
    if len(pos) < 2 or None in ids.values() or ("t" in opts and "T" in opts):
        return None
    return {"name": pos[0], "command": tuple(pos[1:]), "env": tuple(opts.get("env", ())),
            "cwd": opts["cwd"][-1] if "cwd" in opts else None, "user": ids.get("user"),
            "group": ids.get("group"), "tty": True if "t" in opts else False if "T" in opts else None}


def _shell(args: list[str]) -> dict[str, Any] | None:
    return {"name": args[0]} if len(args) == 1 and not args[0].startswith("-") else None


def _start(args: list[str]) -> dict[str, Any] | None:
    if not args or any(a.startswith("-") for a in args):
        return None
    return {"names": tuple(args)}


def _stop(args: list[str]) -> dict[str, Any] | None:
    split = _options(args, {"-f": "force", "--force": "force"}, {"--timeout": "timeout"})
    if split is None or not split[1] or "--" in args:
        return None
    opts, names = split
    timeout = None
    if "timeout" in opts:
        try:
            timeout = float(opts["timeout"][-1])
        except ValueError:
            return None
    return {"names": tuple(names), "force": bool(opts.get("force")), "timeout": timeout}


def _list(args: list[str]) -> dict[str, Any] | None:
    split = _options(args, {"--fast": "fast"}, {"-c": "columns", "--columns": "columns",
                                                 "-f": "fmt", "--format": "fmt"})
    if split is None or "--" in args:
        return None
    opts, filters = split
    fmt = opts["fmt"][-1] if "fmt" in opts else "table"
    if fmt not in LIST_FORMATS or ("fast" in opts and "columns" in opts):
        return None  # click's usage errors
    return {"filters": tuple(filters), "columns": opts["columns"][-1] if "columns" in opts else None,
            "fast": bool(opts.get("fast")), "fmt": fmt}


def _natural(text: str) -> int | None:
    """An id as click's ``IntRange(0)`` takes it; None where click would refuse it."""
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


_PARSERS: dict[str, Callable[[list[str]], dict[str, Any] | None]] = {
    "exec": _exec, "shell": _shell, "start": _start, "stop": _stop, "list": _list, "ls": _list,
}

_VERBS: dict[str, Callable[..., int | None]] = {
    "exec": verbs.exec_command, "shell": verbs.shell, "start": verbs.start, "stop": verbs.stop,
    "list": verbs.list_, "ls": verbs.list_,
}


def run(form: Form) -> int:
    """Run an accepted form; its exit code (errors mapped as the click tree maps them)."""
    if form.verb == "--version":
        echo(f"sysmgr {__version__}")
        return 0
    app = AppContext(form.root, form.debug)

    def command() -> int:
        try:
            return _VERBS[form.verb](app, **form.params) or 0
        finally:
            app.close()

    return exits.guarded(app, command)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point (``sysmgr``, ``python -m sysmgr``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    form = parse(args)
    if form is None:
        from sysmgr.cli.main import main as full  # click and the whole command tree

        full(args)
    code = run(form)
    # Exit now rather than through the interpreter's teardown, which frees every module
    # (~5 ms here) for a process that is ending: stdio is flushed below, the client was
    # closed by run(), and no thread (the exec relay's stdin reader is a daemon) or atexit
    # hook of ours is left to wait for.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
