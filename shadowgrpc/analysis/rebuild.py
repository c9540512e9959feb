"""The paired log's rows -> the comparison state (state.FrontState) the live service keeps, so that
``report.build_report`` gives the offline report with the online one's code.

Counts come from the grouped SQL (sql.py); the sketches are fed with the selected rows by the
functions the front itself runs (``compare._compare_output``, ``outcomes.score``,
``LatencySketch.record_many``), many requests per call: every sketch adds rows, so a batch gives
what the requests one by one gave. What depends on the order is kept in order: the first request
of each output is compared alone (it fixes the output's kind, whether it holds probabilities and,
with ``freeze_rows``, its drift edges), as it was online.

Comparison windows: each (route, target_index) is one; those the routes' config does not list
(auto-shadow's, opened at run time) are built from what their rows name (``_windows``).

Not in the log, so not in an offline report: the front's pass-through counts (unrouted, unparsed,
stream messages), input completeness, compute cost, the pair store's own counters (waiting,
evictions), a target's status and window times, and the auto-shadow policy's candidates. Outcomes are joined by id without the online store's time-to-live or size bound, so a
late outcome that the front counted as unknown is scored offline.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import Route, ShadowTarget
from ..pairlog.schema import (
    COMPARED, CONTRACT_MISMATCH, EXCLUDED, EXPLICIT_VERSION, INTERNAL_ERROR, LIVE_FAILED, NOT_SAMPLED, NOT_SENT, SENT, SHM, TOO_LARGE,
)  # fmt: skip
from ..rules import NOT_INCLUDED, UNREADABLE
from ..state import FrontState, RouteState, TargetState
from .sql import compared, joined_outcomes, live_latency, outcome_counts, route_counts, shadow_latency, span, target_counts, targets
from .groups import Outcomes, compare_target
from .tensors import as_numpy

log = logging.getLogger("shadowgrpc.analysis")


class Engine(Protocol):
    def rows(self, query: str) -> list[tuple]: ...
    def arrow(self, query: str) -> pa.Table: ...


def rebuild(engine: Engine, routes: dict[str, Route], where: str = "", progress: Any = None) -> FrontState:
    """The state the log's rows (those matching ``where``) describe. ``routes``: route config by
    the name in the log's ``route`` partition (from the files' metadata, or a config file)."""
    state = FrontState.for_routes(tuple(routes.values()), 0, 0.0, 0)
    state.routes = {name: state.routes[r.model] for name, r in routes.items()}
    windows = _windows(state, engine.rows(targets()))
    _route_counts(state, engine.rows(route_counts(where)))
    _target_counts(windows, engine.rows(target_counts(where)))
    _latencies(state, windows, engine.arrow(live_latency(where)), engine.arrow(shadow_latency(where)))
    outcomes = Outcomes(engine.arrow(joined_outcomes(where)))
    for (name, i), ts in windows.items():
        table = engine.arrow(compared(where, name, i))
        if table.num_rows:
            compare_target(state.routes[name], ts, table, outcomes)
        if progress is not None:
            progress(table.num_rows)
    _outcome_counts(state, engine.rows(outcome_counts(where)), outcomes)
    first, last, _ = engine.rows(span(where))[0]
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
        elif mirror == TOO_LARGE:
            st.too_large += n
        elif mirror and (mirror.startswith(EXCLUDED) or mirror in (NOT_INCLUDED, UNREADABLE)):  # [routes.mirror] rules
            st.excluded[mirror] += n


def _windows(state: FrontState, rows: list[tuple]) -> dict[tuple[str, int], TargetState]:
    """(route, target_index) -> its TargetState: the configured shadows by position, then each
    comparison window the rows hold beyond them (auto-shadow's: ``target_index`` counts windows),
    built from what its rows name, as the front named it (repository.py: ``model:version``)."""
    out = {(name, i): ts for name, rs in state.routes.items() for i, ts in enumerate(rs.shadows)}
    for route, index, target, model, version, rate in rows:  # in index order
        rs = state.routes.get(route)
        if rs is None or (route, index) in out:
            continue
        a = rs.route.auto if rs.route.auto is not None and rs.route.auto.model == model else None
        t = ShadowTarget(
            name=target or f"{model}:{version}", address=a.address if a else "", model=model or "", version=version or "",
            sample_rate=1.0 if rate is None else rate, deadline_s=a.deadline_s if a else None, max_in_flight=a.max_in_flight if a else 64,
        )  # fmt: skip
        out[route, index] = ts = TargetState(t, auto=True)
        rs.shadows.append(ts)
    return out


def _target_counts(windows: dict[tuple[str, int], TargetState], rows: list[tuple]) -> None:
    for route, index, mirror, sampled, status, pair, n in rows:
        ts = windows.get((route, index))
        if ts is None:
            continue
        s = ts.stats
        if sampled:
            s.sampled += n
        if mirror in NOT_SENT or mirror == NOT_SAMPLED:  # each the name of its counter
            setattr(s, mirror, getattr(s, mirror) + n)
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



def _latencies(state: FrontState, windows: dict[tuple[str, int], TargetState], live: pa.Table, shadow: pa.Table) -> None:
    for name, rs in state.routes.items():
        m = as_numpy(pc.equal(live.column("route"), name)).astype(bool)
        if m.any():
            rs.stats.live_latency.record_many(as_numpy(live.column("live_latency_s"))[m].astype(np.float64))
            rs.stats.front_added.record_many(as_numpy(live.column("front_added_s"))[m].astype(np.float64))
    idx = as_numpy(shadow.column("target_index"))
    lat = as_numpy(shadow.column("shadow_latency_s")).astype(np.float64)
    on_route = {name: as_numpy(pc.equal(shadow.column("route"), name)).astype(bool) for name in state.routes}
    for (name, i), ts in windows.items():
        m = on_route[name] & (idx == i)
        if m.any():
            ts.stats.latency.record_many(lat[m])


def _outcome_counts(state: FrontState, rows: list[tuple], outcomes: Outcomes) -> None:
    c = {}
    for what, reason, n in rows:
        if what == "rejected":
            state.outcomes_rejected[reason or "unknown"] += n
        else:
            c[what] = n
    distinct = c.get("distinct", 0)
    state.outcomes_duplicate = c.get("received", 0) - distinct
    state.outcomes_reused = c.get("reused", 0)
    joined, accepted = int(outcomes.seen.sum()), int(outcomes.accepted.sum())
    state.outcomes_mismatch = joined - accepted
    state.outcomes_unknown = distinct - state.outcomes_reused - joined
