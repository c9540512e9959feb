"""Reports: a router's comparison state (or a merged snapshot View, state.py) as a
``shadowgrpc.v1.Report``, each shadow's verdict included. Text and JSON rendering: report_text.py."""

from __future__ import annotations

from typing import Any

from . import __version__, ledger
from .checklist import checklist
from .config import LiveTarget, ShadowTarget
from ._nway_report import nway_pb
from .outcomes import ECE_BINS, OutcomeStats, Scores, wilson
from .stats import OutputStats, ShadowStats, paired_agreed, paired_rows
from .sketches import LatencySketch, divergences
from .state import INCOMPATIBLE, FrontState, RouteState, TargetState
from .text import STREAM_POSITIONS, TextAgreement
from ._capacity_report import report_into as capacity_into
from .budget import estimate, report_fields
from .verdict import evaluate, paused_reason
from .v1 import shadow_pb2 as pb


def latency_summary(h: LatencySketch) -> pb.LatencySummary:
    """Quantiles are bucket midpoints, never reported above the largest value seen."""
    if not h.count:
        return pb.LatencySummary()
    p50, p90, p95, p99, p999 = (min(q, h.max) * 1e3 for q in h.quantiles((0.50, 0.90, 0.95, 0.99, 0.999)))
    return pb.LatencySummary(
        count=h.count, p50_ms=p50, p90_ms=p90, p95_ms=p95, p99_ms=p99, p999_ms=p999, mean_ms=h.mean * 1e3, max_ms=h.max * 1e3
    )


def _score(sc: Scores, kind: str) -> pb.ModelScore:
    m = pb.ModelScore(rows=sc.rows, invalid_rows=sc.invalid)
    if sc.rows and kind == "classifier":
        lo, hi = wilson(sc.correct, sc.rows)
        m.accuracy = sc.correct / sc.rows
        m.accuracy_ci.lo, m.accuracy_ci.hi = lo, hi
        m.brier = sc.brier_sum / sc.rows
        m.ece = sc.ece
        conf = sc.conf_sum
        for k in range(ECE_BINS):
            n = int(sc.conf_count[k])
            m.reliability.add(
                lo=k / ECE_BINS, hi=(k + 1) / ECE_BINS, rows=n, confidence=conf[k] / n if n else 0.0, accuracy=int(sc.hit_count[k]) / n if n else 0.0
            )
    elif sc.valid_rows:
        m.mae = sc.abs_err_sum / sc.valid_rows  # finite predictions; NaN/inf ones are in invalid_rows
    return m


def ground_truth_pb(o: OutcomeStats, slices: tuple = ()) -> pb.GroundTruth:
    g = _ground_truth(o)
    for sl, row in zip(slices, o.slices):
        for label, bo in zip(sl.buckets, row):
            if bo is not None and bo.live.rows:
                g.slices.add(slice=sl.name, bucket=label, truth=_ground_truth(bo))
    return g


def _ground_truth(o: OutcomeStats) -> pb.GroundTruth:
    g = pb.GroundTruth(kind=o.kind, rows=o.live.rows, live=_score(o.live, o.kind), shadow=_score(o.shadow, o.kind), shape_mismatch=o.shape_mismatch)
    if o.kind == "classifier" and o.live.rows:
        n = o.live.rows
        g.improvements, g.regressions, g.both_right, g.both_wrong = o.improvements, o.regressions, o.both_right, o.both_wrong
        g.improvement_rate.lo, g.improvement_rate.hi = wilson(o.improvements, n)
        g.regression_rate.lo, g.regression_rate.hi = wilson(o.regressions, n)
        g.accuracy_delta = (o.shadow.correct - o.live.correct) / n
    return g


def drift_pb(o) -> pb.Divergence:
    lc, sc = o.hist_live.counts, o.hist_shadow.counts
    per_class = [divergences(lc[k], sc[k], edges=o.hist_live.edges) for k in range(lc.shape[0])]
    mean = {key: sum(d[key] for d in per_class) / len(per_class) for key in per_class[0]}
    return pb.Divergence(
        kl_live_shadow=mean["kl_pq"],
        kl_shadow_live=mean["kl_qp"],
        js=mean["js"],
        psi=mean["psi"],
        tv=mean["tv"],
        w1=mean["w1"],
        binned=int(lc.sum()),
        edges=[float(e) for e in o.hist_live.edges],
    )


