"""Sequences (models with a sequence batcher): a shadowed sequence is mirrored whole or not at all.

Used by the router (sampling) and the pairing stage (held comparisons) only for routes whose live
model has a sequence batcher (``RouteEntry.sequence_batching``).

Reading: ``scan_sequence(raw)`` reads ``sequence_id`` (int64_param, uint64_param or string_param),
``sequence_start`` and ``sequence_end`` (bool_param) from the ``parameters`` map (field 4) of a
serialized ModelInferRequest, walking the wire format with the helpers of ``_packing_py`` (no full
parse: other fields are skipped in O(1)). A sequence id of 0 or "" is no sequence (Triton rejects
it for a sequence model), and so is a request without one.

Rules, per shadow target (one ``SequenceTable`` each):
- Sampling: every request of a sequence gets the key ``sample_key(str(sequence_id))``, so a
  sequence is sampled whole (on every replica alike).
- A sequence is mirrored from its start request only. One first seen midway (after a front restart,
  or after its entry was evicted) is not mirrored (``SequenceTable.seen_midway``); nor is one whose
  start request could not be sent (shed/down/not ready: counted there, as for any request).
- Once mirrored, if a later request of it cannot be sent (shed by ``max_in_flight`` or the byte
  budget, target down or not ready), its shadow call fails, live fails, or its held comparisons pass
  the bounds below, the sequence is *broken*: the rest of it is not sent, and the whole sequence is
  excluded from the comparison (``ShadowStats.sequences_shed_midway`` once, and
  ``sequence_requests_excluded`` for each of its requests, those before the break included).
- Comparisons of a mirrored sequence are held until it is complete: its end request seen and every
  request sent for it answered; then all its pairs are compared in order. Held per sequence: at
  most ``max_pairs`` pairs; per table: at most ``max_bytes`` of answers. Past either, the sequence
  is broken (and counted in ``over_bound`` as well).
- The table holds at most ``max_sequences`` sequences, each at most ``idle_s`` seconds after its
  last request; the oldest are evicted first (``evicted``); an evicted mirrored sequence that was
  not complete is broken. A new start on an id that is still open ends (breaks) the old one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from ._packing_py import _I64, _LEN, _TAG1, _VARINT, _length, _skip, _tag, _utf8, _varint, _wrong_wire_type
from .stats import ShadowStats

__all__ = ("SequenceState", "SequenceTable", "SequenceTables", "scan_sequence", "sequence_of")

_ID, _START, _END = b"sequence_id", b"sequence_start", b"sequence_end"
_KEYS = (_ID, _START, _END)

# Defaults of a table (per shadow target).
MAX_SEQUENCES = 10_000
IDLE_S = 120.0
MAX_PAIRS = 1024
MAX_BYTES = 64 << 20


# The three wire loops below stay inline rather than on ``_wire_py.fields``: scan_sequence runs on
# every request of a sequence route, and a generator per level made it about 30% slower.
def _param_value(buf: bytes | memoryview, pos: int, end: int) -> bool | int | str | float | None:
    """The value of an InferParameter in [pos, end): the last set member of its oneof."""
    value: bool | int | str | float | None = None
    while pos < end:
        tagpos = pos
        t = _TAG1[buf[pos]]
        if t is None:
            f, wt, pos = _tag(buf, pos, end)
        else:
            f, wt = t
            pos += 1
        if f in (1, 2, 5):  # bool_param, int64_param, uint64_param
            if wt != _VARINT:
                raise _wrong_wire_type(f, wt, tagpos)
            v, pos = _varint(buf, pos, end)
            if f == 1:
                value = v != 0
            elif f == 2:
                value = v - (1 << 64) if v >> 63 else v
            else:
                value = v
        elif f == 3:  # string_param
            if wt != _LEN:
                raise _wrong_wire_type(f, wt, tagpos)
            start, pos = _length(buf, pos, end, tagpos)
            value = _utf8(buf, start, pos, f, tagpos)
        elif f == 4 and wt == _I64:  # double_param: not a sequence parameter's type
            pos += 8
            if pos > end:
                raise ValueError(f"truncated fixed64 at offset {tagpos}")
            value = None
        else:
            pos = _skip(buf, pos, end, f, wt, tagpos, 0)
    return value


def _entry(buf: bytes | memoryview, pos: int, end: int) -> tuple[bytes | None, bool | int | str | float | None]:
    """(key, value) of a parameters map entry; the key only when it is a sequence parameter."""
    key = b""
    vstart = vstop = -1
    while pos < end:
        tagpos = pos
        t = _TAG1[buf[pos]]
        if t is None:
            f, wt, pos = _tag(buf, pos, end)
        else:
            f, wt = t
            pos += 1
        if f == 1 or f == 2:
            if wt != _LEN:
                raise _wrong_wire_type(f, wt, tagpos)
            start, pos = _length(buf, pos, end, tagpos)
            if f == 1:
                key = bytes(buf[start:pos])
            else:
                vstart, vstop = start, pos
        else:
            pos = _skip(buf, pos, end, f, wt, tagpos, 0)
    if key not in _KEYS:
        return None, None
    return key, (_param_value(buf, vstart, vstop) if vstart >= 0 else None)


def scan_sequence(raw: bytes) -> tuple[int | str | None, bool, bool]:
    """(sequence id, start, end) of a serialized ModelInferRequest; the id is None when the request
    names no sequence (no ``sequence_id``, or 0, or ""). Later map entries win, as in protobuf.
    Raises ValueError on malformed bytes."""
    buf = raw if isinstance(raw, bytes) else memoryview(raw).cast("B")
    end = len(buf)
    found: dict[bytes, Any] = {}
    pos = 0
    while pos < end:
        tagpos = pos
        t = _TAG1[buf[pos]]
        if t is None:
            f, wt, pos = _tag(buf, pos, end)
        else:
            f, wt = t
            pos += 1
        if f == 4:
            if wt != _LEN:
                raise _wrong_wire_type(f, wt, tagpos)
            start, pos = _length(buf, pos, end, tagpos)
            key, value = _entry(buf, start, pos)
            if key is not None:
                found[key] = value
        else:
            pos = _skip(buf, pos, end, f, wt, tagpos, 0)
    sid = found.get(_ID)
    if isinstance(sid, bool) or not isinstance(sid, (int, str)) or sid == 0 or sid == "":
        sid = None
    return sid, found.get(_START) is True, found.get(_END) is True


def sequence_of(raw: bytes) -> tuple[int | str, bool, bool] | None:
    """``scan_sequence(raw)`` when the request names a sequence; None when it names none or its
    parameters do not parse (Triton answers it; it is then sampled like any request)."""
    try:
        seq = scan_sequence(raw)
    except ValueError:
        return None
    return seq if seq[0] is not None else None


class SequenceState:
    """One sequence of one target: what was seen, sent, answered, and the held pairs."""

    __slots__ = ("broken", "end_seen", "held", "held_bytes", "id", "last", "mirrored", "seen", "sent", "answered", "table")

    def __init__(self, table: SequenceTable, sid: int | str, mirrored: bool, now: float) -> None:
        self.table = table
        self.id = sid
        self.mirrored = mirrored  # False: tracked only so that its later requests are skipped
        self.broken = False
        self.end_seen = False
        self.seen = 0  # requests of it seen by this target's sampling
        self.sent = 0
        self.answered = 0
        self.held: list[tuple] = []
        self.held_bytes = 0
        self.last = now

    @property
    def complete(self) -> bool:
        return self.end_seen and self.answered >= self.sent


class SequenceTable:
    """The sequences of one shadow target (see the module doc for the rules). ``stats``: the
    target's ShadowStats (sequence counters). Not thread-safe: the front's event loop only."""

    def __init__(
        self, stats: ShadowStats, max_sequences: int = MAX_SEQUENCES, idle_s: float = IDLE_S, max_pairs: int = MAX_PAIRS,
        max_bytes: int = MAX_BYTES, clock=time.monotonic,
    ) -> None:
        self.stats = stats
        self.max_sequences = max_sequences
        self.idle_s = idle_s
        self.max_pairs = max_pairs
        self.max_bytes = max_bytes
        self.clock = clock
        self._open: OrderedDict[int | str, SequenceState] = OrderedDict()
        self.held_bytes = 0
        self.seen_midway = 0  # sequences first seen after their start: not mirrored
        self.evicted = 0  # entries dropped for the size bound or the idle timeout
        self.over_bound = 0  # mirrored sequences broken because their held pairs passed a bound

    def __len__(self) -> int:
        return len(self._open)

    # -- sampling (router) ----------------------------------------------------------------------
    def admit(self, sid: int | str, start: bool, end: bool) -> SequenceState | None:
        """A request of sequence ``sid``, sampled for this target: the state to send it under, or
        None when it must not be sent (the sequence is not mirrored, or was broken)."""
        now = self.clock()
        self._sweep(now, sid not in self._open)
        seq = self._open.get(sid)
        if start and seq is not None:
            self._close(seq)  # a new start on an open id ends the old sequence
            seq = None
        if seq is None:
            seq = SequenceState(self, sid, start, now)
            if not start:
                self.seen_midway += 1
            self._open[sid] = seq
        else:
            seq.last = now
            self._open.move_to_end(sid)
        seq.seen += 1
        if end:
            seq.end_seen = True
        if not seq.mirrored or seq.broken:
            if seq.broken:
                self.stats.sequence_requests_excluded += 1
            if end:
                self._forget(seq)
            return None
        return seq

    def sent(self, seq: SequenceState) -> None:
        """The request admitted under ``seq`` was sent to the shadow."""
        if seq.sent == 0:
            self.stats.sequences_mirrored += 1
        seq.sent += 1

    def not_sent(self, seq: SequenceState) -> None:
        """The request admitted under ``seq`` could not be sent (shed, down, not ready)."""
        if seq.sent == 0:
            seq.mirrored = False  # its start was not sent: the sequence is not mirrored at all
            seq.seen = 0
            if seq.end_seen:
                self._forget(seq)
            return
        self.break_(seq)
        if seq.end_seen:
            self._forget(seq)

    # -- pairing --------------------------------------------------------------------------------
    def failed(self, seq: SequenceState) -> None:
        """A request of ``seq`` got no pair (the shadow call or live failed): exclude it."""
        seq.answered += 1
        self.break_(seq)
        if seq.complete:
            self._forget(seq)

    def hold(self, seq: SequenceState, pair: tuple, size: int) -> list[tuple]:
        """One answered pair of ``seq`` (``size``: bytes of both answers). Returns the pairs to
        compare now, in order (all of the sequence's, when this one completes it), else []."""
        seq.answered += 1
        if not seq.broken:
            if len(seq.held) >= self.max_pairs or self.held_bytes + size > self.max_bytes:
                self.over_bound += 1
                self.break_(seq)
            else:
                seq.held.append(pair)
                seq.held_bytes += size
                self.held_bytes += size
        if not seq.complete:
            return []
        self._forget(seq)
        if seq.broken:
            return []
        pairs = seq.held
        self._release(seq)
        return pairs

    def break_(self, seq: SequenceState) -> None:
        """Exclude a mirrored sequence from the comparison (counted once)."""
        if seq.broken or not seq.mirrored:
            return
        seq.broken = True
        self.stats.sequences_shed_midway += 1
        self.stats.sequence_requests_excluded += seq.seen
        self._release(seq)

    # -- bounds ---------------------------------------------------------------------------------
    def _release(self, seq: SequenceState) -> None:
        self.held_bytes -= seq.held_bytes
        seq.held = []
        seq.held_bytes = 0

    def _forget(self, seq: SequenceState) -> None:
        if self._open.get(seq.id) is seq:
            del self._open[seq.id]

    def _close(self, seq: SequenceState) -> None:
        """``seq`` leaves the table before it completed: a mirrored one is excluded."""
        self._forget(seq)
        if seq.mirrored and not seq.complete:
            self.break_(seq)

    def _sweep(self, now: float, inserting: bool) -> None:
        """Evict idle sequences, oldest first, and make room for one more when ``inserting``."""
        o = self._open
        while o:
            seq = next(iter(o.values()))
            if (len(o) < self.max_sequences or not inserting) and now - seq.last <= self.idle_s:
                break
            self.evicted += 1
            self._close(seq)


class SequenceTables:
    """Every target's SequenceTable, keyed by (route model, target name): a route entry may be
    rebuilt (its legs replaced) while a sequence is open, so nothing is kept on the entry."""

    def __init__(self, **bounds: Any) -> None:
        self.bounds = bounds
        self.tables: dict[tuple[str, str], SequenceTable] = {}

    def table(self, route: str, target: str, stats: ShadowStats) -> SequenceTable:
        t = self.tables.get((route, target))
        if t is None or t.stats is not stats:
            t = self.tables[(route, target)] = SequenceTable(stats, **self.bounds)
        return t

    def admit(self, route: str, leg: Any, seq: tuple) -> SequenceState | None:
        """``SequenceTable.admit`` on the table of ``leg`` (a router ShadowLeg) of ``route``."""
        return self.table(route, leg.target.name, leg.stats).admit(*seq)

    def not_mirrored(self, route: str, legs: Any, key: float, seq: tuple) -> None:
        """A request of sequence ``seq`` that is never mirrored (shared memory, another version):
        on every target that sampled it, its mirrored sequence breaks."""
        for leg in legs:
            if key < leg.target.sample_rate and (sq := self.admit(route, leg, seq)) is not None:
                sq.table.not_sent(sq)
