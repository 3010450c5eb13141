"""``raw.idmap``: extra host ids mapped into an unprivileged container (LXD's syntax).

One entry per line: ``uid|gid|both HOST NS``, where ``HOST`` and ``NS`` are an id or a range
``A-B`` of the same length, e.g. ``both 1000 1000`` (the host's uid and gid 1000 appear as
1000 inside) or ``uid 5000-5009 100-109``. Pure: parsing and validation only; the engine turns
entries into the container's :class:`~sysmgr.types.IdMap`. A whole map is also written as one
string (:func:`format_idmap`) where the engine records which host ids a container's files carry.
"""

from __future__ import annotations

from sysmgr.types import IdMap, IdMapEntry

KINDS = ("uid", "gid", "both")
MAX_ID = 2**32 - 2          # 4294967295 is (uid_t)-1, never a valid id


def _range(text: str) -> tuple[int, int]:
    first, dash, last = text.partition("-")
    try:
        a = int(first)
        b = int(last) if dash else a
    except ValueError:
        raise ValueError(f"{text!r} is not an id or a range of ids (A-B)") from None
    if not 0 <= a <= b <= MAX_ID:
        raise ValueError(f"{text!r}: ids run from 0 to {MAX_ID}, the first no larger than the last")
    return a, b - a + 1


def parse_raw_idmap(text: str) -> tuple[IdMapEntry, ...]:
    """The entries of a ``raw.idmap`` value.

    Raises:
        ValueError: naming the line at fault and why.
    """
    out = []
    for n, line in enumerate(str(text).splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) != 3 or words[0] not in KINDS:
            raise ValueError(f"raw.idmap line {n}: expected 'uid|gid|both HOST NS', got {line.strip()!r}")
        try:
            host, hn = _range(words[1])
            ns, nn = _range(words[2])
        except ValueError as e:
            raise ValueError(f"raw.idmap line {n}: {e}") from None
        if hn != nn:
            raise ValueError(f"raw.idmap line {n}: {words[1]} and {words[2]} are ranges of "
                             "different lengths")
        out.append(IdMapEntry(words[0], host, ns, hn))
    return tuple(out)


def _entry_text(e: IdMapEntry) -> str:
    def fmt(a: int, n: int) -> str:
        return str(a) if n == 1 else f"{a}-{a + n - 1}"

    return f"{e.kind} {fmt(e.host_id, e.size)} {fmt(e.ns_id, e.size)}"


def normalize_raw_idmap(text: str) -> str:
    """One entry per line, single spaces, ranges only where longer than one id."""
    return "\n".join(_entry_text(e) for e in parse_raw_idmap(text))


# -- a whole map as one string (what ``volatile.last_state.idmap`` records) ----------------

def format_idmap(m: IdMap | None) -> str:
    """``1000000:65536``, with ``raw.idmap`` entries after ``;`` (``1000000:65536;both 1000
    1000``); ``""`` for None (ids on disk are the container's own)."""
    if m is None:
        return ""
    return ";".join([f"{m.host_start}:{m.size}"] + [_entry_text(e) for e in m.extra])


def parse_idmap(text: str) -> IdMap | None:
    """Inverse of :func:`format_idmap`.

    Raises:
        ValueError: not a map this module writes.
    """
    if not text:
        return None
    base, *extras = str(text).split(";")
    start, colon, size = base.partition(":")
    try:
        m = IdMap(int(start), int(size), parse_raw_idmap("\n".join(extras)))
    except ValueError as e:
        raise ValueError(f"invalid id map {text!r}: {e}") from None
    if not colon or m.host_start < 0 or m.size < 1 or m.host_start + m.size - 1 > MAX_ID:
        raise ValueError(f"invalid id map {text!r}: expected HOSTSTART:SIZE[;raw.idmap entry...]")
    return m
