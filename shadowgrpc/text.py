"""Text outputs (kind "text"): live vs shadow BYTES elements compared as text.

A BYTES output (``[routes.outputs.NAME] kind = "text"``, and every BYTES output by inference) is
compared element by element (each element of the tensor is a row; rows of a [batch, k] output are
its batch * k elements). Per row:
- *exact match*: the two elements' bytes are equal (the output's agreement is the exact-match
  rate, so the report's agreement column and the gates that read it see it);
- *unit*: both elements valid UTF-8: Unicode code points; else bytes (``byte_rows`` counts those
  rows; ``live_invalid_utf8`` / ``shadow_invalid_utf8`` the invalid elements per side);
- *edit distance*: Levenshtein over the first ``MAX_UNITS`` (4096) units of each side
  (``truncated_rows`` counts rows where either side was longer), normalised by the longer of the
  two compared lengths (0 for two empty elements): in [0, 1], 0 = identical, 1 = nothing in common.
  The compiled twin (``sketches._text_c``) or its pure-Python twin (``sketches._text_py``: with
  ``SHADOWGRPC_NO_EXTENSIONS``, or when not built) computes it; both give the same integer;
- *lengths*: each side's full length in the row's unit; the length ratio shadow / live over rows
  whose live element is not empty; empty elements are counted per side.

``TextAgreement`` accumulates that (the paired sketch of a text output, per output, per slice
bucket, and per stream response position: see compare.py), and merges exactly: counts and integer
histograms add, sums of ratios are exact integers (``stats.to_exact`` per row). Distributions:
the normalised distance in 101 bins (bin 0: exactly 0, bin k: ((k-1)/100, k/100]), lengths in
``LengthStats`` (exact below 64, then 16 bins per power of two: a quantile is its bin's upper
bound, within 6.25% above the true value, never above the largest length seen).
"""

from __future__ import annotations

import json
import math
from typing import Any

from .stats import from_exact, to_exact
from .sketches import NO_EXTENSIONS

if NO_EXTENSIONS:
    from .sketches._text_py import MAX_UNITS, levenshtein

    TEXT_IMPLEMENTATION = "py"
else:
    try:
        from .sketches._text_c import MAX_UNITS, levenshtein

        TEXT_IMPLEMENTATION = "c"
    except ImportError:  # pragma: no cover - extension not built
        from .sketches._text_py import MAX_UNITS, levenshtein

        TEXT_IMPLEMENTATION = "py"

STREAM_POSITIONS = 16  # streams: response positions kept one by one, then one bucket for the rest
EDIT_BINS = 100  # normalised distance bins of width 1/100, plus bin 0 for exactly 0
MAGIC = b"SGTX"
FORMAT_VERSION = 1

Row = tuple[bool, int, int, int, int, bool, bool, bool]  # exact, distance, compared length, live len, shadow len, live ok, shadow ok, truncated


def measure(live: list[bytes], shadow: list[bytes]) -> list[Row]:
    """One ``Row`` per element pair (see the module doc)."""
    rows: list[Row] = []
    for a, b in zip(live, shadow):
        try:
            sa: str | bytes = a.decode("utf-8")
            la = True
        except UnicodeDecodeError:
            sa, la = a, False
        try:
            sb: str | bytes = b.decode("utf-8")
            lb = True
        except UnicodeDecodeError:
            sb, lb = b, False
        if not (la and lb):
            sa, sb = a, b  # compared as bytes
        na, nb = len(sa), len(sb)
        trunc = na > MAX_UNITS or nb > MAX_UNITS
        if a == b:
            rows.append((True, 0, min(na, MAX_UNITS), na, nb, la, lb, trunc))
            continue
        ca, cb = sa[:MAX_UNITS], sb[:MAX_UNITS]
        rows.append((False, levenshtein(ca, cb), max(len(ca), len(cb)), na, nb, la, lb, trunc))
    return rows


def _length_bin(v: int) -> int:
    if v < 64:
        return v
    e = v.bit_length() - 1
    return 64 + (e - 6) * 16 + ((v >> (e - 4)) & 15)


def _length_upper(k: int) -> int:
    if k < 64:
        return k
    e, sub = (k - 64) // 16 + 6, (k - 64) % 16
    return ((17 + sub) << (e - 4)) - 1


def _rank(count: int, q: float) -> int:
    return max(1, math.ceil(q * count))


class LengthStats:
    """Lengths of one side: count, exact sum, max and a sparse histogram (see the module doc)."""

    __slots__ = ("bins", "count", "max", "total")

    def __init__(self) -> None:
        self.count = self.total = self.max = 0
        self.bins: dict[int, int] = {}

    def add(self, v: int) -> None:
        self.count += 1
        self.total += v
        self.max = max(self.max, v)
        k = _length_bin(v)
        self.bins[k] = self.bins.get(k, 0) + 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> int:
        if not self.count:
            return 0
        want, seen = _rank(self.count, q), 0
        for k in sorted(self.bins):
            seen += self.bins[k]
            if seen >= want:
                return min(_length_upper(k), self.max)
        return self.max  # pragma: no cover - the bins add up to count

    def merge(self, o: LengthStats) -> None:
        self.count += o.count
        self.total += o.total
        self.max = max(self.max, o.max)
        for k, n in o.bins.items():
            self.bins[k] = self.bins.get(k, 0) + n

    def state(self) -> list:
        return [self.count, self.total, self.max, sorted(self.bins.items())]

    @classmethod
    def of(cls, s: list) -> LengthStats:
        out = cls()
        out.count, out.total, out.max = (_int(x) for x in s[:3])
        out.bins = {_int(k): _int(n) for k, n in s[3]}
        if sum(out.bins.values()) != out.count:
            raise ValueError("length histogram does not add up to its count")
        return out


