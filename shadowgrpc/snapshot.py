"""Snapshots: a front's whole comparison state (state.FrontState) as one versioned document, and
the exact merge of snapshots from many replicas (or from disk), so ``shadowgrpc report`` can
combine them. A loaded or merged snapshot is a FrontState again, read like a live front's.

A snapshot is JSON (``format`` = "shadowgrpc-snapshot", ``version`` = 1) whose sketches are their
own versioned binary serialisation (``to_bytes``, identical in both twins), base64-encoded.
Counts, latency sketches, paired sketches, per-slice sketches and ground-truth scores merge
exactly (the merged report equals the report of one front that saw all the traffic), drift
histograms too with the default edges (the same on every replica). Three things do not:
- drift histograms whose edges each replica froze from its own first rows (only with
  ``outputs.NAME.freeze_rows`` > 0) may differ between replicas; those are not added: the merged
  output keeps the histogram with the most values and counts the rest in ``drift_edges_differ``;
- compute cost comes from Triton's counters, which replicas sharing a Triton would count twice:
  the first replica's is kept;
- pairs still waiting for ground truth stay on their replica; the store's counters are added.
Snapshots merge only when their routes are configured the same (the error names the route).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections import Counter
from typing import Any

import numpy as np

from . import __version__
from .budget import BudgetState, merged
from .completeness import InputsState, InputStats
from .nway import NWayState, merge_states
from ._config_auto import AutoShadow
from ._config_rollout import Budget, MirrorRule, MirrorRules
from .config import Gates, LiveTarget, OutputSpec, Route, ShadowTarget, Slice
from .outcomes import OutcomeStats, PairCounts, Scores
from .parity import Mismatch
from .sketches import BinaryAgreement, CosineStats, Histogram, LabelAgreement, LatencySketch, RegressionAgreement
from .state import FrontState, RouteState, TargetState
from .capacity import CapacityState
from .stats import OutputStats, RouteStats, ShadowStats
from .text import TextAgreement

FORMAT = "shadowgrpc-snapshot"
VERSION = 1
_SKETCHES = {c.__name__: c for c in (BinaryAgreement, CosineStats, Histogram, LabelAgreement, LatencySketch, RegressionAgreement, TextAgreement)}


class SnapshotError(ValueError):
    """A snapshot is not readable, of another version, or does not merge with the others."""


# -- encode ------------------------------------------------------------------------------------------
def _sk(s: Any) -> dict | None:
    return None if s is None else {"t": type(s).__name__, "b": base64.b64encode(s.to_bytes()).decode()}


def _unsk(d: dict | None) -> Any:
    if d is None:
        return None
    cls = _SKETCHES.get(d.get("t", ""))
    if cls is None:
        raise SnapshotError(f"unknown sketch type {d.get('t')!r}")
    try:
        return cls.from_bytes(base64.b64decode(d["b"]))
    except (KeyError, ValueError, TypeError) as e:
        raise SnapshotError(f"bad {d.get('t')} sketch: {e}") from None


def _scores(s: Scores) -> dict:
    return {
        "rows": s.rows, "correct": s.correct, "brier_fx": s.brier_fx, "abs_err_fx": s.abs_err_fx,
        "conf_count": s.conf_count.tolist(), "conf_fx": s.conf_fx, "hit_count": s.hit_count.tolist(), "invalid": s.invalid,
    }  # fmt: skip


def _unscores(d: dict) -> Scores:
    return Scores(
        rows=d["rows"], correct=d["correct"], brier_fx=d["brier_fx"], abs_err_fx=d["abs_err_fx"],
        conf_count=np.asarray(d["conf_count"], np.int64), conf_fx=[int(v) for v in d["conf_fx"]],
        hit_count=np.asarray(d["hit_count"], np.int64), invalid=d.get("invalid", 0),
    )  # fmt: skip


_OUTCOME_COUNTS = ("improvements", "regressions", "both_right", "both_wrong", "shape_mismatch")


def _outcomes(o: OutcomeStats) -> dict:
    d: dict[str, Any] = {k: getattr(o, k) for k in _OUTCOME_COUNTS}
    d.update(kind=o.kind, live=_scores(o.live), shadow=_scores(o.shadow))
    d["slices"] = [[None if b is None else _outcomes(b) for b in row] for row in o.slices]
    return d


def _unoutcomes(d: dict) -> OutcomeStats:
    o = OutcomeStats(kind=d["kind"], live=_unscores(d["live"]), shadow=_unscores(d["shadow"]), **{k: d[k] for k in _OUTCOME_COUNTS})
    o.slices = [[None if b is None else _unoutcomes(b) for b in row] for row in d["slices"]]
    return o


_SHADOW_COUNTS = (
    "sampled", "sent", "ok", "shed", "down", "compared", "contract_mismatch", "live_failed", "slice_bytes", "internal_errors",
    "not_ready", "sequences_mirrored", "sequences_shed_midway", "sequence_requests_excluded", "stream_requests",
    "stream_responses_paired", "stream_response_count_mismatch", "not_sampled", "budget", "held_back", "qps_queued", "qps_dropped",
)  # fmt: skip
_ROUTE_COUNTS = ("requests", "live_ok", "shm_not_mirrored", "explicit_version_not_mirrored", "sequences", "stream_requests", "mirrored", "too_large")
# A target's window and checks (state.TargetState), kept as they were when the snapshot was taken.
_TARGET_FIELDS = ("status", "reason", "opened", "closed", "closed_reason", "auto", "contract", "parity_error", "honours_shadow")


def _shadow_stats(s: ShadowStats) -> dict:
    d: dict[str, Any] = {k: getattr(s, k) for k in _SHADOW_COUNTS}
    d["errors"] = dict(s.errors)
    d["stream_not_sent"] = dict(s.stream_not_sent)
    d["latency"] = _sk(s.latency)
    d["outputs"] = {
        name: {
            "kind": o.kind, "paired": _sk(o.paired), "values": o.values, "abs_diff_fx": o.abs_diff_fx,
            "abs_diff_max": o.abs_diff_max, "hist_live": _sk(o.hist_live), "hist_shadow": _sk(o.hist_shadow),
            "slices": [[_sk(p) for p in row] for row in o.slices], "slice_rows_dropped": o.slice_rows_dropped,
            "shadow_invalid": o.shadow_invalid, "live_invalid": o.live_invalid, "probabilities": o.probabilities,
            "positions": [_sk(p) for p in o.positions],
        }  # fmt: skip
        for name, o in s.outputs.items()
    }
    return d


def _unshadow_stats(d: dict) -> ShadowStats:
    s = ShadowStats(errors=Counter(d["errors"]), stream_not_sent=Counter(d.get("stream_not_sent", {})), latency=_unsk(d["latency"]), **{k: d.get(k, 0) for k in _SHADOW_COUNTS})
    for name, o in d["outputs"].items():
        s.outputs[name] = OutputStats(
            kind=o["kind"], paired=_unsk(o["paired"]), values=o["values"], abs_diff_fx=o["abs_diff_fx"],
            abs_diff_max=o["abs_diff_max"], hist_live=_unsk(o["hist_live"]), hist_shadow=_unsk(o["hist_shadow"]),
            slices=[[_unsk(p) for p in row] for row in o["slices"]], slice_rows_dropped=o["slice_rows_dropped"],
            shadow_invalid=o.get("shadow_invalid", 0), live_invalid=o.get("live_invalid", 0), probabilities=o.get("probabilities", False),
            positions=[_unsk(p) for p in o.get("positions", [])],
        )  # fmt: skip
    return s


def _route_config(r: Route) -> dict:
    return dataclasses.asdict(r)


def _unroute_config(d: dict) -> Route:
    return Route(
        model=d["model"],
        live=LiveTarget(**d["live"]),
        shadows=tuple(shadow_target(s) for s in d["shadows"]),
        gates=Gates(**d["gates"]),
        outputs=tuple((n, OutputSpec(**{**o, "edges": tuple(o["edges"])})) for n, o in d["outputs"]),
        slices=tuple(Slice(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()}) for s in d["slices"]),
        auto=AutoShadow(**{**d["auto"], "versions": tuple(d["auto"]["versions"])}) if d.get("auto") else None,
        identical_sample=d.get("identical_sample", False),
        mirror=_mirror_rules(d["mirror"]) if d.get("mirror") else MirrorRules(),
    )


def shadow_target(d: dict) -> ShadowTarget:
    """A ShadowTarget from its ``dataclasses.asdict`` form (its budget a nested dict)."""
    b = d.get("budget")
    return ShadowTarget(**{**d, "budget": Budget(**b) if b else None})


def _mirror_rules(d: dict) -> MirrorRules:
    def rules(rs: list) -> tuple[MirrorRule, ...]:
        return tuple(MirrorRule(**{**r, "equals": tuple(r["equals"])}) for r in rs)

    return MirrorRules(include=rules(d["include"]), exclude=rules(d["exclude"]), max_request_bytes=d["max_request_bytes"])


def snapshot(state: FrontState, costs: dict[tuple[str, str], dict] | None = None) -> bytes:
    """A comparison state (a live front's, or a merged one) as snapshot bytes."""
    ps = state.pairs
    routes = []
    for name, rs in state.routes.items():
        st, comp = rs.stats, rs.completeness
        routes.append(
            {
                "config": _route_config(rs.route),
                **{k: getattr(st, k) for k in _ROUTE_COUNTS},
                "live_errors": dict(st.live_errors), "excluded": dict(st.excluded), "stream_not_mirrored": dict(st.stream_not_mirrored), "live_latency": _sk(st.live_latency), "front_added": _sk(st.front_added),
                "inputs": {k: dataclasses.asdict(v) for k, v in comp.inputs.items()},
                "inputs_not_checked": comp.not_checked, "inputs_metadata_error": comp.metadata_error,
                "shadows": [
                    {
                        "name": ss.target.name, "in_flight": ss.in_flight, "stats": _shadow_stats(ss.stats),
                        "outcomes": _outcomes(ss.outcomes), "cost": (costs or {}).get((name, ss.target.name)),
                        "drift_edges_differ": ss.drift_edges_differ, "target": dataclasses.asdict(ss.target),
                        "window": {k: getattr(ss, k) for k in _TARGET_FIELDS},
                        "parity": None if ss.parity is None else [dataclasses.asdict(m) for m in ss.parity],
                        "budget": None if ss.budget is None else ss.budget.to_dict(state.as_of),
                        "capacity": None if ss.capacity is None else ss.capacity.to_dict(),
                    }
                    for ss in rs.shadows
                ],
                "nway": None if rs.nway is None else rs.nway.to_dict(),
            }  # fmt: skip
        )
    doc = {
        "format": FORMAT, "version": VERSION, "writer": f"shadowgrpc {__version__}",
        "started": state.started, "taken": state.as_of, "replicas": state.replicas,
        "unrouted": state.unrouted, "unparsed": state.unparsed, "stream_messages": state.stream_messages,
        "store": {"waiting": ps.waiting, "stored": ps.stored, "evicted_full": ps.evicted_full, "evicted_expired": ps.evicted_expired,
                  "max_pairs": ps.max_pairs, "ttl_s": ps.ttl_s, "evicted_bytes": ps.evicted_bytes, "bytes": ps.bytes,
                  "max_bytes": ps.max_bytes, "reused_ids": ps.reused_ids},
        "outcomes_unknown": state.outcomes_unknown, "outcomes_duplicate": state.outcomes_duplicate,
        "outcomes_mismatch": state.outcomes_mismatch, "outcomes_reused": state.outcomes_reused,
        "outcomes_rejected": dict(state.outcomes_rejected), "routes": routes,
    }  # fmt: skip
    return json.dumps(doc, separators=(",", ":")).encode()


def load(data: bytes) -> FrontState:
    """A snapshot's bytes as a FrontState (SnapshotError when unreadable or of another version)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise SnapshotError(f"not a shadowgrpc snapshot (not JSON: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotError("not a shadowgrpc snapshot (no 'format': 'shadowgrpc-snapshot')")
    if doc.get("version") != VERSION:
        raise SnapshotError(f"snapshot version {doc.get('version')!r} is not supported (this shadowgrpc reads {VERSION})")
    try:
        return _view(doc)
    except (KeyError, TypeError, ValueError) as e:
        raise SnapshotError(f"malformed snapshot: {type(e).__name__}: {e}") from None


def _view(doc: dict) -> FrontState:
    routes: dict[str, RouteState] = {}
    costs: dict[tuple[str, str], dict] = {}
    for r in doc["routes"]:
        route = _unroute_config(r["config"])
        st = RouteStats(live_errors=Counter(r["live_errors"]), excluded=Counter(r.get("excluded", {})), stream_not_mirrored=Counter(r.get("stream_not_mirrored", {})), live_latency=_unsk(r["live_latency"]),
                        front_added=_unsk(r["front_added"]), **{k: r.get(k, 0) for k in _ROUTE_COUNTS})  # fmt: skip
        comp = InputsState({k: InputStats(**v) for k, v in r["inputs"].items()}, r["inputs_not_checked"], r["inputs_metadata_error"])
        targets = {t.name: t for t in route.shadows}
        shadows = []
        for s in r["shadows"]:
            target = shadow_target(s["target"]) if "target" in s else targets[s["name"]]  # auto targets are not in the config
            ts = TargetState(target, _unshadow_stats(s["stats"]), _unoutcomes(s["outcomes"]), s["in_flight"], s["drift_edges_differ"])
            for k, v in s.get("window", {"status": "MIRRORING", "reason": ""}).items():
                setattr(ts, k, v)
            if s.get("parity") is not None:
                ts.parity = [Mismatch(**m) for m in s["parity"]]
            if s.get("budget"):
                ts.budget = BudgetState.from_dict(s["budget"], doc["taken"])
            if s.get("capacity") is not None:
                ts.capacity = CapacityState.from_dict(s["capacity"])
            shadows.append(ts)
            if s["cost"] is not None:
                costs[(route.model, s["name"])] = s["cost"]
        routes[route.model] = RouteState(route, st, comp, shadows, nway=NWayState.from_dict(r["nway"]) if r.get("nway") else None)
    return FrontState(
        started=doc["started"], taken=doc["taken"], replicas=doc["replicas"], unrouted=doc["unrouted"], unparsed=doc["unparsed"],
        stream_messages=doc["stream_messages"], pairs=PairCounts(**doc["store"]), outcomes_unknown=doc["outcomes_unknown"],
        outcomes_duplicate=doc["outcomes_duplicate"], outcomes_mismatch=doc["outcomes_mismatch"], routes=routes, costs=costs,
        outcomes_reused=doc.get("outcomes_reused", 0), outcomes_rejected=Counter(doc.get("outcomes_rejected", {})),
    )  # fmt: skip


# -- merge -------------------------------------------------------------------------------------------
def _add(a: Any, b: Any, fields: tuple[str, ...]) -> None:
    for f in fields:
        setattr(a, f, getattr(a, f) + getattr(b, f))


def _merge_sketch(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is not None:
        a.merge(b)
    return a


def _merge_scores(a: Scores, b: Scores) -> None:
    _add(a, b, ("rows", "correct", "brier_fx", "abs_err_fx", "conf_count", "hit_count", "invalid"))
    a.conf_fx = [x + y for x, y in zip(a.conf_fx, b.conf_fx)]


def _merge_outcomes(a: OutcomeStats, b: OutcomeStats) -> None:
    a.kind = a.kind or b.kind
    _merge_scores(a.live, b.live)
    _merge_scores(a.shadow, b.shadow)
    _add(a, b, _OUTCOME_COUNTS)
    while len(a.slices) < len(b.slices):
        a.slices.append([None] * len(b.slices[len(a.slices)]))
    for ra, rb in zip(a.slices, b.slices):
        if not ra:
            ra.extend([None] * len(rb))
        for k, ob in enumerate(rb):
            if ob is None:
                continue
            if ra[k] is None:
                ra[k] = OutcomeStats()
            _merge_outcomes(ra[k], ob)


def _merge_output(a: OutputStats, b: OutputStats, where: str) -> int:
    """Merge ``b`` into ``a``; returns 1 when their drift edges differ (not merged)."""
    if a.kind != b.kind:
        raise SnapshotError(f"{where}: compared as {a.kind} on one replica and {b.kind} on another")
    a.paired = _merge_sketch(a.paired, b.paired)
    _add(a, b, ("values", "abs_diff_fx", "slice_rows_dropped", "shadow_invalid", "live_invalid"))
    a.probabilities = a.probabilities or b.probabilities
    a.abs_diff_max = max(a.abs_diff_max, b.abs_diff_max)
    for ra, rb in zip(a.slices, b.slices):
        for k, pb in enumerate(rb):
            ra[k] = _merge_sketch(ra[k], pb)
    a.positions.extend([None] * (len(b.positions) - len(a.positions)))
    for k, pb in enumerate(b.positions):
        a.positions[k] = _merge_sketch(a.positions[k], pb)
    differ = 0
    if b.hist_live is not None:
        if a.hist_live is None:
            a.hist_live, a.hist_shadow = b.hist_live, b.hist_shadow
        elif a.hist_live.edges.shape == b.hist_live.edges.shape and (a.hist_live.edges == b.hist_live.edges).all():
            a.hist_live.merge(b.hist_live)
            a.hist_shadow.merge(b.hist_shadow)
        else:
            differ = 1
            if b.hist_live.counts.sum() > a.hist_live.counts.sum():
                a.hist_live, a.hist_shadow = b.hist_live, b.hist_shadow
    return differ


def _merge_shadow(a: TargetState, b: TargetState, where: str) -> None:
    sa, sb = a.stats, b.stats
    _add(sa, sb, _SHADOW_COUNTS)
    sa.errors.update(sb.errors)
    sa.stream_not_sent.update(sb.stream_not_sent)
    sa.latency.merge(sb.latency)
    a.in_flight += b.in_flight
    a.drift_edges_differ += b.drift_edges_differ
    a.opened = min(a.opened, b.opened)  # the window: the earliest start and, once closed everywhere, the last end
    a.closed = 0.0 if not (a.closed and b.closed) else max(a.closed, b.closed)
    for name, ob in sb.outputs.items():
        oa = sa.outputs.get(name)
        if oa is None:
            sa.outputs[name] = ob
        else:
            a.drift_edges_differ += _merge_output(oa, ob, f"{where} output {name!r}")
    _merge_outcomes(a.outcomes, b.outcomes)
    a.budget = merged(a.budget, b.budget)  # budgets: limits and use add up (budget.py)
    if b.capacity is not None:  # capacity.py: load levels and copy/pacer counters
        if a.capacity is None:
            a.capacity = b.capacity
        else:
            try:
                a.capacity.merge(b.capacity)
            except ValueError as e:
                raise SnapshotError(f"{where}: {e}") from None


def merge(views: list[FrontState]) -> FrontState:
    """The exact merge of several replicas' views (see the module doc for what is not added)."""
    if not views:
        raise SnapshotError("nothing to merge")
    m = views[0]
    for v in views[1:]:
        if list(v.routes) != list(m.routes):
            raise SnapshotError(f"replicas have different routes: {sorted(m.routes)} vs {sorted(v.routes)}")
        m.started = min(m.started, v.started)
        m.taken = max(m.taken, v.taken)
        _add(m, v, ("replicas", "unrouted", "unparsed", "stream_messages", "outcomes_unknown", "outcomes_duplicate", "outcomes_mismatch", "outcomes_reused"))
        m.outcomes_rejected.update(v.outcomes_rejected)
        _add(m.pairs, v.pairs, ("waiting", "stored", "evicted_full", "evicted_expired", "max_pairs", "evicted_bytes", "bytes", "max_bytes", "reused_ids"))
        for k, c in v.costs.items():
            m.costs.setdefault(k, c)
        for name, rv in v.routes.items():
            rm = m.routes[name]
            if dataclasses.asdict(rm.route) != dataclasses.asdict(rv.route):
                raise SnapshotError(f"route {name!r} is configured differently on two replicas: merge only replicas of one config")
            _add(rm.stats, rv.stats, _ROUTE_COUNTS)
            rm.stats.live_errors.update(rv.stats.live_errors)
            rm.stats.excluded.update(rv.stats.excluded)
            rm.stats.stream_not_mirrored.update(rv.stats.stream_not_mirrored)
            rm.stats.live_latency.merge(rv.stats.live_latency)
            rm.stats.front_added.merge(rv.stats.front_added)
            rm.completeness.not_checked += rv.completeness.not_checked
            rm.completeness.metadata_error = rm.completeness.metadata_error or rv.completeness.metadata_error
            for iname, ist in rv.completeness.inputs.items():
                cur = rm.completeness.inputs.setdefault(iname, InputStats())
                _add(cur, ist, InputStats.__slots__)
            try:
                rm.nway = merge_states(rm.nway, rv.nway)
            except ValueError as e:
                raise SnapshotError(f"route {name!r}: {e}") from None
            # Targets by name: replicas may have opened auto-shadow windows the others did not.
            by_name = {t.target.name: t for t in rm.shadows}
            for sb in rv.shadows:
                sa = by_name.get(sb.target.name)
                if sa is None:
                    rm.shadows.append(sb)
                else:
                    _merge_shadow(sa, sb, f"route {name!r} shadow {sa.target.name!r}")
    return m
