"""Live vs shadow: decode both responses' outputs (zero-copy views) and update the target's stats.

Runs in the shadow task after both answers are in, never on the live path. Outputs whose names,
datatypes or shapes differ between live and shadow are a *contract mismatch*: counted, not
compared. Each output is compared by its kind (``[routes.outputs.NAME] kind``, else inferred: a
float output whose last axis has more than one class is a classifier, anything else regression):
- classifier: live x shadow top-1 label confusion matrix (agreement = its trace / rows);
- binary: 2x2 agreement of (score >= threshold);
- regression: rows with |live - shadow| <= atol + rtol * |shadow|, and |live - shadow| quantiles;
- embedding: cosine similarity per row (rows = first axis);
- text (every BYTES output): exact-match rate, normalised edit distance and lengths per element
  (text.py); on a stream (streams.py) also per response position: positions 0 ..
  ``STREAM_POSITIONS - 1`` each, then one bucket for all later ones. A numeric output configured
  ``kind = "text"`` is compared by its inferred kind.
Numeric kinds also get mean/max |live - shadow| and live/shadow drift histograms on the same edges:
the output's configured ``edges``; else classifier and binary probabilities 20 bins on [0, 1],
others ``bins`` over the first ``freeze_rows`` live rows (padded 5%), frozen from then on.
For the ground-truth join the primary output is the first numeric one; a binary score is joined as
the two-class probabilities (1 - p, p). The same paired statistic is kept per bucket of each configured slice (slices.py), for rows of the
first axis, while the target's per-slice sketches stay under ``SLICE_BUDGET_BYTES``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .codec import as_array
from .config import OutputSpec, Route
from .packing import decode_bytes_tensor, scan_response
from .sketches import BinaryAgreement, CosineStats, Histogram, LabelAgreement, RegressionAgreement
from .slices import groups, rows_for
from .outcomes import invalid_rows
from .stats import OutputStats, ShadowStats, to_exact
from .text import STREAM_POSITIONS, TextAgreement, measure

PROB_EDGES = np.linspace(0.0, 1.0, 21)
NUMERIC_BINS = OutputSpec().bins
FREEZE_ROWS = OutputSpec().freeze_rows
# Default drift edges for numeric outputs: a fixed symmetric log grid (4 bins per decade for
# |x| in [1e-4, 1e6], zero in the middle, under/overflow beyond), the same on every replica, so
# drift histograms merge exactly. ``edges`` in the config, or ``freeze_rows`` > 0, replace it.
_POS = 10.0 ** (np.arange(-16, 25) / 4.0)
NUMERIC_EDGES = np.concatenate([-_POS[::-1], [0.0], _POS])
SLICE_BUDGET_BYTES = 1 << 20  # per shadow target: per-slice paired sketches of all its outputs
_NO_ROUTE = Route(model="", live=None)  # type: ignore[arg-type]

Primary = tuple[np.ndarray, np.ndarray, bool]  # live, shadow (rows x values), probabilities?


def compare_responses(
    live_raw: bytes,
    shadow_raw: bytes,
    stats: ShadowStats,
    route: Route = _NO_ROUTE,
    slice_buckets: Sequence[np.ndarray | None] = (),
) -> Primary | None:
    """Update ``stats`` with one live/shadow pair. ``slice_buckets`` (from ``slices.assign``)
    gives each request row's bucket per slice of ``route``. Returns the primary output (the first
    numeric one, as rows x values) of live and shadow and whether it holds probabilities, for the
    ground-truth join; None on a contract mismatch or when there is no numeric output."""
    try:
        live = scan_response(live_raw)
        shadow = scan_response(shadow_raw)
    except ValueError:
        stats.contract_mismatch += 1
        return None
    if [(n, d, s) for n, d, s, _ in live] != [(n, d, s) for n, d, s, _ in shadow]:
        # Same names in another order are still comparable; anything else is not.
        if sorted((n, d, s) for n, d, s, _ in live) != sorted((n, d, s) for n, d, s, _ in shadow):
            stats.contract_mismatch += 1
            return None
    shadow_by_name = {n: (d, s, c) for n, d, s, c in shadow}
    stats.compared += 1
    primary: Primary | None = None
    for name, dtype, shape, contents in live:
        sd, ss, sc = shadow_by_name[name]
        if dtype == "BYTES":
            _compare_text(stats, route, name, shape, contents, sc, slice_buckets)
            continue
        a = as_array(dtype, shape, contents)
        b = as_array(sd, ss, sc)
        if a is None or b is None or a.size == 0:
            continue
        _compare_output(stats, route, name, a, b, slice_buckets)
        if primary is None and a.ndim >= 1 and a.shape[0] > 0 and name in stats.outputs:
            out = stats.outputs[name]
            la, sb = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
            if out.kind == "binary" and la.shape[1] == 1:
                # One score per row: scored against labels as P(class 1), i.e. (1 - p, p).
                la, sb = (np.hstack([1.0 - x.astype(np.float64), x.astype(np.float64)]) for x in (la, sb))
            primary = (la, sb, out.probabilities)
    return primary


def _slice_sketch(stats: ShadowStats, out: OutputStats, i: int, bucket: int, new, n_rows: int):
    """The sketch of slice ``i``'s ``bucket`` (made by ``new()`` when first needed, within
    SLICE_BUDGET_BYTES per target), or None when the bound refuses it: its ``n_rows`` are counted
    in ``slice_rows_dropped``."""
    p = out.slices[i][bucket]
    if p is None:
        p = new()
        size = len(p.to_bytes())
        if stats.slice_bytes + size > SLICE_BUDGET_BYTES:
            out.slice_rows_dropped += n_rows
            return None
        stats.slice_bytes += size
        out.slices[i][bucket] = p
    return p


def _new_paired(kind: str, a: np.ndarray | None, spec: OutputSpec):
    if kind == "text":
        return TextAgreement()
    assert a is not None
    if kind == "classifier":
        return LabelAgreement(a.shape[-1])
    if kind == "binary":
        return BinaryAgreement(spec.threshold)
    if kind == "embedding":
        return CosineStats()
    return RegressionAgreement(spec.atol, spec.rtol)


def _update_paired(p, kind: str, a: np.ndarray, b: np.ndarray) -> None:
    """``a``/``b``: rows x values (rows = the output's first axis)."""
    if kind == "text":
        p.add(a)  # a: text.measure rows
    elif kind == "classifier":
        c = p.confusion.shape[0]
        p.update_probs(a.reshape(-1, c), b.reshape(-1, c))
    elif kind == "binary":
        p.update_binary(a, b)
    elif kind == "embedding":
        p.update_embeddings(a, b)
    else:
        p.update_regression(a, b)


def _kind(spec: OutputSpec, a: np.ndarray) -> str:
    """The configured kind, else: a float output with 2..max_classes values on its last axis is a
    classifier; a wider one (32k logits, an embedding) a vector compared by cosine, never an
    n x n confusion matrix; anything else regression."""
    if spec.kind and spec.kind != "text":
        return spec.kind
    if a.ndim >= 1 and a.dtype.kind == "f" and a.shape[-1] > 1:
        return "classifier" if a.shape[-1] <= spec.max_classes else "embedding"
    return "regression"


def _is_probabilities(spec: OutputSpec, kind: str, a: np.ndarray) -> bool:
    """Are this output's values probabilities (so a value outside [0, 1] is invalid)? The config
    says, else a classifier/binary output whose first live answer lies in [0, 1]."""
    if spec.probabilities is not None:
        return spec.probabilities
    if kind not in ("classifier", "binary") or a.dtype.kind != "f":
        return False
    with np.errstate(invalid="ignore"):
        fin = a[np.isfinite(a)]
    return bool(fin.size) and bool(fin.min() >= 0.0) and bool(fin.max() <= 1.0)


def _compare_output(stats: ShadowStats, route: Route, name: str, a: np.ndarray, b: np.ndarray, slice_buckets) -> None:
    out = stats.outputs.get(name)
    spec = route.output_spec(name)
    if out is None:
        kind = _kind(spec, a)
        if kind == "classifier" and (a.ndim == 0 or a.shape[-1] < 2):
            kind = "regression"  # a configured classifier answered with one value per row
        out = stats.outputs[name] = OutputStats(kind=kind, paired=_new_paired(kind, a, spec), probabilities=_is_probabilities(spec, kind, a))
        out.slices = [[None] * len(s.buckets) for s in route.slices]
    kind = out.kind
    if kind == "text":  # BYTES in earlier answers, numeric now: not comparable
        stats.contract_mismatch += 1
        return
    if kind == "classifier" and a.shape[-1] != out.paired.confusion.shape[0]:
        stats.contract_mismatch += 1  # the class count changed between answers: not comparable
        return
    rows = a.shape[0] if a.ndim else 1
    a2, b2 = a.reshape(rows, -1), b.reshape(rows, -1)
    out.live_invalid += invalid_rows(a2, out.probabilities, spec.classes)
    out.shadow_invalid += invalid_rows(b2, out.probabilities, spec.classes)
    _update_paired(out.paired, kind, a2, b2)
    for i, sl in enumerate(route.slices):
        missing = len(sl.buckets) - 1
        buckets = rows_for(slice_buckets[i] if i < len(slice_buckets) else None, rows, missing)
        for bucket, mask in groups(buckets):
            p = _slice_sketch(stats, out, i, bucket, lambda: _new_paired(kind, a, spec), rows if mask is None else int(mask.sum()))
            if p is None:
                continue
            _update_paired(p, kind, a2 if mask is None else a2[mask], b2 if mask is None else b2[mask])
    _bin(out, spec, a, b)
    d = np.abs(a.astype(np.float64, copy=False) - b.astype(np.float64, copy=False))
    if not np.isfinite(d).all():
        d = d[np.isfinite(d)]  # NaN/inf answers: counted by the paired sketch as invalid
    if d.size:
        out.values += int(d.size)
        out.abs_diff_fx += to_exact(d.sum())
        out.abs_diff_max = max(out.abs_diff_max, float(d.max()))


def _compare_text(stats: ShadowStats, route: Route, name: str, shape: tuple[int, ...], live, shadow, slice_buckets) -> None:
    """A BYTES output: its elements compared as text (text.py), overall, per slice bucket (an
    element's row: its index along the first axis) and, on a stream, per response position."""
    out = stats.outputs.get(name)
    if out is None:
        out = stats.outputs[name] = OutputStats(kind="text", paired=TextAgreement())
        out.slices = [[None] * len(s.buckets) for s in route.slices]
    if out.kind != "text":
        stats.contract_mismatch += 1  # another replica's or an earlier answer's kind: not comparable
        return
    count = math.prod(shape)
    rows = shape[0] if shape else 1
    items = []
    for side in (live, shadow):
        try:
            x = decode_bytes_tensor(side) if side is not None else None
        except ValueError:
            x = None
        items.append(x if x is not None and len(x) == count else None)
    if items[0] is None or items[1] is None:  # malformed BYTES contents: invalid rows of that side
        out.live_invalid += rows if items[0] is None else 0
        out.shadow_invalid += rows if items[1] is None else 0
        return
    measured = measure(items[0], items[1])
    out.paired.add(measured)
    pos = stats.stream_position
    if pos >= 0:
        pos = min(pos, STREAM_POSITIONS)
        if len(out.positions) <= pos:
            out.positions.extend([None] * (pos + 1 - len(out.positions)))
        if out.positions[pos] is None:
            out.positions[pos] = TextAgreement()
        out.positions[pos].add(measured)
    per_row = count // rows if rows else 0
    for i, sl in enumerate(route.slices):
        buckets = rows_for(slice_buckets[i] if i < len(slice_buckets) else None, rows, len(sl.buckets) - 1)
        for bucket, mask in groups(buckets):
            p = _slice_sketch(stats, out, i, bucket, TextAgreement, rows if mask is None else int(mask.sum()))
            if p is None:
                continue
            p.add(measured if mask is None else [measured[k] for k in np.flatnonzero(np.repeat(mask, per_row))])


def _bin(out: OutputStats, spec: OutputSpec, a: np.ndarray, b: np.ndarray) -> None:
    """Feed the live and shadow histograms (same edges for both; see the module doc)."""
    if a.dtype.kind != "f":
        return
    cols = a.shape[-1] if a.ndim >= 2 and out.kind != "embedding" else 1  # per class / column
    a2 = a.reshape(-1, cols)
    b2 = b.reshape(-1, cols)
    if out.hist_live is None:
        if spec.edges:
            edges = np.asarray(spec.edges)
        elif out.kind in ("classifier", "binary"):
            edges = PROB_EDGES
        elif not spec.freeze_rows:
            edges = NUMERIC_EDGES
        else:
            out.pending.append((a2.copy(), b2.copy()))
            if sum(len(x) for x, _ in out.pending) < spec.freeze_rows:
                return
            live = np.concatenate([x for x, _ in out.pending])
            finite = live[np.isfinite(live)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            pad = (hi - lo) * 0.05 or 0.5
            edges = np.linspace(lo - pad, hi + pad, spec.bins + 1)
        out.hist_live, out.hist_shadow = Histogram(edges, cols), Histogram(edges, cols)
        pending, out.pending = out.pending, []
        for x, y in pending:
            out.hist_live.update(x)
            out.hist_shadow.update(y)
        if pending:
            return
    out.hist_live.update(a2)
    out.hist_shadow.update(b2)
