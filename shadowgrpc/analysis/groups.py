"""One shadow target's compared pairs -> its comparison sketches and ground-truth scores.

Rows are grouped by the signature of their answers (output names, datatypes, shapes: nearly
always one group) and each group goes through ``compare._compare_output`` and ``outcomes.score``
as one batch, every request's tensors concatenated along the first axis. The order the front
compared them in (the keys shadow_answered, writer, request_seq, sorted here) matters only for
what the first request decides: its output's kind, whether it holds probabilities and, with
``freeze_rows``, the drift edges. So the rows that decide are fed alone, in that order, and the
rest as one batch in the files' order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..compare import _compare_output
from ..outcomes import score
from ..state import RouteState, TargetState
from .tensors import Output, arrays, as_numpy, one, signatures



class Outcomes:
    """The outcomes joined to compared requests (sql.joined_outcomes), by position, and which of
    them a target scored (``seen``: joined to a pair; ``accepted``: scored for some target)."""

    def __init__(self, table: pa.Table) -> None:
        self.ids = table.column("request_id").combine_chunks()
        self.labels = table.column("true_labels").combine_chunks()
        self.values = table.column("true_values").combine_chunks()
        self.single = as_numpy(table.column("id_requests").combine_chunks()) == 1  # ids carried by one request
        self.seen = np.zeros(len(self.ids), dtype=bool)
        self.accepted = np.zeros(len(self.ids), dtype=bool)

    def lookup(self, ids: pa.Array) -> np.ndarray:
        """The outcome position of each id (-1: none, or its id was reused)."""
        if not len(self.ids):
            return np.full(len(ids), -1, dtype=np.int64)
        idx = pc.index_in(ids, value_set=self.ids)
        pos = as_numpy(pc.fill_null(idx, -1)).astype(np.int64)
        ok = pos >= 0
        ok[ok] = self.single[pos[ok]]
        return np.where(ok, pos, -1)


def compare_target(rs: RouteState, ts: TargetState, table: pa.Table, outcomes: Outcomes) -> None:
    n = table.num_rows
    keys = table.select(["shadow_answered", "writer", "request_seq"])
    order = as_numpy(pc.sort_indices(keys, sort_keys=[("shadow_answered", "ascending"), ("writer", "ascending"), ("request_seq", "ascending")]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    live_col = table.column("live_outputs").combine_chunks()
    shadow_col = table.column("shadow_outputs").combine_chunks()
    lsig, lsigs = signatures(live_col)
    ssig, ssigs = signatures(shadow_col)
    key = lsig * (len(ssigs) + 1) + ssig
    buckets = _slice_buckets(table.column("slice_buckets").combine_chunks(), len(rs.route.slices))
    pos = outcomes.lookup(table.column("request_id").combine_chunks())
    uniq, inverse = np.unique(key, return_inverse=True)
    first_rank = np.full(len(uniq), n, dtype=np.int64)
    np.minimum.at(first_rank, inverse, rank)
    for g in np.argsort(first_rank):  # groups in the order their first request was compared
        rows = np.flatnonzero(inverse == g) if len(uniq) > 1 else np.arange(n)
        if lsig[rows[0]] < 0 or ssig[rows[0]] < 0:
            continue
        grp = _Group(rs, ts, rows, lsigs[lsig[rows[0]]], ssigs[ssig[rows[0]]], live_col, shadow_col, buckets)
        grp.compare(rank[rows])
        grp.join(outcomes, pos[rows])


def _slice_buckets(col: pa.Array, n_slices: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per slice: (values, start offset per row, length per row; -1: none) of every row's buckets."""
    out = []
    n = len(col)
    if n_slices == 0:
        return out
    inner = col.flatten()  # list<int16> per (row, slice)
    outer_off = as_numpy(col.offsets)[: n + 1]
    outer_valid = as_numpy(col.is_valid())
    inner_off = as_numpy(inner.offsets)
    inner_valid = as_numpy(inner.is_valid())
    values = as_numpy(inner.flatten()).astype(np.int16)
    for i in range(n_slices):
        has = outer_valid & (outer_off[:-1] + i < outer_off[1:])
        if not len(inner):
            out.append((values, np.zeros(n, np.int64), np.full(n, -1, np.int64)))
            continue
        p = np.where(has, outer_off[:-1] + i, 0)
        ok = has & inner_valid[p]
        out.append((values, np.where(ok, inner_off[p], 0), np.where(ok, inner_off[p + 1] - inner_off[p], -1)))
    return out


