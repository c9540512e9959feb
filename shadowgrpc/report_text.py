"""Report protobuf -> text: the table ``shadowgrpc report`` prints (verdict first), and JSON.

Reads only the ``shadowgrpc.v1.Report`` message (built by report.py from the comparison state), so
the same rendering serves a live front, merged replicas and saved snapshots.
"""

from __future__ import annotations

import time

from google.protobuf import json_format

from .budget import format_budget
from ._capacity_report import capacity_lines
from ._nway_report import nway_lines
from .cost import format_cost
from .v1 import shadow_pb2 as pb


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
    if o.kind == "text":
        t = o.text
        return (
            f"exact match {t.exact_match_rate:.2%} ({t.exact_matches}/{t.rows} elements), normalised edit distance mean "
            f"{t.edit_distance_mean:.4f} p50/p90/p99 {t.edit_distance_p50:.2f}/{t.edit_distance_p90:.2f}/{t.edit_distance_p99:.2f} max {t.edit_distance_max:.4f}"
        )
    return (
        f"within tolerance {o.agreement:.2%} ({o.agreed_rows}/{o.rows} values), "
        f"|diff| p50/p90/p99 {o.error_p50:.3g}/{o.error_p90:.3g}/{o.error_p99:.3g}"
    )


def text_lines(o: pb.OutputComparison) -> list[str]:
    """A text output's lengths, odd elements and per-position figures (report text and HTML)."""
    t = o.text

    def lens(side: str) -> str:
        g = lambda k: getattr(t, f"{side}_length_{k}")  # noqa: E731
        return f"{side} mean {g('mean'):.1f} p50/p90/p99 {g('p50')}/{g('p90')}/{g('p99')} max {g('max')}"

    lines = [f"lengths: {lens('live')}; {lens('shadow')}; shadow/live ratio mean {t.length_ratio_mean:.3f} ({t.length_ratio_rows} rows)"]
    odd = [f"empty live {t.live_empty} shadow {t.shadow_empty}"] if t.live_empty or t.shadow_empty else []
    if t.live_invalid_utf8 or t.shadow_invalid_utf8:
        odd.append(f"not UTF-8 live {t.live_invalid_utf8} shadow {t.shadow_invalid_utf8} ({t.byte_rows} rows compared as bytes)")
    if t.truncated_rows:
        odd.append(f"{t.truncated_rows} rows longer than 4096: distance of the first 4096")
    if odd:
        lines.append("; ".join(odd))
    if o.text_positions:
        lines.append("by response position: " + "; ".join(
            f"{x.position}{'+' if x.and_later else ''}: exact {x.text.exact_match_rate:.2%} edit {x.text.edit_distance_mean:.4f} "
            f"len {x.text.live_length_mean:.1f}/{x.text.shadow_length_mean:.1f} ({x.text.rows})" for x in o.text_positions))  # fmt: skip
    return lines


