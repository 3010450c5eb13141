"""``raw.idmap``: extra host ids mapped into an unprivileged container (LXD's syntax).

One entry per line: ``uid|gid|both HOST NS``, where ``HOST`` and ``NS`` are an id or a range
``A-B`` of the same length, e.g. ``both 1000 1000`` (the host's uid and gid 1000 appear as
1000 inside) or ``uid 5000-5009 100-109``. Pure: parsing and validation only; the engine turns
entries into the container's :class:`~sysmgr.types.IdMap`.
"""

from __future__ import annotations

from sysmgr.types import IdMapEntry

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


def normalize_raw_idmap(text: str) -> str:
    """One entry per line, single spaces, ranges only where longer than one id."""
    def fmt(a: int, n: int) -> str:
        return str(a) if n == 1 else f"{a}-{a + n - 1}"

    return "\n".join(f"{e.kind} {fmt(e.host_id, e.size)} {fmt(e.ns_id, e.size)}"
                     for e in parse_raw_idmap(text))