def target_pb(t: LiveTarget | ShadowTarget) -> pb.Target:
    if isinstance(t, LiveTarget):
        return pb.Target(name="live", address=t.address, model=t.model, version=t.version, deadline_s=t.deadline_s or 0.0)
    return pb.Target(
        name=t.name,
        address=t.address,
        model=t.model,
        version=t.version,
        sample_rate=t.sample_rate,
        deadline_s=t.deadline_s or 0.0,
        max_in_flight=t.max_in_flight,
        noise_floor=t.noise_floor,
    )


def _agreement(kind: str, p) -> float:
    if p is None:
        return 0.0
    if kind == "embedding":
        return p.mean if p.count else 0.0
    n = paired_rows(p)
    return paired_agreed(p) / n if n else 0.0


def output_pb(name: str, o: OutputStats, slices: tuple) -> pb.OutputComparison:
    p = o.paired
    oc = pb.OutputComparison(
        name=name,
        kind=o.kind,
        rows=o.rows,
        agreed_rows=o.agreed_rows,
        agreement=_agreement(o.kind, p),
        mean_abs_diff=(o.abs_diff_sum / o.values) if o.values else 0.0,
        max_abs_diff=o.abs_diff_max,
        invalid_rows=p.invalid if p is not None else 0,
        slice_rows_dropped=o.slice_rows_dropped,
        shadow_invalid_rows=o.shadow_invalid,
        live_invalid_rows=o.live_invalid,
        probabilities=o.probabilities,
    )
    if hasattr(p, "confusion"):
        oc.n_classes = p.confusion.shape[0]
        oc.confusion.extend(int(x) for x in p.confusion.reshape(-1))
    if o.kind == "binary":
        oc.threshold = p.threshold
    elif o.kind == "regression" and p.errors.count:
        oc.error_p50, oc.error_p90, oc.error_p99 = (min(q, p.errors.max) for q in p.errors.quantiles((0.5, 0.9, 0.99)))
    elif o.kind == "embedding" and p.count:
        oc.cosine_min = p.min
    elif o.kind == "text":
        oc.text.CopyFrom(text_pb(p))
        for k, tp in enumerate(o.positions):
            if tp is not None:
                oc.text_positions.add(position=k, and_later=k == STREAM_POSITIONS, text=text_pb(tp))
    for sl, row in zip(slices, o.slices):
        for label, sp in zip(sl.buckets, row):
            if sp is not None and paired_rows(sp):
                oc.slices.add(slice=sl.name, bucket=label, rows=paired_rows(sp), agreement=_agreement(o.kind, sp))
    if o.hist_live is not None:
        oc.drift.CopyFrom(drift_pb(o))
    return oc


def text_pb(t: TextAgreement) -> pb.TextComparison:
    """A text output's figures (text.py) as the report shows them."""
    m = pb.TextComparison(
        rows=t.count, exact_matches=t.within, exact_match_rate=t.agreement, edit_distance_mean=t.edit_mean,
        edit_distance_max=t.edit_max, edit_units_mean=t.edit_units / t.count if t.count else 0.0,
        live_length_mean=t.live_len.mean, shadow_length_mean=t.shadow_len.mean, live_length_max=t.live_len.max,
        shadow_length_max=t.shadow_len.max, length_ratio_mean=t.ratio_mean, length_ratio_rows=t.ratio_rows,
        live_empty=t.live_empty, shadow_empty=t.shadow_empty, live_invalid_utf8=t.live_invalid_utf8,
        shadow_invalid_utf8=t.shadow_invalid_utf8, byte_rows=t.byte_rows, truncated_rows=t.truncated,
    )  # fmt: skip
    m.edit_distance_p50, m.edit_distance_p90, m.edit_distance_p99 = (t.edit_quantile(q) for q in (0.5, 0.9, 0.99))
    m.live_length_p50, m.live_length_p90, m.live_length_p99 = (t.live_len.quantile(q) for q in (0.5, 0.9, 0.99))
    m.shadow_length_p50, m.shadow_length_p90, m.shadow_length_p99 = (t.shadow_len.quantile(q) for q in (0.5, 0.9, 0.99))
    m.edit_histogram.extend(t.edit_hist)
    return m


def sketch_bytes(s: ShadowStats) -> int:
    """Memory held by one target's sketches (latency, paired, per-slice, drift histograms)."""
    n = s.latency.nbytes
    for o in s.outputs.values():
        for sk in (o.paired, o.hist_live, o.hist_shadow, *(p for row in o.slices for p in row), *o.positions):
            if sk is not None:
                n += sk.nbytes if hasattr(sk, "nbytes") else len(sk.to_bytes())
    return n


