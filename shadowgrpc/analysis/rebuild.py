"""The paired log's rows -> the comparison state (state.FrontState) the live service keeps, so that
``report.build_report`` gives the offline report with the online one's code.

Counts come from the grouped SQL (sql.py); the sketches are fed with the selected rows by the
functions the front itself runs (``compare._compare_output``, ``outcomes.score``,
``LatencySketch.record_many``), many requests per call: every sketch adds rows, so a batch gives
what the requests one by one gave. What depends on the order is kept in order: the first request
of each output is compared alone (it fixes the output's kind, whether it holds probabilities and,
with ``freeze_rows``, its drift edges), as it was online.

Not in the log, so not in an offline report: the front's pass-through counts (unrouted, unparsed,
stream messages), input completeness, compute cost, and the pair store's own counters (waiting,
evictions). Outcomes are joined by id without the online store's time-to-live or size bound, so a
late outcome that the front counted as unknown is scored offline.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from ..compare import _compare_output
from ..config import Route
from ..outcomes import score
from ..pairlog.schema import COMPARED, CONTRACT_MISMATCH, DOWN, EXPLICIT_VERSION, INTERNAL_ERROR, LIVE_FAILED, SENT, SHED, SHM
from ..state import FrontState, RouteState, TargetState
from . import sql
from .tensors import Output, arrays, one, signatures

log = logging.getLogger("shadowgrpc.analysis")


class Engine(Protocol):
    def rows(self, query: str) -> list[tuple]: ...
    def arrow(self, query: str) -> pa.Table: ...


def rebuild(engine: Engine, routes: dict[str, Route], where: str = "", progress: Any = None) -> FrontState:
    """The state the log's rows (those matching ``where``) describe. ``routes``: route config by
    the name in the log's ``route`` partition (from the files' metadata, or a config file)."""
    state = FrontState.for_routes(tuple(routes.values()), 0, 0.0, 0)
    state.routes = {name: state.routes[r.model] for name, r in routes.items()}
    _route_counts(state, engine.rows(sql.route_counts(where)))
    _target_counts(state, engine.rows(sql.target_counts(where)))
    _latencies(state, engine.arrow(sql.live_latency(where)), engine.arrow(sql.shadow_latency(where)))
    joined: dict[str, bool] = {}  # outcome id -> scored for at least one target
    for name, rs in state.routes.items():
        for ts in rs.shadows:
            i = rs.shadows.index(ts)
            table = engine.arrow(sql.compared(where, name, i))
            if table.num_rows:
                _compare(rs, ts, table, joined)
            if progress is not None:
                progress(table.num_rows)
    _outcome_counts(state, engine.rows(sql.outcome_counts(where)), joined)
    first, last, _ = engine.rows(sql.span(where))[0]
    if first is not None:  # uptime_s of the report: the span of the requests' arrival
        state.started, state.taken = first.timestamp(), last.timestamp()
    return state


def _route(state: FrontState, name: str) -> RouteState | None:
    rs = state.routes.get(name)
    if rs is None:
        log.warning("rows of route %r skipped: no config for it in the log's metadata (give --config)", name)
    return rs


def _route_counts(state: FrontState, rows: list[tuple]) -> None:
    for route, live_status, mirror, n in rows:
        rs = _route(state, route)
        if rs is None:
            continue
        st = rs.stats
        st.requests += n
        if live_status == "OK":
            st.live_ok += n
        else:
            st.live_errors[live_status] += n
        if mirror == SHM:
            st.shm_not_mirrored += n
        elif mirror == EXPLICIT_VERSION:
            st.explicit_version_not_mirrored += n


def _target(state: FrontState, route: str, index: int) -> TargetState | None:
    rs = state.routes.get(route)
    if rs is None or not 0 <= index < len(rs.shadows):
        return None
    return rs.shadows[index]


def _target_counts(state: FrontState, rows: list[tuple]) -> None:
    for route, index, mirror, sampled, status, pair, n in rows:
        ts = _target(state, route, index)
        if ts is None:
            continue
        s = ts.stats
        if sampled:
            s.sampled += n
        if mirror == SHED:
            s.shed += n
        elif mirror == DOWN:
            s.down += n
        elif mirror == SENT:
            s.sent += n
            if status == "OK":
                s.ok += n
            else:
                s.errors[status or "UNKNOWN"] += n
            if pair == COMPARED:
                s.compared += n
            elif pair == CONTRACT_MISMATCH:
                s.contract_mismatch += n
            elif pair == LIVE_FAILED:
                s.live_failed += n
            elif pair == INTERNAL_ERROR:
                s.internal_errors += n


def _np(col: pa.ChunkedArray) -> np.ndarray:
    return col.to_numpy(zero_copy_only=False)


def _latencies(state: FrontState, live: pa.Table, shadow: pa.Table) -> None:
    routes = _np(live.column("route"))
    for name, rs in state.routes.items():
        m = routes == name
        if m.any():
            rs.stats.live_latency.record_many(_np(live.column("live_latency_s"))[m].astype(np.float64))
            rs.stats.front_added.record_many(_np(live.column("front_added_s"))[m].astype(np.float64))
    routes, idx = _np(shadow.column("route")), _np(shadow.column("target_index"))
    lat = _np(shadow.column("shadow_latency_s")).astype(np.float64)
    for name, rs in state.routes.items():
        for i, ts in enumerate(rs.shadows):
            m = (routes == name) & (idx == i)
            if m.any():
                ts.stats.latency.record_many(lat[m])


# -- the comparison and the ground-truth join -------------------------------------------------------
def _compare(rs: RouteState, ts: TargetState, table: pa.Table, joined: dict[str, bool]) -> None:
    live_col = table.column("live_outputs").combine_chunks()
    shadow_col = table.column("shadow_outputs").combine_chunks()
    lsig, lsigs = signatures(live_col)
    ssig, ssigs = signatures(shadow_col)
    key = lsig * (len(ssigs) + 1) + ssig
    _, first = np.unique(key, return_index=True)
    buckets = _slice_buckets(table.column("slice_buckets").combine_chunks(), len(rs.route.slices))
    for start in sorted(first):
        if lsig[start] < 0 or ssig[start] < 0:
            continue
        rows = np.flatnonzero(key == key[start])
        g = _Group(rs, ts, table, rows, lsigs[lsig[start]], ssigs[ssig[start]], live_col, shadow_col, buckets)
        g.compare()
        g.join(joined)


def _slice_buckets(col: pa.Array, n_slices: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per slice: (values, start offset per row, length per row; -1: none) of every row's buckets."""
    out = []
    n = len(col)
    if n_slices == 0:
        return out
    inner = col.flatten()  # list<int16> per (row, slice)
    outer_off = col.offsets.to_numpy(zero_copy_only=False)[: n + 1]
    outer_valid = col.is_valid().to_numpy(zero_copy_only=False)
    inner_off = inner.offsets.to_numpy(zero_copy_only=False)
    inner_valid = inner.is_valid().to_numpy(zero_copy_only=False)
    values = inner.flatten().to_numpy(zero_copy_only=False).astype(np.int16)
    for i in range(n_slices):
        has = outer_valid & (outer_off[:-1] + i < outer_off[1:])
        if not len(inner):
            out.append((values, np.zeros(n, np.int64), np.full(n, -1, np.int64)))
            continue
        pos = np.where(has, outer_off[:-1] + i, 0)
        ok = has & inner_valid[pos]
        starts = np.where(ok, inner_off[pos], 0)
        lengths = np.where(ok, inner_off[pos + 1] - inner_off[pos], -1)
        out.append((values, starts, lengths))
    return out


