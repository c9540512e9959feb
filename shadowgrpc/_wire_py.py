"""The field iterator of the pure-Python wire readers outside the packer (streams.py), built on the
primitives of ``_packing_py``: a reader states which fields it wants, and ``fields`` walks the others
with the packer's rules and its ``ValueError("<what> at offset <n>")`` messages.

Not used where the loop is the hot path: ``_packing_py`` (the compiled packer's twin, line for
line) and ``sequences.scan_sequence`` (every request of a sequence route; a generator per level of
its walk made it about 30% slower) keep their inline loops.
"""

from __future__ import annotations

from collections.abc import Container, Iterator

from ._packing_py import _LEN, _TAG1, _length, _skip, _tag

__all__ = ("fields",)


def fields(
    buf: bytes | memoryview, pos: int, end: int, want: Container[int] | None = None
) -> Iterator[tuple[int, int, int, int, int]]:
    """(field, wire type, value start, value end, tag position) of each field in [pos, end) whose
    number is in ``want`` (None: every field), in order. A length-delimited value is its payload,
    any other the bytes of the value. Fields not wanted are skipped, and checked all the same; the
    reader checks the wire type of those it gets. Raises ValueError on malformed bytes, when the
    walk reaches them (a reader that stops early leaves the rest unchecked)."""
    while pos < end:
        tagpos = pos
        t = _TAG1[buf[pos]]
        if t is None:
            f, wt, pos = _tag(buf, pos, end)
        else:
            f, wt = t
            pos += 1
        if want is not None and f not in want:
            pos = _skip(buf, pos, end, f, wt, tagpos, 0)
        elif wt == _LEN:
            start, pos = _length(buf, pos, end, tagpos)
            yield f, wt, start, pos, tagpos
        else:
            start = pos
            pos = _skip(buf, pos, end, f, wt, tagpos, 0)
            yield f, wt, start, pos, tagpos
