"""The admin shell's figures (issue 15): keystroke-to-completion of a container name among
200 containers, and a command typed in the shell vs the same through the CLI.

    python bench/shell.py [--containers 200] [--runs 30]      (as root)

A throw-away root gets a dir pool, the busybox image and N containers (created, not
started). Figures, medians in milliseconds:

- completion: the admin shell's completer (the prompt_toolkit ``Completer`` the prompt runs,
  over the live-name cache a background thread keeps) for lines such as ``info c1``: what a
  keystroke costs once the names are in memory (target: <= 50 ms);
- first fetch: the cache's read of the container names through the API (in the background:
  the prompt never waits for it), and the same read as the shells' completion protocol does
  it, a whole ``sysmgr`` process per TAB (bash's ``_SYSMGR_COMPLETE=bash_complete``);
- a command typed in the shell (``Session.run_line``: the same click tree, in this process)
  vs the same command through the CLI (a new process each time, the console script as
  bench/lifecycle.py picks it), for ``list`` and ``info c1``: the shell must be faster.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterator

from _common import median_ms, teardown
from lifecycle import cli_command, timed

CONTAINERS = [200]  # how many the root has (main() sets it from --containers)
LINES = ("info c", "info c1", "info c19", "start c4", "snapshot create c12")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """stdout and stderr to /dev/null at the descriptor level (the commands print)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (null, *saved):
            os.close(fd)


def completion_figures(root: str, runs: int) -> dict[str, float]:
    """Keystroke-to-completion over the warm cache, and the cache's first fetch."""
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from sysmgr.cli import completion
    from sysmgr.cli.shell import CachedSource, Session
    from sysmgr.cli.shell_prompt import LineCompleter

    out: dict[str, float] = {}
    direct = completion.NameSource(root)
    out["names alone through the API (a TAB's read)"] = median_ms(
        timed(lambda: direct.names("container"), runs))
    session = Session(root)
    completion.use_source(session.source)
    try:
        session.source.refresh()
        session.source.wait()
        completer = LineCompleter(session)
        event = CompleteEvent(completion_requested=True)
        for line in LINES:
            doc = Document(line)
            found = list(completer.get_completions(doc, event))
            assert found, f"no completion for {line!r}"
            out[f"keystroke: {line!r} ({len(found)} shown)"] = median_ms(
                timed(lambda: list(completer.get_completions(doc, event)), runs))
        cold = CachedSource(root)
        t = time.perf_counter()
        cold.refresh([("container", None)])
        cold.wait()
        out["first fetch: the cache, names and states (background)"] = (time.perf_counter() - t) * 1000
    finally:
        completion.use_source(None)
    return out


def pty_keystroke(root: str, runs: int) -> float:
    """What a person sees: the shell in a pty (a terminal emulator reading it), ``info c1``
    typed and its menu drawn, then one more key (``9``) until the menu shows ``c19`` first."""
    import pexpect
    import pyte

    env = dict(os.environ, SYSMGR_ROOT=root, TERM="xterm", NO_COLOR="1")
    child = pexpect.spawn(sys.executable, ["-m", "sysmgr", "shell"], env=env, cwd="/",
                          encoding="utf-8", dimensions=(30, 120))
    child.delaybeforesend = None  # pexpect sleeps 50 ms before each send by default
    screen = pyte.Screen(120, 30)
    screen.write_process_input = child.send  # answers the cursor position requests
    stream = pyte.Stream(screen)

    def until(shown: Callable[[list[str]], bool], limit: float = 10.0) -> None:
        # the screen is looked at only when something was drawn: a busy loop here would
        # take the processor from the shell it measures
        end = time.perf_counter() + limit
        while not shown(screen.display):
            while True:
                if time.perf_counter() > end:
                    raise RuntimeError("bench: the shell did not draw:\n"
                                       + "\n".join(screen.display))
                try:
                    stream.feed(child.read_nonblocking(65536, timeout=0.05))
                    break
                except pexpect.TIMEOUT:
                    pass

    def settle(quiet_for: float = 0.2) -> None:
        """Read until the shell has drawn nothing for ``quiet_for`` seconds (the typing
        before the timed key is done with: its completions and redraws)."""
        while True:
            try:
                stream.feed(child.read_nonblocking(65536, timeout=quiet_for))
            except pexpect.TIMEOUT:
                return

    def menu_starts(name: str) -> Callable[[list[str]], bool]:
        return lambda lines: lines[1].split()[:1] == [name]

    samples = []
    try:
        until(lambda lines: any(f"/{CONTAINERS[0]} running" in line for line in lines))
        for _ in range(runs):
            child.send("\x15info c1")
            until(menu_starts("c1"))
            settle()
            t = time.perf_counter()
            child.send("9")
            until(menu_starts("c19"))
            samples.append(time.perf_counter() - t)
    finally:
        child.terminate(force=True)
        child.close()
    return median_ms(samples)