class _Group:
    """Compared rows of one target whose live and shadow answers have the same signatures."""

    def __init__(self, rs, ts, table, rows, lsig: tuple[Output, ...], ssig: tuple[Output, ...], live_col, shadow_col, buckets) -> None:
        self.rs, self.ts, self.table, self.rows, self.lsig, self.ssig = rs, ts, table, rows, lsig, ssig
        self.live = arrays(live_col, rows, lsig)
        by_name = dict(zip((o.name for o in ssig), arrays(shadow_col, rows, ssig)))
        self.shadow = [by_name.get(o.name) for o in lsig]
        self.buckets = buckets
        self.primary: tuple[np.ndarray, np.ndarray, bool, int] | None = None

    def _buckets_for(self, sel: np.ndarray, r: int) -> list[np.ndarray]:
        """Per slice: the bucket of every output row of the requests ``sel`` (indexes into
        self.rows), as ``slices.rows_for`` gives per request (all ``missing`` when counts differ)."""
        out = []
        for i, sl in enumerate(self.rs.route.slices):
            values, starts, lengths = self.buckets[i]
            rows = self.rows[sel]
            missing = len(sl.buckets) - 1
            res = np.full((len(rows), r), missing, dtype=np.int16)
            fit = lengths[rows] == r
            if fit.any() and r:
                idx = starts[rows[fit]][:, None] + np.arange(r)[None, :]
                res[fit] = values[idx]
            out.append(res.reshape(-1))
        return out

    def compare(self) -> None:
        n = len(self.rows)
        done = 0
        while done < n and self._needs_one(done):
            self._feed(np.array([done]), single=True)
            done += 1
        if done < n:
            self._feed(np.arange(done, n), single=False)
        self._set_primary()

    def _needs_one(self, i: int) -> bool:
        """Must request ``i`` be compared alone (it decides something for later ones)?"""
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
        for o, a, b in zip(self.lsig, self.live, self.shadow):
            if a is None or b is None or a.size == 0:
                continue
            r = o.shape[0] if o.shape else 1
            if single:
                la, sb = one(a, int(sel[0]), o.shape), one(b, int(sel[0]), o.shape)
            else:
                la = a[sel[0] * r : (sel[-1] + 1) * r] if len(sel) else a[:0]
                sb = b[sel[0] * r : (sel[-1] + 1) * r] if len(sel) else b[:0]
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

    def join(self, joined: dict[str, bool]) -> None:
        """Score the rows that have an outcome (and an id no other request carried)."""
        t = self.table
        labels_col = t.column("true_labels").combine_chunks().take(pa.array(self.rows))
        values_col = t.column("true_values").combine_chunks().take(pa.array(self.rows))
        reqs = _np(t.column("id_requests").combine_chunks().take(pa.array(self.rows)))
        has = (labels_col.is_valid().to_numpy(zero_copy_only=False) | values_col.is_valid().to_numpy(zero_copy_only=False))
        has &= np.nan_to_num(reqs.astype(np.float64), nan=0.0) == 1
        if not has.any():
            return
        ids = t.column("request_id").combine_chunks().take(pa.array(self.rows)).to_pylist()
        if self.primary is None:
            return  # no numeric output: never stored for the join (its outcomes stay unknown)
        la, sb, probabilities, r = self.primary
        classifier = la.ndim == 2 and la.shape[1] > 1
        lab = _lists(labels_col, np.int64)
        val = _lists(values_col, np.float64)
        ok_rows, truths = [], []
        sel = np.flatnonzero(has)
        for i in sel:
            lb, vl = lab[i], val[i]
            if classifier:
                good = lb is not None and len(lb) == r and (r == 0 or (lb.min() >= 0 and lb.max() < la.shape[1]))
                truth = lb
            else:
                truth = vl if vl is not None else (lb.astype(np.float64) if lb is not None else None)
                good = truth is not None and len(truth) == r
            if good:
                ok_rows.append(i)
                truths.append(truth)
            else:
                self.ts.outcomes.shape_mismatch += 1
            joined.setdefault(ids[i], False)
        if ok_rows:
            idx = (np.asarray(ok_rows)[:, None] * r + np.arange(r)[None, :]).reshape(-1)
            truth = np.concatenate(truths) if truths else None
            b = self._buckets_for(np.asarray(ok_rows), r)
            labels = truth if classifier else None
            values = None if classifier else truth
            score(self.ts.outcomes, la[idx], sb[idx], labels, values, self.rs.route.slices, b, probabilities)
            for i in ok_rows:
                joined[ids[i]] = True


def _lists(col: pa.Array, dtype) -> list[np.ndarray | None]:
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    off = col.offsets.to_numpy(zero_copy_only=False)
    flat = col.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False) if len(col.values) else np.zeros(0, dtype)
    return [flat[off[i] : off[i + 1]] if valid[i] else None for i in range(len(col))]


def _outcome_counts(state: FrontState, rows: list[tuple], joined: dict[str, bool]) -> None:
    c = {}
    for what, reason, n in rows:
        if what == "rejected":
            state.outcomes_rejected[reason or "unknown"] += n
        else:
            c[what] = n
    distinct = c.get("distinct", 0)
    state.outcomes_duplicate = c.get("received", 0) - distinct
    state.outcomes_reused = c.get("reused", 0)
    accepted = sum(1 for v in joined.values() if v)
    state.outcomes_mismatch = len(joined) - accepted
    state.outcomes_unknown = distinct - state.outcomes_reused - len(joined)
