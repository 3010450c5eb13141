"""``sysmgr shell`` with no name: the interactive admin shell (and its scripted form).

Every CLI verb works here without the ``sysmgr`` prefix: a line is split as a POSIX shell
would (``shlex``) and handed to the same click command tree the CLI runs
(:func:`sysmgr.cli.main.run`), whose one exit mapper prints errors as the CLI does; an error
never ends the shell. Its own words are few: ``help [VERB]``, ``use [MEMBER]`` (the cluster
member later verbs act on, as ``--target``), ``exit``. Completion is the CLI's
(:mod:`sysmgr.cli.completion`) over a cache of live names that a background thread refreshes
(:class:`CachedSource`), so a keystroke never waits for the host.

With stdin not a terminal (``sysmgr shell < file``) the lines are run in order and the shell
exits at the first failure with its exit code (``--keep-going``: runs them all, then exits
with the first failure's code). prompt_toolkit is imported only for the interactive prompt.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from sysmgr.cli import completion
from sysmgr.cli import app as cliapp
from sysmgr.cli.app import AppContext, echo
from sysmgr.errors import SysmgrError
from sysmgr.layout import default_root

if TYPE_CHECKING:  # pragma: no cover
    import click

#: the shell's own words, with what they do (completed and listed by ``help``)
BUILTINS: dict[str, str] = {
    "help": "help [VERB...]: the verbs, or one verb's help",
    "use": "use [MEMBER]: act on a cluster member (as --target); alone: back to the host",
    "exit": "exit (or Ctrl-D): leave the shell",
    "quit": "quit: leave the shell",
}

#: the kinds of name read ahead of the first TAB (snapshots and volumes: on demand)
WARM_KINDS = ("container", "image", "profile", "network", "pool", "member")


class CachedSource(completion.NameSource):
    """Live names served from memory at once; a background thread re-reads what is older
    than ``ttl`` seconds (or asked for the first time), and the containers' states for the
    toolbar. A TAB before the first read finds nothing rather than waiting."""

    detailed = True

    def __init__(self, root: str | None, member: str | None = None, ttl: float = 3.0) -> None:
        super().__init__(root, member)
        self.ttl = ttl
        self.cache: dict[tuple[str, str | None], tuple[float, list[tuple[str, str]]]] = {}
        self.lock = threading.Lock()
        self.wanted: set[tuple[str, str | None]] = set()
        self.worker: threading.Thread | None = None
        self.refreshed = 0.0
        #: the controller's state (``controller_state``), read with the names
        self.controller = ""
        #: called (in the worker) after a read, e.g. to redraw the toolbar
        self.on_update: Callable[[], None] = lambda: None

    def names(self, kind: str, owner: str | None = None) -> list[tuple[str, str]]:
        key = (kind, owner)
        with self.lock:
            hit = self.cache.get(key)
        if hit is None or time.monotonic() - hit[0] > self.ttl:
            self.refresh([key])
        return hit[1] if hit else []

    def refresh(self, keys: Iterable[tuple[str, str | None]] | None = None) -> None:
        """Re-read ``keys`` (default: every kind read so far and the usual ones) in the
        background; returns at once."""
        with self.lock:
            if keys is None:
                self.refreshed = time.monotonic()
            self.wanted.update(keys if keys is not None else
                               {*self.cache, *((k, None) for k in WARM_KINDS)})
            if self.worker is not None and self.worker.is_alive():
                return
            self.worker = threading.Thread(target=self.work, name="sysmgr-names", daemon=True)
            self.worker.start()

    def work(self) -> None:
        while True:
            with self.lock:
                if not self.wanted:
                    self.worker = None
                    return
                keys, self.wanted = sorted(self.wanted, key=str), set()
            for kind, owner in keys:
                found = super().names(kind, owner)
                with self.lock:
                    self.cache[(kind, owner)] = (time.monotonic(), found)
            self.controller = "" if self.member else controller_state(self.root or "")
            self.on_update()

    def refresh_if_stale(self) -> None:
        """:meth:`refresh` everything when the last full read is older than ``ttl``."""
        if time.monotonic() - self.refreshed > self.ttl:
            self.refresh()

    def wait(self, timeout: float = 10.0) -> None:
        """Block until the worker is idle (tests and benchmarks; the prompt never waits)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                worker = self.worker
            if worker is None:
                return
            worker.join(max(0.0, end - time.monotonic()))

    def cached(self, kind: str) -> list[tuple[str, str]]:
        """What is in memory for ``kind`` (no read)."""
        with self.lock:
            hit = self.cache.get((kind, None))
        return hit[1] if hit else []