def summary_lines(rep: pb.Report) -> list[str]:
    """The report's first lines, shared by the text and HTML renderings: the header, the
    ground-truth store (offline: the source and the outcome join), and the paired log's writer."""
    merged = f"  ({rep.replicas} replicas merged)" if rep.replicas > 1 else ""
    lines = [
        f"shadowgrpc {rep.version}{merged}  uptime {rep.uptime_s:.0f} s  unrouted requests {rep.unrouted_requests}  "
        f"unparsed {rep.unparsed_requests}  stream messages {rep.stream_messages}"
        if not rep.source
        else f"shadowgrpc {rep.version}  offline report: requests that arrived over {rep.uptime_s:.0f} s"
    ]
    o = rep.outcomes
    rejected = f"rejected {o.rejected}" + (f" ({_errs(o.rejected_reasons)})" if o.rejected else "")
    if rep.source:
        lines.append(f"offline: {rep.source}; outcomes joined by id: unknown {o.unknown}, duplicate {o.duplicate}, mismatch {o.mismatch}, "
                     f"reused id {o.reused}, {rejected}")  # fmt: skip
    else:
        lines.append(
            f"ground-truth store: {o.waiting} pairs waiting (max {o.max_pairs}, ttl {o.ttl_s:g} s), evicted full {o.evicted_full} / "
            f"expired {o.evicted_expired} / bytes {o.evicted_bytes} ({o.bytes / 2**20:.1f} of {o.max_bytes / 2**20:.0f} MiB held); "
            f"outcomes unknown {o.unknown}, duplicate {o.duplicate}, mismatch {o.mismatch}, reused id {o.reused} "
            f"({o.reused_ids} requests reused a waiting id), {rejected}"
        )
    if rep.HasField("log"):
        g = rep.log
        state = f"STOPPED: {g.last_error}" if g.stopped and g.last_error else ("stopped" if g.stopped else "writing")
        lines.append(
            f"paired log {g.path}: {state}; rows written {g.rows_written}, shed {g.rows_shed} (queue full), dropped {g.rows_dropped}, "
            f"outcomes {g.outcomes_written}; files {g.files_written}, deleted {g.files_deleted} for the disk budget; "
            f"{g.bytes_on_disk / 2**20:.1f} MiB on disk; write errors {g.write_errors}; sample rate {g.sample_rate:g}"
        )
    return lines


def format_report(rep: pb.Report) -> str:
    """A plain-text table, one block per route."""
    lines = summary_lines(rep)
    if not rep.routes:
        lines.append("(no routes configured)")
    for r in rep.routes:
        live = r.live
        lines.append("")
        for s in r.shadows:  # the verdict first
            lines.append(f"VERDICT {r.model} -> {s.target.name}: {s.verdict.decision}" + (f" ({s.verdict.reason})" if s.verdict.reason else ""))
            for gt in s.verdict.gates:
                lines.append(f"  {gt.status:<15} {gt.name:<16} {gt.reason}")
            if s.verdict.checklist:
                lines.append("  checklist before trusting this run:")
                lines += [f"    {c.status:<8} {c.name:<26} {c.evidence}" for c in s.verdict.checklist]
        lines.append(f"route {r.model!r}: live {live.address} {live.model}:{live.version or '*'}  (sketches {r.sketch_bytes / 1024:.0f} KiB)")
        lines.append(
            f"  live   requests {r.requests}  ok {r.live_ok}  errors {_errs(r.live_errors)}  "
            f"shm (not mirrored) {r.shm_not_mirrored}  p50/p90/p99/p99.9 ms {_lat(r.live_latency)}"
        )
        if r.explicit_version_not_mirrored:
            lines.append(f"  {r.explicit_version_not_mirrored} requests named a version other than the pinned one: served as named, not mirrored")
        lines.append(f"  front's own added time per live request, p50/p90/p99/p99.9 ms {_lat(r.front_added)}")
        lines += route_extra_lines(r)
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
            if s.internal_errors:
                lines.append(f"    {s.internal_errors} answers not compared: the front's own failure after the shadow answered (see its log)")
            lines += target_extra_lines(s)
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
                line = f"    {o.name} ({o.kind}): {_paired_text(o)}"
                line += "".join(f"\n      {x}" for x in text_lines(o)) if o.kind == "text" else f", mean |live-shadow| {o.mean_abs_diff:.4g}, max {o.max_abs_diff:.4g}"
                if o.slices:
                    line += "\n      by slice: " + "; ".join(f"{x.slice} {x.bucket} {_pct(o.kind, x.agreement)} ({x.rows})" for x in o.slices)
                if o.shadow_invalid_rows or o.live_invalid_rows:
                    what = "NaN/inf/outside [0, 1]" if o.probabilities else "NaN/inf"
                    line += f"\n      invalid rows ({what}): shadow {o.shadow_invalid_rows}, live {o.live_invalid_rows} of {o.rows}"
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


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "Z" if t else "-"


