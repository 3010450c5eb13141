"""Rendering for the CLI: LXD-style tables, CSV / JSON / YAML, plans, progress, dates.

Pure functions that return strings (golden-tested), plus :class:`Progress`, which prints step
lines and, on a terminal, a rich spinner with the elapsed time. Plain tables and CSV use only
the standard library so listings stay fast; ``json``, ``yaml`` and ``rich`` are imported on
first use.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any, Callable, Iterable, Mapping, Sequence

from sysmgr.cli.app import echo

Row = Sequence[object]


# -- tables -------------------------------------------------------------------------------

def _cell_lines(value: object) -> list[str]:
    if value is None:
        return [""]
    return str(value).split("\n")


def table(headers: Sequence[str], rows: Iterable[Row]) -> str:
    """An ASCII box table as ``lxc list`` prints it: centred headers, left-aligned cells, a
    rule after every row; a cell with newlines spans several lines."""
    cells = [[_cell_lines(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(len(s) for s in lines))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [rule, "|" + "|".join(f" {_center(h, w)} " for h, w in zip(headers, widths)) + "|", rule]
    for row in cells:
        for n in range(max((len(c) for c in row), default=1)):
            out.append("|" + "|".join(
                f" {(c[n] if n < len(c) else '').ljust(w)} " for c, w in zip(row, widths)) + "|")
        out.append(rule)
    return "\n".join(out)


def _center(text: str, width: int) -> str:
    gap = width - len(text)
    left = gap // 2  # as LXD's table writer: the odd space goes to the right
    return " " * left + text + " " * (gap - left)


def csv_text(rows: Iterable[Row]) -> str:
    """Rows as CSV without a header (``lxc list -f csv``)."""
    import csv  # these formats only when asked for (--format)
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow(["" if v is None else str(v) for v in row])
    return buf.getvalue().rstrip("\n")


def json_text(data: Any) -> str:
    import json  # --format json only

    return json.dumps(data, indent=2, sort_keys=False, default=str)


def yaml_text(data: Any) -> str:
    import yaml  # --format yaml only: yaml costs ~20 ms at start-up

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True,
                          width=1000).rstrip("\n")


def listing(fmt: str, headers: Sequence[str], records: Sequence[Mapping[str, Any]],
            row: Callable[[Mapping[str, Any]], Row]) -> str:
    """One listing in any ``--format``: ``records`` are the JSON/YAML objects, ``row`` turns
    one record into the table / CSV cells."""
    if fmt == "json":
        return json_text(list(records))
    if fmt == "yaml":
        return yaml_text(list(records))
    if fmt == "csv":
        return csv_text(row(r) for r in records)
    return table(headers, [row(r) for r in records])


def document(fmt: str, data: Any) -> str:
    """A single object (``show``, ``info --format``) as YAML or JSON."""
    return json_text(data) if fmt == "json" else yaml_text(data)


# -- values -------------------------------------------------------------------------------

def format_size(n: int | None) -> str:
    from sysmgr._util.sizes import format_size as fmt  # only listings with sizes

    return fmt(n)


def format_date(ts: float | None) -> str:
    """``Nov 28, 2026 at 11:58am (UTC)`` as ``lxc image list`` shows upload dates."""
    if not ts:
        return ""
    t = time.gmtime(ts)
    hour = t.tm_hour % 12 or 12
    return f"{time.strftime('%b', t)} {t.tm_mday}, {t.tm_year} at {hour}:{t.tm_min:02d}" \
           f"{'am' if t.tm_hour < 12 else 'pm'} (UTC)"


def format_timestamp(ts: float | None) -> str:
    """``2026/11/28 11:58 UTC`` as ``lxc info`` shows ``Created``."""
    if not ts:
        return ""
    return time.strftime("%Y/%m/%d %H:%M UTC", time.gmtime(ts))


def iso_time(ts: float | None) -> str | None:
    if not ts:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_iso(iso: str | None) -> float | None:
    """The inverse of :func:`iso_time`."""
    if not iso:
        return None
    import calendar  # only for timestamps that are shown

    return float(calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))


def inline_map(d: Mapping[str, object]) -> str:
    """``{type: disk, path: /}`` for one device on one line."""
    return "{" + ", ".join(f"{k}: {d[k]}" for k in d) + "}"


# -- colour -------------------------------------------------------------------------------

def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default stdout) is an interactive terminal that can redraw."""
    if os.environ.get("TERM") == "dumb":
        return False
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def use_color(stream: IO[str] | None = None) -> bool:
    """Colour only on a terminal, never with ``NO_COLOR`` set (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and is_terminal(stream)


# -- plans --------------------------------------------------------------------------------

SYMBOLS: dict[str, str] = {
    "create": "+",
    "update": "~",
    "live": "~",
    "start": ">",
    "stop": "<",
    "restart": "!",
    "destroy": "-",
}
_ACTION_COLORS: dict[str, tuple[str, bool]] = {
    "create": ("green", False), "update": ("yellow", False), "live": ("yellow", False),
    "start": ("cyan", False), "stop": ("red", True), "restart": ("magenta", True),
    "destroy": ("red", True),
}
_DETAIL_COLORS = {"+": "green", "-": "red", "~": "yellow"}


def plan_lines(plan: Any, *, color: bool = False) -> list[str]:
    """``plan.lines()`` with each action line prefixed by its effect's symbol (``+`` create,
    ``~`` update, ``>`` start, ``<`` stop, ``!`` restart, ``-`` destroy) and details indented
    under it. Nothing is added or left out: diff shows exactly what apply runs."""
    import click  # colours: click's (render itself is click-free for list's fast path)

    actions = iter(plan.actions)
    out: list[str] = []
    for line in plan.lines():
        if line[:1].isspace():
            text = "  " + line
            if color:
                fg = _DETAIL_COLORS.get(line.lstrip()[:1])
                text = click.style(text, fg=fg) if fg else text
            out.append(text)
            continue
        effect = getattr(next(actions, None), "effect", "")
        text = f"{SYMBOLS.get(effect, '*')} {line}"
        if color and effect in _ACTION_COLORS:
            fg, bold = _ACTION_COLORS[effect]
            text = click.style(text, fg=fg, bold=bold or None)
        out.append(text)
    return out


def _data(value: Any) -> Any:
    """A plan's value as JSON data: dataclasses as objects of their fields, tuples as lists."""
    import dataclasses  # plans as data only

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_data(v) for v in value]
    return value


