"""The one place where exceptions become exit codes (without click).

Exit codes (DESIGN.md): 0 success, 1 failure, 2 bad input (validation, not found, usage),
130 interrupted; ``exec``/``shell`` pass the command's own exit code through; ``diff`` uses
1 for "changes pending" and 2 or more for errors. Both front ends run their command through
:func:`guarded`: the click root command (``main.py``, which first turns click's own usage
errors and aborts into codes) and the hot verbs' fast path (``fast.py``).
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable

from sysmgr.cli.app import AppContext, echo
from sysmgr.errors import SysmgrError, ValidationError


def guarded(app: AppContext, command: Callable[[], int]) -> int:
    """Run ``command`` and return its exit code; every exception is mapped here: one line
    (and a hint), a traceback only with ``--debug``."""
    try:
        return command()
    except KeyboardInterrupt:
        echo(err=True)
        return 130
    except SysmgrError as e:
        if app.debug:
            _traceback()
        _report(e)
        return max(e.exit_code, app.error_floor)
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except OSError as e:  # the host refused (permissions, disk full...): not a bug of ours
        if app.debug:
            _traceback()
        where = f": {e.filename}" if e.filename else ""
        echo(f"Error: {e.strerror or e}{where}", err=True)
        if e.errno in (errno.EACCES, errno.EPERM):
            echo("Hint: sysmgr manages containers as root (or pass --root DIR)", err=True)
        return max(1, app.error_floor)
    except Exception as e:  # a bug: one line, the traceback only with --debug
        if app.debug:
            _traceback()
        echo(f"Error: internal error: {type(e).__name__}: {e}", err=True)
        if not app.debug:
            echo("Hint: re-run with --debug to see the traceback", err=True)
        return max(1, app.error_floor)
    finally:
        _flush()


def debug_wanted(args: list[str]) -> bool:
    """``--debug`` before the command, or ``SYSMGR_DEBUG``: known before any parsing, for
    errors while parsing."""
    return "--debug" in args[: _first_command_index(args)] or \
        os.environ.get("SYSMGR_DEBUG", "").lower() in ("1", "true", "yes", "on")


def _report(e: SysmgrError) -> None:
    lines = [str(i) for i in e.issues] if isinstance(e, ValidationError) else e.message.splitlines()
    for line in lines or [type(e).__name__]:
        echo(f"Error: {line}", err=True)
    if e.hint:
        echo(f"Hint: {e.hint}", err=True)


def _first_command_index(args: list[str]) -> int:
    for i, a in enumerate(args):
        if not a.startswith("-") and (i == 0 or args[i - 1] != "--root"):
            return i
    return len(args)


def _traceback() -> None:
    import traceback  # only with --debug

    traceback.print_exc(file=sys.stderr)


def _flush() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    # `sysmgr list | head`: stop writing, and keep the interpreter's final flush quiet
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
