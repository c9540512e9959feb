"""Reports: a router's stats (or a merged snapshot View, state.py) as a ``shadowgrpc.v1.Report``
and as a readable table."""

from __future__ import annotations

import time

from google.protobuf import json_format

from . import __version__
from .config import LiveTarget, ShadowTarget
from .cost import format_cost
from .outcomes import ECE_BINS, OutcomeStats, Scores, wilson
from .stats import OutputStats, ShadowStats, paired_agreed, paired_rows
from .sketches import LatencySketch, divergences
from .verdict import evaluate
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
    m = pb.ModelScore(rows=sc.rows)
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
    elif sc.rows:
        m.mae = sc.abs_err_sum / sc.rows
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
    for sl, row in zip(slices, o.slices):
        for label, sp in zip(sl.buckets, row):
            if sp is not None and paired_rows(sp):
                oc.slices.add(slice=sl.name, bucket=label, rows=paired_rows(sp), agreement=_agreement(o.kind, sp))
    if o.hist_live is not None:
        oc.drift.CopyFrom(drift_pb(o))
    return oc


def sketch_bytes(s: ShadowStats) -> int:
    """Memory held by one target's sketches (latency, paired, per-slice, drift histograms)."""
    n = s.latency.nbytes
    for o in s.outputs.values():
        for sk in (o.paired, o.hist_live, o.hist_shadow, *(p for row in o.slices for p in row)):
            if sk is not None:
                n += sk.nbytes if hasattr(sk, "nbytes") else len(sk.to_bytes())
    return n


def build_report(router, model: str = "", costs: dict[tuple[str, str], dict] | None = None) -> pb.Report:
    """The report of a Router or a snapshot View (state.py); ``costs`` from
    ``CostTracker.collect()`` fills each shadow's ComputeCost."""
    rep = pb.Report(
        version=__version__,
        replicas=getattr(router, "replicas", 1),
        uptime_s=getattr(router, "taken", time.time()) - router.started,
        unrouted_requests=router.unrouted,
        unparsed_requests=router.unparsed,
        stream_messages=router.stream_messages,
    )
    ps = router.pairs
    rep.outcomes.CopyFrom(
        pb.OutcomeStore(
            waiting=len(ps),
            stored=ps.stored,
            evicted_full=ps.evicted_full,
            evicted_expired=ps.evicted_expired,
            unknown=router.outcomes_unknown,
            duplicate=router.outcomes_duplicate,
            mismatch=router.outcomes_mismatch,
            max_pairs=ps.max_pairs,
            ttl_s=ps.ttl_s,
        )
    )
    for name, rs in router.routes.items():
        if model and name != model:
            continue
        st = rs.stats
        rr = rep.routes.add(
            model=name,
            live=target_pb(rs.route.live),
            requests=st.requests,
            live_ok=st.live_ok,
            shm_not_mirrored=st.shm_not_mirrored,
            live_latency=latency_summary(st.live_latency),
            front_added=latency_summary(st.front_added),
        )
        rr.live_errors.update(st.live_errors)
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
                in_flight=ss.in_flight,
                drift_edges_differ=getattr(ss, "drift_edges_differ", 0),
            )
            sr.errors.update(s.errors)
            slices = rs.route.slices
            sr.ground_truth.CopyFrom(ground_truth_pb(ss.outcomes, slices))
            decision, gates = evaluate(rs.route.gates, st, s, ss.outcomes, slices)
            sr.verdict.decision = decision
            for gr in gates:
                sr.verdict.gates.add(name=gr.name, status=gr.status, reason=gr.reason, value=gr.value, threshold=gr.threshold)
            c = (costs or {}).get((name, ss.target.name))
            if c is not None:
                sr.cost.CopyFrom(pb.ComputeCost(**c))
            else:
                sr.cost.reason = "not collected"
            for oname, o in s.outputs.items():
                sr.outputs.append(output_pb(oname, o, slices))
    return rep


def report_json(rep: pb.Report) -> str:
    return json_format.MessageToJson(rep, always_print_fields_with_no_presence=True, indent=2, preserving_proto_field_name=True)


