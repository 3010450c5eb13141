"""``sysmgr shell`` (the admin shell) through a real pty, and ``sysmgr completion`` in real
shells, against a real root with real busybox containers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, cli_ok, is_root, run_cli

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (real containers)")

PROMPT = r"sysmgr \[[^\]]+\] >"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x08\r]")


class Term:
    """A person's view of the shell in a pty: a terminal emulator (pyte) for the screen,
    which also answers prompt_toolkit's cursor position requests as a terminal does, and
    the output as text, read in order (``expect``)."""

    def __init__(self, child, rows: int, cols: int) -> None:
        self.child = child
        self.screen = pyte.Screen(cols, rows)
        self.screen.write_process_input = child.send  # the answers to CPR
        self.stream = pyte.Stream(self.screen)
        self.text = ""   # everything printed, escape sequences taken out
        self.seen = 0    # how far expect() has read

    def pump(self) -> None:
        try:
            data = self.child.read_nonblocking(65536, timeout=0.1)
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF:  # the shell ended (its status: ended())
            time.sleep(0.05)
            return
        self.stream.feed(data)
        self.text += ANSI.sub("", data)

    def wait(self, what: str, found, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not found():
            if time.monotonic() > end:
                raise AssertionError(f"no {what!r} within {timeout} s; screen:\n"
                                     + "\n".join(self.screen.display) + f"\noutput:\n{self.text}")
            self.pump()

    def expect(self, pattern: str, timeout: float = 30) -> None:
        """Wait for ``pattern`` in the output after what the last expect matched."""
        box: list = []

        def found() -> bool:
            box[:] = [re.compile(pattern).search(self.text, self.seen)]
            return box[0] is not None

        self.wait(pattern, found, timeout)
        self.seen = box[0].end()

    def on_screen(self, pattern: str, timeout: float = 30) -> None:
        """Wait until the screen shows ``pattern`` (one line of it)."""
        self.wait(pattern, lambda: any(re.search(pattern, line) for line in self.screen.display),
                  timeout)

    def send(self, keys: str) -> None:
        self.child.send(keys)


def _env(root: str) -> dict[str, str]:
    return dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO, NO_COLOR="1", TERM="xterm")


def _ended(term: Term) -> int:
    """Wait for the shell to exit; its exit status."""
    term.wait("exit", lambda: not term.child.isalive(), 30)
    term.child.close()
    return term.child.exitstatus if term.child.signalstatus is None else -term.child.signalstatus


@pytest.fixture
def admin_shell(busybox_cli_root):
    """The admin shell on a root with containers c1 (running) and web1 (stopped), once
    its toolbar shows that it read them (completion never waits for the host)."""
    root = busybox_cli_root
    cli_ok("launch", "busybox", "c1", root=root)
    cli_ok("create", "busybox", "web1", root=root)
    child = pexpect.spawn(sys.executable, ["-m", "sysmgr", "shell"], env=_env(root),
                          encoding="utf-8", timeout=30, dimensions=(30, 140), cwd="/")
    term = Term(child, 30, 140)
    try:
        term.expect(PROMPT)
        term.on_screen(r"containers: 1/2 running")
        yield term
    finally:
        if child.isalive():
            child.terminate(force=True)
        child.close()


def test_admin_shell_completes_runs_survives_errors_recalls_history(admin_shell):
    term = admin_shell
    term.send("info c")
    term.send("\t")                        # -> info c1 (web1 does not match "c")
    term.on_screen(PROMPT + r" info c1 *$")
    term.send("\r")
    term.expect(r"Name: c1\n")              # the command's output: it was completed to c1
    term.expect(r"Status: RUNNING")
    term.expect(PROMPT)
    term.send("info nosuch\r")
    term.expect(r"Error: container 'nosuch' not found")
    term.expect(PROMPT)                     # an error does not end the shell
    term.send("\x1b[A\x1b[A")               # up twice: "info c1" from the history
    term.on_screen(PROMPT + r" info c1 *$")
    term.send("\r")
    term.expect(r"Name: c1\n")
    term.expect(PROMPT)
    term.send("\x04")                       # Ctrl-D leaves, exit 0
    assert _ended(term) == 0


def test_admin_shell_hands_the_terminal_to_a_container_and_comes_back(admin_shell):
    term = admin_shell
    term.send("exec c1 -- sh -c 'echo inside-$((40+2)); tty'\r")
    term.expect(r"inside-42\n")
    term.expect(r"/dev/pts/\d+")            # the container's own terminal
    term.expect(PROMPT)
    term.send("exec c1 -- sleep 60\r")
    term.expect(r"sleep 60")
    time.sleep(1)                           # (not a time assertion: let sleep start)
    term.send("\x03")                       # Ctrl-C cancels the command, not the shell
    term.expect(PROMPT, timeout=20)
    term.send("monitor\r")                  # follows the event log until interrupted
    term.expect("monitor")
    time.sleep(1)
    term.send("\x03")                       # in this process: the CLI's mapper, 130
    term.expect(PROMPT, timeout=20)
    term.send("no such words")
    term.send("\x03")                       # at the prompt: the line is dropped
    term.expect(PROMPT)
    term.send("list -c ns -f csv\r")
    term.expect(r"c1,RUNNING")
    term.expect(PROMPT)
    term.send("exit\r")
    assert _ended(term) == 0
    assert "No such command" not in term.text  # the dropped line did not run


def test_admin_shell_says_usage_errors_its_own_way(admin_shell):
    """An unknown verb names the closest one and `help`; a verb's usage error points at
    `help VERB` (never at `sysmgr ... --help`, which is not what one types here)."""
    term = admin_shell
    term.send("lsit\r")
    term.expect(r"Error: unknown command 'lsit'\. Try 'help'\. Did you mean 'list'\?")
    term.expect(PROMPT)
    term.send("snapshot create c1 --bogus\r")
    term.expect(r"Usage: snapshot create \[OPTIONS\]")
    term.expect(r"Try 'help snapshot create' for help\.")
    term.expect(r"Error: No such option '--bogus'")
    term.expect(PROMPT)
    term.send("image pubish web1\r")
    term.expect(r"Try 'help image' for help\.")
    term.expect(r"Error: No such command 'pubish'\. Did you mean 'publish'\?")
    term.expect(PROMPT)
    term.send("help snapshot create\r")             # what the hint says to type works
    term.expect(r"Usage: sysmgr snapshot create")
    term.expect(PROMPT)
    term.send("\x04")
    assert _ended(term) == 0
    assert "Try 'sysmgr" not in term.text and "--help' for help" not in term.text


def test_admin_shell_history_is_kept_in_the_root(admin_shell, busybox_cli_root):
    term = admin_shell
    term.send("list -c n -f csv\r")
    term.expect(PROMPT)
    term.send("\x04")
    assert _ended(term) == 0
    with open(os.path.join(busybox_cli_root, "shell_history")) as f:
        assert "list -c n -f csv" in f.read()


def test_admin_shell_script_stops_at_the_first_failure(busybox_cli_root):
    root = busybox_cli_root
    cli_ok("create", "busybox", "c1", root=root)
    script = "# a comment\nlist -c n -f csv\ninfo nosuch\nrename c1 c2\n"
    res = run_cli("shell", root=root, input=script)
    assert res.returncode == 2, res.stderr                    # not found: 2, as the CLI
    assert res.stdout.splitlines() == ["c1"]
    assert "Error: container 'nosuch' not found" in res.stderr
    assert cli_ok("list", "-c", "n", "-f", "csv", root=root).stdout.split() == ["c1"]
    res = run_cli("shell", "--keep-going", root=root, input=script)
    assert res.returncode == 2
    assert cli_ok("list", "-c", "n", "-f", "csv", root=root).stdout.split() == ["c2"]
    res = run_cli("shell", root=root, input="list -c n -f csv\n")
    assert res.returncode == 0 and res.stdout.split() == ["c2"]


# -- sysmgr completion ---------------------------------------------------------------------

@pytest.fixture
def on_path(busybox_cli_root, tmp_path):
    """A PATH whose ``sysmgr`` is this checkout's, and the root with c1 and web1."""
    root = busybox_cli_root
    cli_ok("create", "busybox", "c1", root=root)
    cli_ok("create", "busybox", "web1", root=root)
    cli_ok("snapshot", "create", "c1", "snap0", root=root)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sysmgr").write_text(f'#!/bin/sh\nexec {sys.executable} -m sysmgr "$@"\n')
    (bindir / "sysmgr").chmod(0o755)
    script = tmp_path / "completion"
    env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO,
               PATH=f"{bindir}:{os.environ['PATH']}")
    return env, script