def build_report(state: FrontState, model: str = "", costs: dict[tuple[str, str], dict] | None = None) -> pb.Report:
    """The report of a comparison state (a live front's ``Router.state``, a loaded snapshot or a
    merge of them); ``costs`` from ``CostTracker.collect()`` fills each shadow's ComputeCost."""
    rep = pb.Report(
        version=__version__,
        replicas=state.replicas,
        uptime_s=state.as_of - state.started,
        unrouted_requests=state.unrouted,
        unparsed_requests=state.unparsed,
        stream_messages=state.stream_messages,
    )
    ps = state.pairs
    rep.outcomes.CopyFrom(
        pb.OutcomeStore(
            waiting=ps.waiting,
            stored=ps.stored,
            evicted_full=ps.evicted_full,
            evicted_expired=ps.evicted_expired,
            unknown=state.outcomes_unknown,
            duplicate=state.outcomes_duplicate,
            mismatch=state.outcomes_mismatch,
            max_pairs=ps.max_pairs,
            ttl_s=ps.ttl_s,
            evicted_bytes=ps.evicted_bytes,
            bytes=ps.bytes,
            max_bytes=ps.max_bytes,
            reused_ids=ps.reused_ids,
            reused=state.outcomes_reused,
            rejected=sum(state.outcomes_rejected.values()),
        )
    )
    rep.outcomes.rejected_reasons.update(state.outcomes_rejected)
    for name, rs in state.routes.items():
        if model and name != model:
            continue
        st = rs.stats
        rr = rep.routes.add(
            model=name,
            live=target_pb(rs.route.live),
            requests=st.requests,
            live_ok=st.live_ok,
            shm_not_mirrored=st.shm_not_mirrored,
            explicit_version_not_mirrored=st.explicit_version_not_mirrored,
            live_latency=latency_summary(st.live_latency),
            front_added=latency_summary(st.front_added),
            sequences=st.sequences,
            stream_requests=st.stream_requests,
        )
        rr.live_errors.update(st.live_errors)
        _route_extras(rr, rs)
        comp = rs.completeness
        rr.inputs_not_checked = comp.not_checked
        rr.inputs_metadata_error = comp.metadata_error
        rr.sketch_bytes = st.live_latency.nbytes + sum(sketch_bytes(ss.stats) for ss in rs.shadows)
        for iname, ist in comp.inputs.items():
            rr.inputs.add(name=iname, **{f: getattr(ist, f) for f in ist.__slots__})
        for ss in rs.shadows:
            s = ss.stats
            sr = rr.shadows.add(
                target=target_pb(ss.target),
                sampled=s.sampled,
                sent=s.sent,
                ok=s.ok,
                shed=s.shed,
                down=s.down,
                compared=s.compared,
                contract_mismatch=s.contract_mismatch,
                latency=latency_summary(s.latency),
                live_failed=s.live_failed,
                internal_errors=s.internal_errors,
                in_flight=ss.in_flight,
                drift_edges_differ=ss.drift_edges_differ,
            )
            sr.errors.update(s.errors)
            slices = rs.route.slices
            sr.ground_truth.CopyFrom(ground_truth_pb(ss.outcomes, slices))
            floor = next((f.stats for f in rs.shadows if f.target.noise_floor and f is not ss), None)
            refused = ss.reason if ss.status == INCOMPATIBLE else ""
            paused = ss.budget.paused_reason if ss.budget is not None and ss.budget.paused else ""
            decision, gates = evaluate(rs.route.gates, st, s, ss.outcomes, slices, floor=floor, live_deadline_s=rs.route.live.deadline_s, refused=refused, paused=paused)
            sr.verdict.decision = decision
            for gr in gates:
                sr.verdict.gates.add(name=gr.name, status=gr.status, reason=gr.reason, value=gr.value, threshold=gr.threshold)
            _target_extras(sr, ss, rs, gates)
            c = (costs or {}).get((name, ss.target.name))
            if c is not None:
                sr.cost.CopyFrom(pb.ComputeCost(**c))
            else:
                sr.cost.reason = "not collected"
            if ss.capacity is not None:  # capacity.py: latency per load level, headroom
                capacity_into(sr.capacity, ss.capacity, rs.route, ss.target, st.live_latency, latency_summary, c, ss.pacer)
            for oname, o in s.outputs.items():
                sr.outputs.append(output_pb(oname, o, slices))
    return rep


