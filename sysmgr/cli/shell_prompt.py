"""The admin shell's prompt for a person: prompt_toolkit 3 (imported only here).

Completion runs on the prompt's own loop: it reads the session's live names from memory
(a background thread fetches them), so it never waits for the host, and at ~1 ms for 200
names a completer thread would only add its hand-over per completion. Suggestions come from
the history file; the bottom toolbar shows the containers and the controller from memory. Ctrl-C at the prompt clears the line; during a command it cancels
the command (the CLI's mapper: exit code 130), not the shell; Ctrl-D leaves.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory


class Session(Protocol):
    """What the prompt asks of :class:`sysmgr.cli.shell.Session` (handed in, not imported:
    the shell imports this module)."""

    source: Any

    def prompt_text(self) -> str: ...
    def toolbar(self) -> str: ...
    def complete(self, text: str) -> tuple[str, list[tuple[str, str]]]: ...
    def history_path(self) -> str: ...
    def leaves(self, line: str) -> bool: ...
    def run_line(self, line: str) -> int: ...


class LineCompleter(Completer):
    """prompt_toolkit's view of :meth:`sysmgr.cli.shell.Session.complete`."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get_completions(self, document: Document, complete_event: CompleteEvent
                        ) -> Iterator[Completion]:
        incomplete, found = self.session.complete(document.text_before_cursor)
        for value, meta in found:
            yield Completion(value, start_position=-len(incomplete), display_meta=meta)


def interact(session: Session) -> int:
    """Read and run lines until Ctrl-D (or ``exit``); 0."""
    prompt: PromptSession[str] = PromptSession(
        history=FileHistory(session.history_path()), auto_suggest=AutoSuggestFromHistory(),
        completer=LineCompleter(session), complete_while_typing=True,
        bottom_toolbar=session.toolbar, refresh_interval=2.0)
    session.source.refresh()
    while True:
        session.source.on_update = _redraw(prompt)
        try:
            line = prompt.prompt(session.prompt_text)
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        if session.leaves(line):
            return 0
        session.run_line(line)


def _redraw(prompt: "PromptSession[str]"):  # noqa: ANN202 - a callback
    def redraw() -> None:
        app = prompt.app
        if app.is_running:
            app.invalidate()

    return redraw