def _bash_complete(env: dict[str, str], script, words: list[str]) -> list[str]:
    """COMPREPLY of the completion function when the cursor is after ``words``."""
    script.write_text(cli_ok("completion", "bash", root=env["SYSMGR_ROOT"]).stdout)
    quoted = " ".join("'" + w + "'" for w in words)
    code = (f"source {script}\nCOMP_WORDS=({quoted})\nCOMP_CWORD={len(words) - 1}\n"
            "_sysmgr_completion sysmgr\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    res = subprocess.run(["bash", "-c", code], capture_output=True, text=True, env=env,
                         timeout=60, cwd="/")
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_bash_completion_has_live_names(on_path):
    env, script = on_path
    assert _bash_complete(env, script, ["sysmgr", "info", "c"]) == ["c1"]
    assert _bash_complete(env, script, ["sysmgr", "start", "wb"]) == ["web1"]
    assert _bash_complete(env, script, ["sysmgr", "snapshot", "restore", "c1", ""]) == ["snap0"]
    assert "snapshot" in _bash_complete(env, script, ["sysmgr", "sna"])
    assert _bash_complete(env, script, ["sysmgr", "launch", "bus"]) == ["busybox"]
    assert _bash_complete(env, script, ["sysmgr", "config", "device", "get", "c1", ""]) == ["root"]
    assert _bash_complete(env, script, ["sysmgr", "profile", "show", "def"]) == ["default"]
    assert _bash_complete(env, script, ["sysmgr", "storage", "info", ""]) == ["default"]


