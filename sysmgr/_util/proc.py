"""The only way sysmgr runs a subprocess: argv lists, never a shell.

Failures become :class:`sysmgr.errors.CommandFailed`; a missing program becomes
:class:`sysmgr.errors.DriverUnavailable` naming the program. ``subprocess`` is imported when a
program runs: a start asks :func:`which` (lxcfs, apparmor_parser) without running anything.
"""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import subprocess

from sysmgr.errors import CommandFailed, DriverUnavailable


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    check: bool = True,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    stdin: int | IO[bytes] | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` to completion.

    ``capture`` collects stdout/stderr (as bytes) unless explicit ``stdout``/``stderr`` are
    given. With ``check`` a non-zero exit raises :class:`CommandFailed` carrying stderr.
    """
    import subprocess

    argv = [str(a) for a in argv]
    if capture:
        stdout = subprocess.PIPE if stdout is None else stdout
        stderr = subprocess.PIPE if stderr is None else stderr
    try:
        res = subprocess.run(
            argv,
            input=input,
            stdin=stdin if input is None else None,
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            timeout=timeout,
            check=False,
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as e:
        raise DriverUnavailable(
            f"{argv[0]} is not installed", hint=f"install the package that provides {argv[0]}"
        ) from e
    except subprocess.TimeoutExpired as e:
        raise CommandFailed(argv, -1, f"timed out after {timeout}s") from e
    if check and res.returncode != 0:
        err = res.stderr.decode(errors="replace") if isinstance(res.stderr, bytes) else ""
        raise CommandFailed(argv, res.returncode, err)
    return res


def popen(argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Start ``argv`` without waiting (for streaming); the caller owns the process."""
    import subprocess

    argv = [str(a) for a in argv]
    try:
        return subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError as e:
        raise DriverUnavailable(f"{argv[0]} is not installed") from e


def exec_replace(argv: Sequence[str]) -> None:
    """Replace this (forked) process with ``argv``, found on PATH: for a child that set its
    namespaces, cgroups and stdio up first (an OCI runtime started from a mount namespace of
    its own). Returns only by raising :class:`DriverUnavailable` or :class:`CommandFailed`."""
    argv = [str(a) for a in argv]
    prog = argv[0] if "/" in argv[0] else which(argv[0])
    if prog is None:
        raise DriverUnavailable(f"{argv[0]} is not installed")
    try:
        os.execv(prog, argv)
    except OSError as e:
        raise CommandFailed(argv, -1, f"cannot run: {e.strerror}") from e


def which(prog: str) -> str | None:
    """Return the full path of ``prog`` on PATH (plus the sbin dirs), or None."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    for d in path.split(":"):
        cand = os.path.join(d, prog)
        if d and os.access(cand, os.X_OK) and os.path.isfile(cand):
            return cand
    return None