def _int(x: Any) -> int:
    if type(x) is not int or x < 0:
        raise ValueError(f"expected a non-negative integer, got {x!r}")
    return x


_COUNTS = ("count", "within", "invalid", "edit_units", "edit_max_num", "edit_max_den", "truncated", "byte_rows",
           "live_empty", "shadow_empty", "live_invalid_utf8", "shadow_invalid_utf8", "edit_fx", "ratio_fx", "ratio_rows")  # fmt: skip


class TextAgreement:
    """The paired sketch of a text output: ``count`` rows compared, ``within`` exact matches
    (``stats.paired_rows`` / ``paired_agreed`` read them; ``invalid`` is always 0: every pair of
    elements is comparable), the normalised edit distance (exact sum ``edit_fx``, histogram
    ``edit_hist``, max ``edit_max_num / edit_max_den``), raw distances ``edit_units``, both sides'
    ``LengthStats``, the length ratio (exact sum ``ratio_fx`` over ``ratio_rows``) and the counters
    of the module doc."""

    __slots__ = (*_COUNTS, "edit_hist", "live_len", "shadow_len")

    def __init__(self) -> None:
        for k in _COUNTS:
            setattr(self, k, 0)
        self.edit_max_den = 1
        self.edit_hist = [0] * (EDIT_BINS + 1)
        self.live_len = LengthStats()
        self.shadow_len = LengthStats()

    def add(self, rows: list[Row]) -> None:
        for exact, dist, clen, na, nb, la, lb, trunc in rows:
            self.count += 1
            self.within += exact
            self.truncated += trunc
            self.byte_rows += not (la and lb)
            self.live_invalid_utf8 += not la
            self.shadow_invalid_utf8 += not lb
            self.live_empty += na == 0
            self.shadow_empty += nb == 0
            self.live_len.add(na)
            self.shadow_len.add(nb)
            if na:
                self.ratio_rows += 1
                self.ratio_fx += to_exact(nb / na)
            if dist:
                self.edit_units += dist
                self.edit_fx += to_exact(dist / clen)
                self.edit_hist[(EDIT_BINS * dist + clen - 1) // clen] += 1
                if dist * self.edit_max_den > self.edit_max_num * clen:
                    g = math.gcd(dist, clen)  # in lowest terms: equal maxima have equal bytes
                    self.edit_max_num, self.edit_max_den = dist // g, clen // g
            else:
                self.edit_hist[0] += 1

    # -- figures ------------------------------------------------------------------------------------
    @property
    def agreement(self) -> float:
        return self.within / self.count if self.count else 0.0

    @property
    def edit_mean(self) -> float:
        return from_exact(self.edit_fx) / self.count if self.count else 0.0

    @property
    def edit_max(self) -> float:
        return self.edit_max_num / self.edit_max_den

    @property
    def ratio_mean(self) -> float:
        return from_exact(self.ratio_fx) / self.ratio_rows if self.ratio_rows else 0.0

    def edit_quantile(self, q: float) -> float:
        """The upper edge of the bin holding the ``q`` quantile, never above the max."""
        if not self.count:
            return 0.0
        want, seen = _rank(self.count, q), 0
        for k, n in enumerate(self.edit_hist):
            seen += n
            if seen >= want:
                return min(k / EDIT_BINS, self.edit_max)
        return self.edit_max  # pragma: no cover

    # -- merge and bytes ----------------------------------------------------------------------------
    def merge(self, o: TextAgreement) -> None:
        if o.edit_max_num * self.edit_max_den > self.edit_max_num * o.edit_max_den:
            self.edit_max_num, self.edit_max_den = o.edit_max_num, o.edit_max_den
        for k in _COUNTS:
            if k not in ("edit_max_num", "edit_max_den"):
                setattr(self, k, getattr(self, k) + getattr(o, k))
        self.edit_hist = [x + y for x, y in zip(self.edit_hist, o.edit_hist)]
        self.live_len.merge(o.live_len)
        self.shadow_len.merge(o.shadow_len)

    def to_bytes(self) -> bytes:
        doc = {k: getattr(self, k) for k in _COUNTS}
        doc.update(edit_hist=self.edit_hist, live_len=self.live_len.state(), shadow_len=self.shadow_len.state())
        return MAGIC + FORMAT_VERSION.to_bytes(2, "little") + json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TextAgreement:
        if data[:4] != MAGIC:
            raise ValueError("not a TextAgreement (wrong magic)")
        if int.from_bytes(data[4:6], "little") != FORMAT_VERSION:
            raise ValueError(f"TextAgreement format {int.from_bytes(data[4:6], 'little')} is not supported (this reads {FORMAT_VERSION})")
        try:
            doc = json.loads(data[6:])
            t = cls()
            for k in _COUNTS:
                setattr(t, k, _int(doc[k]))
            t.edit_hist = [_int(x) for x in doc["edit_hist"]]
            t.live_len, t.shadow_len = LengthStats.of(doc["live_len"]), LengthStats.of(doc["shadow_len"])
        except (KeyError, TypeError, IndexError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"bad TextAgreement: {type(e).__name__}: {e}") from None
        if len(t.edit_hist) != EDIT_BINS + 1 or sum(t.edit_hist) != t.count or t.edit_max_den == 0:
            raise ValueError("bad TextAgreement: its histogram does not fit its count")
        return t

    @property
    def nbytes(self) -> int:
        return 8 * (len(_COUNTS) + len(self.edit_hist)) + 16 * (len(self.live_len.bins) + len(self.shadow_len.bins))

    def __eq__(self, o: object) -> bool:
        return isinstance(o, TextAgreement) and self.to_bytes() == o.to_bytes()

    __hash__ = None  # type: ignore[assignment]