class Session:
    """One admin shell: the root, the member in use, and how a line is run."""

    def __init__(self, root: str | None, debug: bool = False, interactive: bool = True
                 ) -> None:
        self.root = root or default_root()
        self.debug = debug
        #: a person at the prompt (names kept fresh for completion); a script needs none
        self.interactive = interactive
        self.member: str | None = None
        self.source = CachedSource(self.root)

    # -- what the prompt asks (sysmgr.cli.shell_prompt takes the session, nothing else) --------
    def complete(self, text: str) -> tuple[str, list[tuple[str, str]]]:
        """:func:`complete_line` over the CLI's command tree and this session's names."""
        from sysmgr.cli.main import cli

        return complete_line(cli, text, self.source)

    @staticmethod
    def leaves(line: str) -> bool:
        return is_exit(line)

    # -- running a line ------------------------------------------------------------------------
    def run_line(self, line: str) -> int:
        """Run one line (a verb with its arguments, or a word of the shell's); its exit
        code. Errors are printed, never raised (Ctrl-C during a command: 130)."""
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:  # an open quote
            echo(f"Error: {e}", err=True)
            return 2
        if words[:1] == ["sysmgr"]:
            words = words[1:]  # typed out of habit
        if not words:
            return 0
        builtin = {"help": self.help, "use": self.use}.get(words[0])
        try:
            if builtin is not None:
                return builtin(words[1:])
            if words[0] == "shell" and not [w for w in words[1:] if not w.startswith("-")] \
                    and not {"-h", "--help"} & set(words):
                echo("Error: this is the admin shell already", err=True)
                echo("Hint: shell NAME opens a shell inside container NAME", err=True)
                return 2
            return self.run_verb(words)
        except KeyboardInterrupt:
            echo(err=True)
            return 130
        finally:
            if self.interactive:
                self.source.refresh()  # the command may have changed what exists

    def run_verb(self, words: Sequence[str]) -> int:
        """``words`` through the CLI's command tree, on the member in use."""
        from sysmgr.cli import main

        app = AppContext(self.root, self.debug)
        if self.member and main.ALIASES.get(words[0], words[0]) in main.TARGETED:
            app.target = self.member  # a --target on the line still wins
        argv = ["--root", self.root, *(["--debug"] if self.debug else []), *words]
        try:
            return main.run(argv, obj=app, show_usage=show_usage)
        except SystemExit as e:  # a verb that exits by itself (controller run --once)
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)

    def help(self, words: Sequence[str]) -> int:
        if words:
            return self.run_verb([*words, "--help"])
        code = self.run_verb(["--help"])
        echo("\nShell commands:")
        for text in BUILTINS.values():
            echo(f"  {text}")
        return code

    def use(self, words: Sequence[str]) -> int:
        """Switch the member later verbs act on (none: back to the host or cluster)."""
        if len(words) > 1:
            echo("Error: use takes one member name", err=True)
            return 2
        if not words:
            self.set_member(None)
            return 0
        from sysmgr.cli.exits import guarded

        app = AppContext(self.root, self.debug)

        def check() -> int:
            with cliapp.make_client(self.root) as client:
                client.cluster.members.get(words[0])  # NotFound names the known ones
            self.set_member(words[0])
            return 0

        return guarded(app, check)

    def set_member(self, member: str | None) -> None:
        self.member = member
        self.source = CachedSource(self.root, member)
        if self.interactive:  # the prompt's completions (run() installed the first source)
            completion.use_source(self.source)

    # -- what the prompt shows ---------------------------------------------------------------
    def prompt_text(self) -> str:
        clustered = bool(self.source.cached("member"))  # read in the background
        where = self.member or ("cluster" if clustered else socket.gethostname())
        return f"sysmgr [{where}] > "

    def toolbar(self) -> str:
        """Containers running/total and the controller's state, from memory (never a read;
        a stale memory is re-read in the background, for the next redraw)."""
        self.source.refresh_if_stale()
        found = self.source.cached("container")
        running = sum(1 for _name, meta in found if meta.startswith("Running"))
        parts = [f"containers: {running}/{len(found)} running"]
        if self.member:
            parts.append(f"member: {self.member}")
        if self.source.controller:
            parts.append(f"controller: {self.source.controller}")
        return " | ".join(parts)

    def history_path(self) -> str:
        """``<root>/shell_history`` on an initialised root, else the user's state dir."""
        if os.path.isdir(self.root) and os.access(self.root, os.W_OK):
            return os.path.join(self.root, "shell_history")
        state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        os.makedirs(os.path.join(state, "sysmgr"), exist_ok=True)
        return os.path.join(state, "sysmgr", "history")