def plan_document(plan: Any) -> dict[str, Any]:
    """A plan as data (``diff``/``apply --format json``): each action's type, kind, name,
    effect, the line ``diff`` prints with its details, and its fields (the dataclass's)."""
    actions = []
    for a in plan.actions:
        fields = _data(a)
        fields.pop("name", None)
        actions.append({"type": type(a).__name__, "kind": a.kind, "name": a.name,
                        "effect": a.effect, "disruptive": a.disruptive, "line": a.describe(),
                        "details": list(a.details()), "fields": fields})
    return {"changes": not plan.empty, "summary": plan.summary(), "actions": actions,
            "warnings": list(getattr(plan, "warnings", ())),
            "revision": getattr(plan, "revision", "")}


def plan_text(plan: Any, *, color: bool = False) -> str:
    """The plan followed by its summary line, as ``diff`` and ``apply`` print it."""
    warnings = [f"warning: {w}" for w in getattr(plan, "warnings", ())]
    if plan.empty:  # (a restart still needed by a container outside the manifests, say)
        return "\n".join(["no changes", *warnings])
    lines = plan_lines(plan, color=color)
    return "\n".join(lines + [""] + [plan.summary()] + warnings)


# -- progress -----------------------------------------------------------------------------

def progress(quiet: bool = False, *, err: bool = True, indent: str = "") -> "ProgressPrinter":
    """The one progress display of the CLI's long steps (image build, import and export,
    backups, copies, moves, snapshot restores): on a terminal a live line (spinner, the step,
    elapsed time; bytes and rate while a transfer runs) below the steps done; elsewhere one
    plain line per step; nothing at all with ``quiet``. On stderr by default, so stdout
    stays the command's result.

        with render.progress(quiet) as progress:
            client.images.build("busybox", progress=progress)
    """
    return ProgressPrinter(err=err, indent=indent, quiet=quiet)


class ProgressPrinter:
    """A ``progress(message)`` callback for the API: one line per step; on a terminal each
    line carries the elapsed time and a rich spinner with a running clock stays below them
    (:func:`progress` makes the CLI's).

        with ProgressPrinter(err=True) as progress:
            client.images.build("busybox", progress=progress)
    """

    def __init__(self, *, err: bool = False, live: bool | None = None, indent: str = "",
                 quiet: bool = False) -> None:
        self.err = err
        self.indent = indent
        self.quiet = quiet
        # the spinner needs a terminal; rich itself drops colours under NO_COLOR
        self.live = (not quiet and is_terminal(sys.stderr if err else sys.stdout)
                     if live is None else live)
        self._start = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        self._metered: tuple[str, float, int] | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def __enter__(self) -> "ProgressPrinter":
        self._start = time.monotonic()
        if self.live:
            # rich costs ~40 ms at start-up: only a live progress display pays for it
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            console = Console(stderr=self.err, highlight=False)
            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                                 TimeElapsedColumn(), console=console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task("working", total=None)
        return self

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        if self._bar is None:
            echo(f"{self.indent}{message}", err=self.err)
            return
        from rich.text import Text  # rich only on a terminal (see above)

        stamp = Text(f"[{self.elapsed:6.1f}s] ", style="dim")
        self._bar.console.print(Text(self.indent) + stamp + Text(message))
        self._bar.update(self._task, description=message)

    def warn(self, message: str) -> None:
        """A warning for the user (``warning: ...``), shown even when ``quiet``, above the
        live line while there is one."""
        if self._bar is None:
            echo(f"{self.indent}warning: {message}", err=True)
            return
        from rich.text import Text  # rich only on a terminal (see above)

        self._bar.console.print(Text(f"{self.indent}warning: {message}"))

    def meter(self, label: str, sent: int) -> None:
        """Bytes sent so far in a transfer step (``label``): on a terminal the live line
        shows them with the rate; elsewhere the step's own message says the total."""
        if self._bar is None:
            return
        now = time.monotonic()
        if self._metered is None or self._metered[0] != label:
            self._metered = (label, now, sent)
        _, t0, first = self._metered
        rate = (sent - first) / (now - t0) if now > t0 else 0.0
        self._bar.update(self._task, description=f"{label}: {format_size(sent)} "
                                                 f"at {format_size(int(rate))}/s")

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