class _Group:
    """Compared rows of one target whose live and shadow answers have the same signatures;
    ``rows`` index the target's table, positions (0..len(rows)) index the group's arrays."""

    def __init__(self, rs: RouteState, ts: TargetState, rows: np.ndarray, lsig: tuple[Output, ...], ssig: tuple[Output, ...], live_col, shadow_col, buckets) -> None:
        self.rs, self.ts, self.rows, self.lsig = rs, ts, rows, lsig
        self.live = arrays(live_col, rows, lsig)
        by_name = dict(zip((o.name for o in ssig), arrays(shadow_col, rows, ssig)))
        self.shadow = [by_name.get(o.name) for o in lsig]
        self.buckets = buckets
        self.primary: tuple[np.ndarray, np.ndarray, bool, int] | None = None

    def _buckets_for(self, sel: np.ndarray, r: int) -> list[np.ndarray]:
        """Per slice: the bucket of every output row of the requests at positions ``sel``, as
        ``slices.rows_for`` gives per request (all ``missing`` when the row counts differ)."""
        out = []
        for i, sl in enumerate(self.rs.route.slices):
            values, starts, lengths = self.buckets[i]
            rows = self.rows[sel]
            res = np.full((len(rows), r), len(sl.buckets) - 1, dtype=np.int16)
            fit = lengths[rows] == r
            if fit.any() and r:
                res[fit] = values[starts[rows[fit]][:, None] + np.arange(r)[None, :]]
            out.append(res.reshape(-1))
        return out

    def compare(self, rank: np.ndarray) -> None:
        n = len(self.rows)
        by_rank = np.argsort(rank, kind="stable")
        fed = 0
        while fed < n and self._needs_one(int(by_rank[fed])):
            self._feed(by_rank[fed : fed + 1], single=True)
            fed += 1
        if fed < n:
            rest = np.sort(by_rank[fed:])
            self._feed(rest, single=False)
        self._set_primary()

    def _needs_one(self, i: int) -> bool:
        """Must the request at position ``i`` be compared alone (it decides something)?"""
        outs = self.ts.stats.outputs
        for o, a in zip(self.lsig, self.live):
            if a is None:
                continue
            st = outs.get(o.name)
            if st is None:
                return True
            if st.hist_live is None and a.dtype.kind == "f" and self.rs.route.output_spec(o.name).freeze_rows:
                return True
        return False

    def _feed(self, sel: np.ndarray, single: bool) -> None:
        s = self.ts.stats
        contiguous = bool(len(sel)) and int(sel[-1]) - int(sel[0]) + 1 == len(sel)
        for o, a, b in zip(self.lsig, self.live, self.shadow):
            if a is None or b is None or a.size == 0:
                continue
            r = o.shape[0] if o.shape else 1
            if single:
                la, sb = one(a, int(sel[0]), o.shape), one(b, int(sel[0]), o.shape)
            elif contiguous:
                la, sb = a[int(sel[0]) * r : (int(sel[-1]) + 1) * r], b[int(sel[0]) * r : (int(sel[-1]) + 1) * r]
            else:
                la, sb = _take(a, sel, r), _take(b, sel, r)
            out = s.outputs.get(o.name)
            if out is not None and out.kind == "classifier" and la.shape[-1] != out.paired.confusion.shape[0]:
                s.contract_mismatch += len(sel)  # the class count changed: not comparable (each request)
                continue
            _compare_output(s, self.rs.route, o.name, la, sb, self._buckets_for(sel, r))

    def _set_primary(self) -> None:
        """The first numeric output (rows x values) of live and shadow, as compare_responses
        returns it for the ground-truth join."""
        outs = self.ts.stats.outputs
        for o, a, b in zip(self.lsig, self.live, self.shadow):
            if a is None or b is None or a.size == 0 or not o.shape or o.shape[0] == 0 or o.name not in outs:
                continue
            out = outs[o.name]
            r = o.shape[0]
            la, sb = a.reshape(len(self.rows) * r, -1), b.reshape(len(self.rows) * r, -1)
            if out.kind == "binary" and la.shape[1] == 1:
                la, sb = (np.hstack([1.0 - x.astype(np.float64), x.astype(np.float64)]) for x in (la, sb))
            self.primary = (la, sb, out.probabilities, r)
            return

    def join(self, outcomes: Outcomes, pos: np.ndarray) -> None:
        """Score the requests that have an outcome (``pos``: its position per request, -1: none)."""
        has = np.flatnonzero(pos >= 0)
        if not len(has) or self.primary is None:
            return  # no numeric output: never stored for the join online (its outcomes stay unknown)
        la, sb, probabilities, r = self.primary
        p = pos[has]
        outcomes.seen[p] = True
        lab_ok, lab_off, lab_flat = _lists(outcomes.labels, p, np.int64)
        val_ok, val_off, val_flat = _lists(outcomes.values, p, np.float64)
        classifier = la.ndim == 2 and la.shape[1] > 1
        if classifier:
            good = _fits(lab_ok, lab_off, lab_flat, r, la.shape[1])
            self._score(la, sb, r, has[good], _gather(lab_flat, lab_off[good], r), None, probabilities)
        else:
            by_val = _fits(val_ok, val_off, val_flat, r)
            by_lab = ~val_ok & _fits(lab_ok, lab_off, lab_flat, r)
            self._score(la, sb, r, has[by_val], None, _gather(val_flat, val_off[by_val], r), probabilities)
            self._score(la, sb, r, has[by_lab], None, _gather(lab_flat, lab_off[by_lab], r).astype(np.float64), probabilities)
            good = by_val | by_lab
        self.ts.outcomes.shape_mismatch += int((~good).sum())
        outcomes.accepted[p[good]] = True

    def _score(self, la, sb, r: int, sel: np.ndarray, labels, values, probabilities: bool) -> None:
        """Score the requests at positions ``sel`` (``r`` rows each) against their truth."""
        if not len(sel):
            return
        idx = (sel[:, None] * r + np.arange(r)[None, :]).reshape(-1)
        score(self.ts.outcomes, la[idx], sb[idx], labels, values, self.rs.route.slices, self._buckets_for(sel, r), probabilities)