def _lat(l: pb.LatencySummary) -> str:
    if not l.count:
        return "-"
    return f"{l.p50_ms:.2f} / {l.p90_ms:.2f} / {l.p99_ms:.2f} / {l.p999_ms:.2f}"


def _errs(d) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(d.items())) or "0"


def _pct(kind: str, v: float) -> str:
    return f"cos {v:.4f}" if kind == "embedding" else f"{v:.2%}"


def _paired_text(o: pb.OutputComparison) -> str:
    if o.kind == "classifier":
        text = f"top-label agreement {o.agreement:.2%} ({o.agreed_rows}/{o.rows} rows)"
        if o.n_classes <= 4 and len(o.confusion) == o.n_classes**2:
            rows = [list(o.confusion[i * o.n_classes : (i + 1) * o.n_classes]) for i in range(o.n_classes)]
            text += f", confusion live x shadow {rows}"
        return text
    if o.kind == "binary":
        return f"agreement at {o.threshold:g} {o.agreement:.2%} ({o.agreed_rows}/{o.rows} rows)"
    if o.kind == "embedding":
        return f"cosine mean {o.agreement:.4f} min {o.cosine_min:.4f} ({o.rows} rows)"
    return (
        f"within tolerance {o.agreement:.2%} ({o.agreed_rows}/{o.rows} values), "
        f"|diff| p50/p90/p99 {o.error_p50:.3g}/{o.error_p90:.3g}/{o.error_p99:.3g}"
    )