def route_extra_lines(r: pb.RouteReport) -> list[str]:
    """Auto-shadow candidates, traffic coverage, sequences and streams of one route."""
    out = []
    if r.HasField("auto"):
        a = r.auto
        err = f"; last poll failed: {a.last_error}" if a.last_error else ""
        out.append(f"  auto-shadow {a.policy}: poll every {a.poll_s:g} s (last {_when(a.last_poll)}), load {'on' if a.load else 'off'}, route tables published {a.swaps}{err}")
        for c in a.candidates:
            why = f": {c.reason}" if c.reason else ""
            out.append(f"    version {c.version:<4} {c.state or '?':<12} {c.decision or '-'}{why}")
    cov = [c for c in r.coverage if c.slice]
    if r.coverage and r.coverage[0].requests:
        overall = r.coverage[0]
        line = f"  coverage: {overall.mirrored} of {overall.requests} live requests mirrored ({overall.mirrored / overall.requests:.1%})"
        if cov:
            line += "; per slice bucket (rows of 1 in 16 requests): " + "; ".join(
                f"{c.slice} {c.bucket} {c.mirrored}/{c.requests}" for c in cov
            )
        out.append(line)
    out += ledger_lines(r)
    if r.HasField("nway"):  # identical_sample: the shadows ranked on the same rows
        out += nway_lines(r.nway)
    if r.sequences or r.stream_requests:
        out.append(f"  sequences started {r.sequences}; ModelStreamInfer requests {r.stream_requests}"
                   + (f", {r.stream_unpairable} without an id on a decoupled model (not mirrored)" if r.stream_unpairable else ""))  # fmt: skip
    return out


def ledger_by_target(r: pb.RouteReport) -> dict[str, list[tuple[str, int]]]:
    """The coverage ledger's rows per target, in the report's order."""
    by: dict[str, list[tuple[str, int]]] = {}
    for row in r.ledger:
        by.setdefault(row.target, []).append((row.reason, row.requests))
    return by


def ledger_lines(r: pb.RouteReport) -> list[str]:
    """The coverage ledger: per target, what became of the route's live requests."""
    by = ledger_by_target(r)
    if not by:
        return []
    out = [f"  coverage ledger (each of the {r.requests} live requests, per target):"]
    for target, reasons in by.items():
        out.append(f"    {target}: " + ", ".join(f"{reason} {n}" for reason, n in reasons))
    return out


def target_extra_lines(s: pb.ShadowReport) -> list[str]:
    """A target's status, window, checks before traffic, sequences and streams (empty when plain)."""
    out = []
    if s.status and s.status != "MIRRORING":
        out.append(f"    {s.status}: {s.status_reason}  (sampled while not sent: {s.not_ready})")
    w = s.window
    if w.auto or w.closed:
        out.append(f"    window {_when(w.opened)} .. {_when(w.closed) if w.closed else 'open'}" + (f" ({w.closed_reason})" if w.closed_reason else "") + ("  [auto-shadow]" if w.auto else ""))
    for p in s.contract_problems:
        out.append(f"    contract: {p}")
    if s.parity:
        out.append("    parity (environment differs from live): " + "; ".join(f"{m.item} live {m.live} / shadow {m.shadow}" for m in s.parity))
    if s.sequences_mirrored or s.sequences_shed_midway or s.sequences_seen_midway:
        out.append(
            f"    sequences mirrored {s.sequences_mirrored}, shed midway (excluded) {s.sequences_shed_midway}, their requests excluded "
            f"{s.sequence_requests_excluded}; first seen midway (not mirrored) {s.sequences_seen_midway}, evicted {s.sequences_evicted}, "
            f"over the hold bound {s.sequences_over_bound}"
        )
    if s.stream_requests:
        out.append(f"    stream requests {s.stream_requests}, responses paired {s.stream_responses_paired}, response-count mismatches {s.stream_response_count_mismatch}")
    out += format_budget(s)  # budget.py
    out += capacity_lines(s)  # capacity.py: load levels, headroom
    return out
