"""What one CLI invocation works with, without click: the per-run context (the API client,
made on first use), output helpers and multi-name actions.

Click-free on purpose: the hot verbs' fast path (:mod:`sysmgr.cli.fast`) runs on it without
importing click, and the click commands use the same helpers (``_common`` re-exports them),
so both print the same lines. ``sysmgr.api`` is imported on first use of the client.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from sysmgr.errors import SysmgrError, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.api.client import Client

LIST_FORMATS = ("table", "json", "yaml", "csv")  # every listing's --format
DOC_FORMATS = ("yaml", "json")                    # every show's


def make_client(root: str | None, **kwargs: Any) -> "Client":
    """Create the API client for ``root`` (tests replace this function with a stub);
    ``member=NAME``: a client of that member of the root's cluster."""
    from sysmgr.api.client import Client  # on first use: --help and --version need none of it

    return Client(root=root, **kwargs)


class AppContext:
    """What the root command knows for one invocation (click's ``ctx.obj``).

    The :class:`~sysmgr.api.client.Client` is created on first use, so ``--help`` and
    ``--version`` never touch the host root.
    """

    def __init__(self, root: str | None = None, debug: bool = False) -> None:
        self.root = root
        self.debug = debug
        #: lowest exit code an error may map to: ``diff`` raises it to 2 (1 means "changes")
        self.error_floor = 1
        #: ``--target``: a cluster member (the client works on it alone) or ``@group``
        self.target: str | None = None
        #: set by the verbs that handle ``target`` themselves (launch, create and import place
        #: new containers with it, list narrows to it): their client is the whole cluster's
        self.cluster_wide = False
        self._client: Any = None

    def __repr__(self) -> str:
        return f"AppContext(root={self.root!r}, debug={self.debug!r}, target={self.target!r})"

    @property
    def client(self) -> "Client":
        """The API client: of the root (and its whole cluster), or of the ``--target``
        member."""
        if self._client is None:
            target = self.target
            if target and target.startswith("@") and not self.cluster_wide:
                raise ValidationError(f"--target {target}: a group chooses where new "
                                      "containers go (launch, create, import; list narrows "
                                      "to it)", hint="name one member: --target MEMBER")
            if target and not self.cluster_wide:
                self._client = make_client(self.root, member=target)
            else:
                self._client = make_client(self.root)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()


# -- output ---------------------------------------------------------------------------------

def echo(message: str = "", *, err: bool = False) -> None:
    """One line on stdout (or stderr), flushed as click.echo does: progress on stderr and
    results on stdout keep their order when both go to one terminal."""
    stream = sys.stderr if err else sys.stdout
    stream.write(message + "\n")
    stream.flush()


def echo_err(message: str) -> None:
    echo(message, err=True)


def output(text: str) -> None:
    """Print a rendered block; nothing at all when it is empty (a CSV without rows)."""
    if text:
        echo(text)


def confirm(kind: str, name: str, what: str) -> None:
    """The one-line confirmation every state-changing verb prints on stdout, in one form:
    ``<Kind> <name> <what>`` (``Container c1 started``, ``Profile web renamed to www``);
    progress goes to stderr, so scripts can count on stdout."""
    echo(f"{kind} {name} {what}")


# -- KEY=VALUE and several names -------------------------------------------------------------

def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings to a dict (the model's parser; ValidationError on bad items)."""
    if not items:
        return {}
    from sysmgr.model.keys import parse_assignments as parse  # the key tables: only with KEY=VALUE

    return parse(items)


def for_each(names: Iterable[str], action: Callable[[str], object]) -> None:
    """Run ``action`` on every name (like ``lxc start c1 c2``: one failure does not stop the
    others), then raise one error naming every failure."""
    names = list(names)
    failures: list[tuple[str, SysmgrError]] = []
    for name in names:
        try:
            action(name)
        except SysmgrError as e:
            failures.append((name, e))
    raise_failures(failures, len(names))


def raise_failures(failures: Sequence[tuple[str, SysmgrError]], tried: int) -> None:
    """Raise one error naming every failure of a command on ``tried`` names (the error
    itself when there was one name); nothing when none failed."""
    if not failures:
        return
    if tried == 1:
        raise failures[0][1]
    err = SysmgrError("\n".join(f"{n}: {e.message}" for n, e in failures),
                      hint=failures[0][1].hint if len(failures) == 1 else None)
    err.exit_code = max(e.exit_code for _, e in failures)
    raise err