def format_report(rep: pb.Report) -> str:
    """A plain-text table, one block per route."""
    merged = f"  ({rep.replicas} replicas merged)" if rep.replicas > 1 else ""
    lines = [
        f"shadowgrpc {rep.version}{merged}  uptime {rep.uptime_s:.0f} s  unrouted requests {rep.unrouted_requests}  "
        f"unparsed {rep.unparsed_requests}  stream messages (not mirrored) {rep.stream_messages}"
    ]
    o = rep.outcomes
    lines.append(
        f"ground-truth store: {o.waiting} pairs waiting (max {o.max_pairs}, ttl {o.ttl_s:g} s), evicted full {o.evicted_full} / "
        f"expired {o.evicted_expired}; outcomes unknown {o.unknown}, duplicate {o.duplicate}, mismatch {o.mismatch}"
    )
    if not rep.routes:
        lines.append("(no routes configured)")
    for r in rep.routes:
        live = r.live
        lines.append("")
        for s in r.shadows:  # the verdict first
            lines.append(f"VERDICT {r.model} -> {s.target.name}: {s.verdict.decision}")
            for gt in s.verdict.gates:
                lines.append(f"  {gt.status:<15} {gt.name:<16} {gt.reason}")
        lines.append(f"route {r.model!r}: live {live.address} {live.model}:{live.version or '*'}  (sketches {r.sketch_bytes / 1024:.0f} KiB)")
        lines.append(
            f"  live   requests {r.requests}  ok {r.live_ok}  errors {_errs(r.live_errors)}  "
            f"shm (not mirrored) {r.shm_not_mirrored}  p50/p90/p99/p99.9 ms {_lat(r.live_latency)}"
        )
        lines.append(f"  front's own added time per live request, p50/p90/p99/p99.9 ms {_lat(r.front_added)}")
        for i in r.inputs:
            lines.append(
                f"  input {i.name}: {i.requests} shadowed requests, {i.values} values; NaN {i.nan}, inf {i.inf}, "
                f"empty strings {i.empty_strings}; dtype mismatch {i.dtype_mismatch}, shape mismatch {i.shape_mismatch}, "
                f"missing {i.missing}, undeclared {i.undeclared}"
            )
        if r.inputs_metadata_error:
            lines.append(f"  inputs: model metadata unavailable ({r.inputs_metadata_error})")
        header = f"  {'shadow':<18} {'sampled':>8} {'sent':>8} {'ok':>8} {'shed':>6} {'down':>6} {'compared':>9} {'mismatch':>9}  {'p50/p90/p99/p99.9 ms':<28} errors"
        lines.append(header)
        floor = {o.name: o for s in r.shadows if s.target.noise_floor for o in s.outputs}
        for s in r.shadows:
            t = s.target
            lines.append(
                f"  {t.name:<18} {s.sampled:>8} {s.sent:>8} {s.ok:>8} {s.shed:>6} {s.down:>6} {s.compared:>9} {s.contract_mismatch:>9}  "
                f"{_lat(s.latency):<28} {_errs(s.errors)}"
            )
            g = s.ground_truth
            if g.kind == "classifier":
                lines.append(
                    f"    ground truth ({g.rows} rows): accuracy live {g.live.accuracy:.2%} "
                    f"[{g.live.accuracy_ci.lo:.2%}, {g.live.accuracy_ci.hi:.2%}], shadow {g.shadow.accuracy:.2%} "
                    f"[{g.shadow.accuracy_ci.lo:.2%}, {g.shadow.accuracy_ci.hi:.2%}], delta {g.accuracy_delta:+.2%}"
                )
                lines.append(
                    f"      improvements (shadow right, live wrong) {g.improvements} [{g.improvement_rate.lo:.2%}, {g.improvement_rate.hi:.2%}]  "
                    f"regressions (live right, shadow wrong) {g.regressions} [{g.regression_rate.lo:.2%}, {g.regression_rate.hi:.2%}]  "
                    f"both wrong {g.both_wrong}"
                )
                lines.append(
                    f"      Brier live {g.live.brier:.4f} shadow {g.shadow.brier:.4f}; ECE live {g.live.ece:.4f} shadow {g.shadow.ece:.4f}"
                )
            elif g.kind == "regression":
                lines.append(f"    ground truth ({g.rows} rows): MAE live {g.live.mae:.4g}, shadow {g.shadow.mae:.4g}")
            for sg in g.slices:
                t_ = sg.truth
                if t_.kind == "classifier":
                    lines.append(
                        f"      slice {sg.slice} {sg.bucket}: {t_.rows} rows, accuracy live {t_.live.accuracy:.2%} shadow "
                        f"{t_.shadow.accuracy:.2%} (delta {t_.accuracy_delta:+.2%}); improvements {t_.improvements}, regressions {t_.regressions}"
                    )
                elif t_.kind == "regression":
                    lines.append(f"      slice {sg.slice} {sg.bucket}: {t_.rows} rows, MAE live {t_.live.mae:.4g} shadow {t_.shadow.mae:.4g}")
            lines += format_cost(s.cost)  # Triton statistics, and metrics where configured
            if t.noise_floor:
                lines.append("    (A/A noise floor: a replica of live; its differences are jitter, not change)")
            for o in s.outputs:
                line = f"    {o.name} ({o.kind}): {_paired_text(o)}, mean |live-shadow| {o.mean_abs_diff:.4g}, max {o.max_abs_diff:.4g}"
                if o.slices:
                    line += "\n      by slice: " + "; ".join(f"{x.slice} {x.bucket} {_pct(o.kind, x.agreement)} ({x.rows})" for x in o.slices)
                if o.slice_rows_dropped:
                    line += f"\n      {o.slice_rows_dropped} rows not kept per slice (memory bound)"
                if o.drift.binned:
                    dv = o.drift
                    line += (
                        f"\n      drift (not quality): PSI {dv.psi:.4f}  JS {dv.js:.4f} bits  KL {dv.kl_live_shadow:.4f}/{dv.kl_shadow_live:.4f}  "
                        f"TV {dv.tv:.4f}  W1 {dv.w1:.4g}  ({len(dv.edges) - 1} bins on [{dv.edges[0]:.4g}, {dv.edges[-1]:.4g}])"
                    )
                f = floor.get(o.name)
                if f is not None and not t.noise_floor:
                    line += "  [A/A noise floor: " + (f"agreement {f.agreement:.2%}, " if f.kind == "classifier" else "")
                    line += f"mean |diff| {f.mean_abs_diff:.4g}" + (f", PSI {f.drift.psi:.4f}" if f.drift.binned else "") + "]"
                lines.append(line)
    return "\n".join(lines)
