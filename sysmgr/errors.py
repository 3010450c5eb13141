"""The one exception hierarchy of sysmgr.

Every error a user can see derives from :class:`SysmgrError`. Foreign exceptions
(``OSError`` from the kernel, ``CalledProcessError``, ``yaml.YAMLError``...) are translated
where they enter sysmgr, so the CLI's single exit-code mapper only needs ``exit_code`` and
``hint``. Exit codes: 0 success, 1 failure, 2 bad input.
"""

from __future__ import annotations

from typing import Sequence


class SysmgrError(Exception):
    """Root of every sysmgr error."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Issue:
    """One problem with user input: where it is and what is wrong.

    A plain immutable class rather than a dataclass: this module is on every CLI start-up
    path (``--version`` included) and ``dataclasses`` costs several milliseconds to import.
    """

    __slots__ = ("message", "file", "line", "path")

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 path: str | None = None) -> None:
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "file", file)
        object.__setattr__(self, "line", line)
        object.__setattr__(self, "path", path)  # key path, e.g. "config.limits.memory"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Issue is immutable")

    def __reduce__(self) -> tuple:
        # rebuilt through __init__ (pickle would set the slots, which __setattr__ refuses):
        # an error raised in a helper process (a write as a container's root) comes back
        return (Issue, self._key())

    def _key(self) -> tuple:
        return (self.message, self.file, self.line, self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Issue) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Issue(message={self.message!r}, file={self.file!r}, line={self.line!r}, path={self.path!r})"

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"


class ValidationError(SysmgrError):
    """Bad input: one or more :class:`Issue` s. Nothing has been changed."""

    exit_code = 2

    def __init__(self, issues: Sequence[Issue] | str, *, hint: str | None = None) -> None:
        if isinstance(issues, str):
            issues = [Issue(issues)]
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues), hint=hint)


class NotFound(SysmgrError):
    """A named object (container, profile, image, pool, snapshot) does not exist."""

    exit_code = 2


class Conflict(SysmgrError):
    """The request conflicts with the current state (running, in use, protected...)."""


class AlreadyExists(Conflict):
    """An object with that name already exists."""

    exit_code = 2


class DriverUnavailable(SysmgrError):
    """A driver cannot work on this host (missing kernel feature or tool)."""


class DriverError(SysmgrError):
    """A driver failed while changing the host."""


class CommandFailed(DriverError):
    """A subprocess run through :func:`sysmgr._util.proc.run` failed."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        msg = f"command {self.argv[0]} failed with exit code {returncode}"
        super().__init__(msg + (f": {tail}" if tail else ""))


class PlanStale(SysmgrError):
    """The observed state changed between planning and applying."""


class ApplyError(SysmgrError):
    """An apply failed part-way; completed steps were reverted where possible."""


class Interrupted(SysmgrError):
    """The user interrupted an operation (Ctrl-C) that then undid or settled what it had
    begun; the message says where things stand."""

    exit_code = 130


class RemoteError(SysmgrError):
    """A cluster member could not be reached or failed (exit 1)."""


class MemberUnreachable(RemoteError):
    """A member's address did not answer (refused, timed out, no route): exit 1, like any
    failure of a host that may come back."""


class RemoteRejected(RemoteError, ValidationError):
    """A member was reached but cannot be used as given: wrong user or key, a bad key file,
    a sysmgr there that speaks another RPC version. Bad input (exit 2), nothing changed."""


class HostKeyRejected(RemoteRejected):
    """A member's SSH host key is unknown or does not match the one recorded; ``fingerprint``
    is the key the member showed (``SHA256:...``)."""

    def __init__(self, message: str, *, fingerprint: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.fingerprint = fingerprint


class StoreUnavailable(SysmgrError):
    """The shared cluster store (etcd) does not answer or has no quorum: whatever needs it
    (placement, moves, prunes) is refused before anything changes (exit 1)."""
