"""``sysmgr monitor --format json`` run in the background by a test: its events as they come,
and Ctrl-C to end it."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading


class Monitor:
    """A running ``sysmgr monitor`` (``argv``: the whole command, with ``--format json``)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def next_events(self, n: int, timeout: float = 30) -> list[tuple[str, str, str]]:
        """The next ``n`` events as (type, object, action); fewer if none comes for
        ``timeout`` seconds (the test's assertion then says what is missing)."""
        out = []
        for _ in range(n):
            try:
                e = json.loads(self.lines.get(timeout=timeout))
            except queue.Empty:
                break
            out.append((e["type"], e["object"], e["action"]))
        return out

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C; its exit code and standard error (killed if it did not end)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(10)
        assert self.proc.stderr is not None
        return self.proc.returncode, self.proc.stderr.read()