def _take(a: np.ndarray, sel: np.ndarray, r: int) -> np.ndarray:
    """The rows of the requests at positions ``sel`` (r rows each) of a group array."""
    return a.reshape((-1, r) + a.shape[1:])[sel].reshape((-1,) + a.shape[1:])


def _lists(col: pa.Array, p: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(valid, [start, end) per entry, flat values) of the list entries at positions ``p``."""
    valid = as_numpy(col.is_valid())[p]
    off = as_numpy(col.offsets)
    flat = as_numpy(col.values).astype(dtype, copy=False) if len(col.values) else np.zeros(0, dtype)
    return valid, np.stack([off[p], off[p + 1]], axis=1), flat


def _fits(ok: np.ndarray, off: np.ndarray, flat: np.ndarray, r: int, classes: int = 0) -> np.ndarray:
    """Entries with exactly ``r`` values (and, for ``classes``, every label in [0, classes))."""
    good = ok & (off[:, 1] - off[:, 0] == r)
    if classes and r and good.any():
        v = flat[off[good, 0][:, None] + np.arange(r)[None, :]]
        good[np.flatnonzero(good)] = (v.min(axis=1) >= 0) & (v.max(axis=1) < classes)
    return good


def _gather(flat: np.ndarray, off: np.ndarray, r: int) -> np.ndarray:
    return flat[(off[:, 0][:, None] + np.arange(r)[None, :]).reshape(-1)] if len(off) else flat[:0]