def protocol_figure(root: str, argv0: list[str], runs: int) -> float:
    """A bash TAB: one ``sysmgr`` process answering ``info c1`` through click's protocol."""
    env = dict(os.environ, SYSMGR_ROOT=root, _SYSMGR_COMPLETE="bash_complete",
               COMP_WORDS="sysmgr info c1", COMP_CWORD="2")
    return median_ms(timed(lambda: subprocess.run(argv0, env=env, cwd=root, check=True,
                                                  stdout=subprocess.DEVNULL), runs))


def command_figures(root: str, argv0: list[str], runs: int) -> list[tuple[str, float, float]]:
    """(command, in the shell, through the CLI) medians."""
    from sysmgr.cli.shell import Session

    session = Session(root)
    env = dict(os.environ, SYSMGR_ROOT=root)
    rows = []
    for line in ("list", "info c1"):
        def in_shell(line: str = line) -> None:
            with quiet():
                code = session.run_line(line)
            assert code == 0, line

        in_shell()  # the first line of a session loads the command's module
        shell_ms = median_ms(timed(in_shell, runs))
        cli_ms = median_ms(timed(lambda: subprocess.run(
            [*argv0, *line.split()], env=env, cwd=root, check=True,
            stdout=subprocess.DEVNULL), runs))
        rows.append((line, shell_ms, cli_ms))
    return rows


def make_root(count: int) -> tuple[str, object]:
    import sysmgr

    root = tempfile.mkdtemp(prefix="sysmgr-bench-shell-")
    client = sysmgr.Client(root=root)
    client.init(storage_driver="dir")
    client.images.build("busybox", alias="busybox")
    for i in range(1, count + 1):
        client.containers.create(f"c{i}", image="busybox")
    return root, client


def report(count: int, runs: int, note: str, comp: dict[str, float], tab: float,
           rows: list[tuple[str, float, float]]) -> None:
    print(f"sysmgr admin shell, {count} containers (dir pool, stopped), medians of {runs} runs")
    print("\ncompletion of a container name (target: <= 50 ms per keystroke)")
    for what, ms in comp.items():
        print(f"  {what:<52} {ms:8.2f} ms")
    print(f"  {'shells protocol: one sysmgr process per TAB':<52} {tab:8.2f} ms")
    print(f"\na command typed in the shell vs through the CLI ({note})")
    for line, shell_ms, cli_ms in rows:
        print(f"  {line:<10} shell {shell_ms:8.2f} ms   CLI {cli_ms:8.2f} ms   "
              f"({cli_ms / shell_ms:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=200)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    argv0, note, _python = cli_command()
    root, client = make_root(args.containers)
    try:
        comp = completion_figures(root, args.runs)
        CONTAINERS[0] = args.containers
        comp["through a pty: one key to the menu redrawn"] = pty_keystroke(root, args.runs)
        tab = protocol_figure(root, argv0, max(5, args.runs // 3))
        rows = command_figures(root, argv0, args.runs)
    finally:
        teardown(client)
        client.close()  # type: ignore[attr-defined]
        shutil.rmtree(root, ignore_errors=True)
    report(args.containers, args.runs, note, comp, tab, rows)



if __name__ == "__main__":
    main()