def show_usage(e: "click.UsageError") -> None:
    """A usage error said the shell's way: verbs without ``sysmgr``, help by ``help VERB``;
    an unknown verb names the closest ones and ``help``."""
    from sysmgr.cli.commands._common import NoSuchCommand

    ctx = e.ctx
    path = ctx.command_path.split()[1:] if ctx is not None else []  # without "sysmgr"
    if isinstance(e, NoSuchCommand) and not path:
        echo(f"Error: unknown command {e.name!r}. Try 'help'.{e.did_you_mean}", err=True)
        return
    if ctx is not None:
        usage = " ".join([*path, *ctx.command.collect_usage_pieces(ctx)])
        echo(f"Usage: {usage}\nTry {' '.join(['help', *path])!r} for help.\n", err=True)
    echo(f"Error: {e.format_message()}", err=True)


def controller_state(root: str) -> str:
    """``running (pid N)``, ``stopped``; empty when no controller ever ran on ``root``."""
    from sysmgr.controller import state

    try:
        st = state.read_status(root)
    except (OSError, SysmgrError):
        return ""
    if st.get("running"):
        return f"running (pid {st['running']})" + (", suspended" if st.get("suspended") else "")
    return "stopped" if st.get("pid") else ""


# -- the two front ends --------------------------------------------------------------------

def run(app: AppContext, keep_going: bool = False) -> int:
    """``sysmgr shell``: the prompt on a terminal, else the lines of stdin as a script."""
    session = Session(app.root, app.debug, interactive=sys.stdin.isatty())
    if not session.interactive:
        return run_script(session, sys.stdin.read().splitlines(), keep_going)
    try:
        from sysmgr.cli.shell_prompt import interact  # prompt_toolkit: only for a person
    except ImportError as e:  # an install without the dependency
        raise SysmgrError(f"the admin shell's prompt needs prompt_toolkit: {e}",
                          hint="pip install 'prompt_toolkit>=3' (or feed it a script: "
                               "sysmgr shell < FILE)") from e

    completion.use_source(session.source)
    try:
        return interact(session)
    finally:
        completion.use_source(None)


def run_script(session: Session, lines: Sequence[str], keep_going: bool = False) -> int:
    """Run ``lines`` (read whole first: a verb that asks reads EOF, not the next line);
    the first failure's exit code, at once unless ``keep_going``."""
    first = 0
    for line in lines:
        if is_exit(line):
            break
        code = session.run_line(line)
        if code and not first:
            first = code
            if not keep_going:
                break
    return first


def is_exit(line: str) -> bool:
    """Whether ``line`` asks to leave the shell (``exit``, ``quit``)."""
    return line.strip() in ("exit", "quit")


def complete_line(cli: "click.Command", text: str, source: completion.NameSource
                  ) -> tuple[str, list[tuple[str, str]]]:
    """The word being typed at the end of ``text`` and its completions ``(value, meta)``,
    best first: the CLI's (verbs, options, keys, live names) and the shell's own words."""
    try:
        words = shlex.split(text)
    except ValueError:  # inside an open quote: nothing sensible to offer
        return "", []
    incomplete = "" if not text or text[-1].isspace() or not words else words.pop()
    if words[:1] == ["sysmgr"]:
        words = words[1:]
    if words and words[0] in BUILTINS:
        if words[0] == "use" and len(words) == 1:
            return incomplete, completion.fuzzy(incomplete, source.names("member"))
        if words[0] != "help":
            return incomplete, []
        words = words[1:]
    found = completion.complete(cli, words, incomplete)
    if not words:
        found = completion.fuzzy(incomplete, [*found, *((b, t) for b, t in BUILTINS.items())])
    return incomplete, found