@pytest.mark.skipif(not shutil.which("fish"), reason="fish is not installed (scripts/setup)")
def test_fish_completion_has_live_names(on_path):
    env, script = on_path
    script.write_text(cli_ok("completion", "fish", root=env["SYSMGR_ROOT"]).stdout)
    res = subprocess.run(["fish", "--no-config", "-c",
                          f"source {script}; complete -C 'sysmgr info c'"],
                         capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert res.returncode == 0, res.stderr
    assert [line.split("\t")[0] for line in res.stdout.splitlines()] == ["c1"]


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed (scripts/setup)")
def test_zsh_completion_in_a_real_zsh(on_path):
    """zsh in a pty, the script loaded as a user would: TAB completes a live name."""
    env, script = on_path
    script.write_text(cli_ok("completion", "zsh", root=env["SYSMGR_ROOT"]).stdout)
    child = pexpect.spawn("zsh", ["-f"], env=dict(env, TERM="xterm", PS1="zsh> "),
                          encoding="utf-8", dimensions=(20, 120), cwd="/")
    term = Term(child, 20, 120)
    try:
        term.send(f"autoload -U compinit && compinit -u && source {script} && echo lo''aded\r")
        term.expect("loaded")
        term.send("sysmgr info w\t")           # web1: the one name that matches
        term.on_screen(r"zsh> sysmgr info web1 *$")
        term.send("\x15sysmgr snapshot restore c1 \t")
        term.on_screen(r"zsh> sysmgr snapshot restore c1 snap0 *$")
    finally:
        child.terminate(force=True)
        child.close()


# -- on an admin root: use MEMBER -----------------------------------------------------------

from tests.integration.test_cluster_local import cluster  # noqa: E402,F401 - the fixture


def test_use_member_targets_the_verbs_and_names_span_the_members(cluster):  # noqa: F811
    from sysmgr.cli import completion
    from sysmgr.cli import shell as admin

    root, _members = cluster
    script = ("use n1\ncreate busybox c1\nuse n2\nlist -c n -f csv\nuse nosuch\n"
              "use\nlist -c nL -f csv\n")
    res = run_cli("shell", "--keep-going", root=root, input=script)
    assert res.returncode == 2, res.stderr                  # `use nosuch`: not found
    assert "no cluster member named 'nosuch'" in res.stderr
    # on n2 nothing is listed; back on the whole cluster, c1 is on n1
    lines = res.stdout.splitlines()
    assert lines[-2:] == ["Container c1 created", "c1,n1"], res.stdout
    source = completion.NameSource(root)
    assert source.names("container") == [("c1", "container")]
    assert [n for n, _ in source.names("member")] == ["n1", "n2"]
    cached = admin.CachedSource(root)
    cached.refresh()
    cached.wait()
    assert cached.names("container") == [("c1", "Stopped on n1")]
    session = admin.Session(root)
    session.source = cached
    assert session.prompt_text() == "sysmgr [cluster] > "
    assert session.run_line("use n1") == 0 and session.prompt_text() == "sysmgr [n1] > "
    completion.use_source(None)