_SHADOW_EXTRA_COUNTS = (
    "not_ready", "sequences_mirrored", "sequences_shed_midway", "sequence_requests_excluded",
    "stream_requests", "stream_responses_paired", "stream_response_count_mismatch",
)  # fmt: skip


def _target_extras(sr: pb.ShadowReport, ss: TargetState, rs: RouteState, gates: list) -> None:
    """Status, comparison window, the checks before traffic and the validation checklist."""
    s = ss.stats
    for k in _SHADOW_EXTRA_COUNTS:
        setattr(sr, k, getattr(s, k))
    sr.status, sr.status_reason = ss.status, ss.reason
    sr.window.CopyFrom(pb.Window(opened=ss.opened, closed=ss.closed, closed_reason=ss.closed_reason, auto=ss.auto))
    sr.contract_problems.extend(ss.contract)
    for m in ss.parity or ():
        sr.parity.add(item=m.item, live=m.live, shadow=m.shadow)
    st, g = rs.stats, rs.route.gates
    items = checklist(
        parity=ss.parity, parity_error=ss.parity_error or "live's and the shadow's ModelConfig not read yet",
        outcome_rows=ss.outcomes.live.rows, min_outcomes=g.min_outcomes,
        quality_gates=[(r.name, r.status, r.reason) for r in gates if r.name.startswith(("accuracy", "calibration"))],
        shadow_marked=True,  # every shadow call carries the request parameter shadow=true and x-shadow-request: 1
        honours_shadow=ss.honours_shadow, sample_rate=ss.target.sample_rate, requests=st.requests, mirrored=s.sent,
        coverage=[(sl, b, n, m) for (sl, b), (n, m) in rs.coverage.rows.items()],
    )  # fmt: skip
    for it in items:
        sr.verdict.checklist.add(name=it.name, status=it.status, evidence=it.evidence)
    if ss.budget is not None:  # budget.py: limits, use, the pause and the estimate
        bs = ss.budget
        sr.budget.CopyFrom(pb.ShadowBudget(**report_fields(bs, estimate(bs, s.compared, ss.outcomes.live.rows, g.min_pairs, g.min_outcomes), bs._clock())))
        sr.verdict.reason = paused_reason(sr.verdict.decision, bs.paused_reason if bs.paused else "", bs.paused_until)
        sr.verdict.paused_until = bs.paused_until


def _route_extras(rr: pb.RouteReport, rs: RouteState) -> None:
    """Auto-shadow candidates and traffic coverage (overall exact, per slice bucket estimated)."""
    if rs.nway is not None:  # identical_sample
        rr.nway.CopyFrom(nway_pb(rs.nway))
    a = rs.auto
    if a is not None:
        rr.auto.CopyFrom(pb.AutoShadow(policy=a.policy, poll_s=a.poll_s, load=a.load, last_poll=a.last_poll, last_error=a.last_error, swaps=a.swaps, last_load_s=a.last_load_s))
        for v in sorted(a.candidates, key=int):
            c = a.candidates[v]
            rr.auto.candidates.add(version=c.version, state=c.state, decision=c.decision, reason=c.reason, seen=c.seen, decided=c.decided)
    rr.coverage.add(requests=rs.stats.requests, mirrored=rs.stats.mirrored)
    for (sl, b), (n, m) in rs.coverage.rows.items():
        rr.coverage.add(slice=sl, bucket=b, requests=n, mirrored=m)
    rr.too_large = rs.stats.too_large
    rr.excluded.update(dict(rs.stats.excluded))
    for target, reason, n in ledger.rows(rs):
        rr.ledger.add(target=target, reason=reason, requests=n)


def pairlog_pb(pl: Any) -> pb.PairLog:
    """The paired log's writer (a pairlog.PairLog) as the report shows it."""
    st = pl.stats
    return pb.PairLog(
        path=pl.cfg.path,
        rows_written=st.rows_written,
        rows_shed=st.rows_shed,
        rows_dropped=st.rows_dropped,
        outcomes_written=st.outcomes_written,
        files_written=st.files_written,
        files_deleted=st.files_deleted,
        bytes_deleted=st.bytes_deleted,
        bytes_on_disk=st.bytes_on_disk,
        write_errors=st.write_errors,
        last_error=st.last_error,
        stopped=st.stopped,
        sample_rate=pl.cfg.sample_rate,
    )
