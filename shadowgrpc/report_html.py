"""Report -> one self-contained HTML page (``shadowgrpc report --html FILE``, ``analyze --html FILE``).

The same content and wording as the text report (report_text.py), for people: the verdict first
(a banner, then each shadow's gates with their figure and threshold), then per route and shadow
target the live vs shadow output distributions overlaid, calibration curves, latency CDFs, the
per-slice table (regressions in red), the disagreement breakdown and confusion matrices, the
contract and error counts, and the feature completeness of the route's inputs.

Numbers come from the ``shadowgrpc.v1.Report`` (report.build_report); the distributions and
latency CDFs need the sketches themselves, read from the comparison state the report was built
from (``state``: a live front's, a loaded snapshot or a merge; None renders the rest). Plots are
matplotlib SVGs in ``data:`` URIs (shadowgrpc/_plots.py); the page loads nothing from the network,
has no script, and every string from the state or the report (model names are user input) is
escaped.
"""

from __future__ import annotations

import html
import os
import sys
import time
from typing import Any

from .budget import format_budget
from ._capacity_report import capacity_lines
from ._nway_report import nway_lines, pair_rows, ranking_rows
from .cost import format_cost
from .report_text import _errs, _lat, _paired_text, ledger_by_target, summary_lines, text_lines
from .v1 import shadow_pb2 as pb

INSTALL_HINT = "pip install 'shadowgrpc[html]'"
RANK = {"FAIL": 3, "NOT_COMPARABLE": 2, "NOT_ENOUGH_DATA": 1, "PASS": 0}
CONFUSION_MAX = 12  # classes shown as a full live x shadow matrix; more: the largest disagreements

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;max-width:1240px;padding:12px 20px;color:#1f2328;font-size:14px}
h1{font-size:22px;margin:4px 0}h2{font-size:19px;border-bottom:2px solid #d0d7de;margin-top:28px}h3{font-size:16px;margin:18px 0 6px}
h4{font-size:14px;margin:14px 0 4px;color:#424a53}.meta{color:#57606a;margin:2px 0 10px}
.banner{color:#fff;padding:14px 20px;border-radius:6px;margin:8px 0}.banner .d{font-size:30px;font-weight:700;letter-spacing:1px}
.banner ul{margin:4px 0 0;padding-left:20px}
.PASS{background:#1a7f37}.FAIL{background:#cf222e}.NOT_ENOUGH_DATA{background:#9a6700}.NOT_COMPARABLE,.SKIPPED,.NONE{background:#57606a}
.badge{color:#fff;border-radius:4px;padding:1px 7px;font-size:12px;font-weight:600;white-space:nowrap}
table{border-collapse:collapse;margin:4px 0 8px;font-size:13px}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.regressed td{background:#ffebe9}td.bad{background:#ffebe9;font-weight:600}.why{color:#424a53;font-size:12px}
figure{display:inline-block;margin:4px 12px 8px 0;vertical-align:top}figure img{max-width:100%;height:auto}
figcaption{font-size:12px;color:#57606a;max-width:620px}.note{color:#57606a;font-size:13px}
.cols{display:flex;flex-wrap:wrap;column-gap:28px}section.shadow{border-left:4px solid #d0d7de;padding-left:14px;margin:10px 0 24px}pre{background:#f6f8fa;padding:6px;font-size:12px;overflow-x:auto}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _plots():
    """shadowgrpc._plots, or an ImportError that says how to install matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the HTML report draws its plots with matplotlib, which is not installed: {INSTALL_HINT}") from e
    from . import _plots

    return _plots


def _badge(status: str) -> str:
    return f'<span class="badge {_e(status)}">{_e(status)}</span>'


def _table(head: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    """``rows`` cells: str (escaped), or (html, css class) for cells already rendered."""
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f'<td class="{c[1]}">{c[0]}</td>' if isinstance(c, tuple) else f"<td>{_e(c)}</td>" for c in row)
        out.append(f"<tr{cls}>{cells}</tr>")
    return "".join(out) + "</table>"


def _n(v: Any, bad: bool = False) -> tuple[str, str]:
    """A number cell, red when ``bad`` (a problem count above zero)."""
    return _e(v), "n bad" if bad else "n"


def _fig(uri: str | None, alt: str, caption: str) -> str:
    if uri is None:
        return f'<p class="note">{_e(alt)}: no data yet.</p>'
    return f'<figure><img src="{uri}" alt="{_e(alt)}"><figcaption>{caption}</figcaption></figure>'


def _gate_figures(gt: pb.Gate, kind: str) -> tuple[str, str]:
    """(figure, threshold) of one gate as the verdict computed them (verdict.py)."""
    if gt.status in ("NOT_ENOUGH_DATA", "SKIPPED") and not gt.value and not gt.threshold:
        return "-", "-"
    v, t, name = gt.value, gt.threshold, gt.name
    if name == "latency_p99":
        return f"{v:.2f}x live", f"FAIL above {t:g}x"
    if name in ("error_rate", "invalid_outputs"):
        return f"{v:.2%}", f"max {t:.2%}"
    if name.startswith("accuracy"):
        if kind == "regression":
            return f"MAE {v:+.4g} vs live", "max +0"
        return f"{v:+.2%} (95% lower bound)", f"min {t:+.2%}"
    if name == "calibration_ece":
        return f"{v:+.4f}", f"max {t:+.4f}"
    return f"{v:g}", f"{t:g}"


def _verdicts(rep: pb.Report) -> list[str]:
    shadows = [(r, s) for r in rep.routes for s in r.shadows]
    candidates = [(r, s) for r, s in shadows if not s.target.noise_floor] or shadows
    if not candidates:
        return ['<div id="verdict" class="banner NONE"><div class="d">NO SHADOWS</div>no shadow target in this report</div>']
    worst = max((s.verdict.decision for _, s in candidates), key=lambda d: RANK.get(d, 2))
    items = "".join(
        f"<li>{_e(r.model)} &rarr; {_e(s.target.name)}: <b>{_e(s.verdict.decision)}</b>"
        + (" (A/A noise floor)" if s.target.noise_floor else "")
        + "".join(f"; {_e(g.name)} {_e(g.status)}" for g in s.verdict.gates if g.status == "FAIL")
        + "</li>"
        for r, s in shadows
    )
    out = [f'<div id="verdict" class="banner {_e(worst)}"><div class="d">{_e(worst)}</div><ul>{items}</ul></div>']
    for i, (r, s) in enumerate(shadows):
        kind = s.ground_truth.kind
        rows = [[(_badge(g.status), ""), g.name, (_e(_gate_figures(g, kind)[0]), "n"), (_e(_gate_figures(g, kind)[1]), "n"), (_e(g.reason), "why")]
                for g in s.verdict.gates]  # fmt: skip
        out.append(f'<h3 id="verdict-{i}">VERDICT {_e(r.model)} &rarr; {_e(s.target.name)}: {_badge(s.verdict.decision)}</h3>')
        if s.verdict.reason:
            out.append(f'<p class="note">{_e(s.verdict.reason)}</p>')
        out.append(_table(["status", "gate", "figure", "threshold", "why"], rows, ["regressed" if g.status == "FAIL" else "" for g in s.verdict.gates]))
    return out


def _distributions(s: pb.ShadowReport, st: Any, plots) -> list[str]:
    out = ["<h4>Output distributions, live vs shadow</h4>"]
    floor = st.get("floor", {})
    for o in s.outputs:
        line = f"<b>{_e(o.name)}</b> ({_e(o.kind)}): {_e(_paired_text(o))}"
        line += "".join(f"<br>{_e(x)}" for x in text_lines(o)) if o.kind == "text" else f", mean |live-shadow| {o.mean_abs_diff:.4g}, max {o.max_abs_diff:.4g}"
        f = floor.get(o.name)
        if f is not None and not s.target.noise_floor:
            line += _e(f"  [A/A noise floor: agreement {f.agreement:.2%}, mean |diff| {f.mean_abs_diff:.4g}" + (f", PSI {f.drift.psi:.4f}]" if f.drift.binned else "]"))
        out.append(f"<p>{line}</p>")
        os_ = st["outputs"].get(o.name)
        if os_ is None or os_.hist_live is None:
            out.append('<p class="note">no drift histogram for this output (not numeric, or its edges are not frozen yet)</p>')
            continue
        d = o.drift
        cap = (f"{_e(o.name)}: drift (not quality): PSI {d.psi:.4f}, JS {d.js:.4f} bits, KL {d.kl_live_shadow:.4f}/{d.kl_shadow_live:.4f}, "
               f"TV {d.tv:.4f}, W1 {d.w1:.4g}; {d.binned} values per side in {len(d.edges) - 1} bins on [{d.edges[0]:.4g}, {d.edges[-1]:.4g}]")  # fmt: skip
        out.append(_fig(plots.distributions(os_.hist_live.edges, os_.hist_live.counts, os_.hist_shadow.counts), f"{o.name} distributions", cap))
    if not s.outputs:
        out.append('<p class="note">no output compared yet</p>')
    return out


def _calibration(g: pb.GroundTruth, plots) -> list[str]:
    out = ["<h4>Calibration</h4>"]
    if g.kind == "regression" and g.rows:
        return out + [f'<p class="note">regression outcomes ({g.rows} rows): no confidence to calibrate; MAE live {g.live.mae:.4g}, shadow {g.shadow.mae:.4g}</p>']
    if g.kind != "classifier" or not g.rows:
        return out + ['<p class="note">no classifier outcomes yet (RecordOutcomes): calibration unknown</p>']
    bins = [[(b.confidence, b.rows, b.accuracy) for b in m.reliability] for m in (g.live, g.shadow)]
    cap = f"reliability diagram, 10 confidence bins, {g.rows} outcome rows: ECE live {g.live.ece:.4f}, shadow {g.shadow.ece:.4f}; Brier live {g.live.brier:.4f}, shadow {g.shadow.brier:.4f}"
    return out + [_fig(plots.calibration(*bins), "calibration curves", _e(cap))]


def _latency(r: pb.RouteReport, s: pb.ShadowReport, st: Any, plots) -> list[str]:
    out = ["<h4>Latency</h4>"]
    rows = [["live", _lat(r.live_latency), (_e(r.live_latency.count), "n")], ["shadow", _lat(s.latency), (_e(s.latency.count), "n")]]
    if st.get("live_latency") is not None:
        uri = plots.latency_cdf(st["live_latency"].counts, st["latency"].counts)
        out.append(_fig(uri, "latency CDFs", "successful calls, live vs shadow: CDF from the latency sketches (1% buckets)"))
    return out + [_table(["calls", "p50 / p90 / p99 / p99.9 ms", "count"], rows)]


def _slices(s: pb.ShadowReport) -> list[str]:
    g, gates = s.ground_truth, {gt.name: gt for gt in s.verdict.gates}
    keys = list(dict.fromkeys([(x.slice, x.bucket) for o in s.outputs for x in o.slices] + [(x.slice, x.bucket) for x in g.slices]))
    if not keys:
        return []
    truth = {(x.slice, x.bucket): x.truth for x in g.slices}
    paired = {(o.name, x.slice, x.bucket): x for o in s.outputs for x in o.slices}
    rows, classes = [], []
    for sl, b in keys:
        t = truth.get((sl, b))
        gt = gates.get(f"accuracy[{sl} {b}]") or gates.get(f"accuracy[{sl}]")
        status = gt.status if gt is not None else "-"
        agree = "; ".join(f"{o.name} {x.agreement:.4f}" if o.kind == "embedding" else f"{o.name} {x.agreement:.2%} ({x.rows})"
                          for o in s.outputs if (x := paired.get((o.name, sl, b))) is not None)  # fmt: skip
        worse = False
        if t is None or not t.rows:
            quality = ["-", "-", "-", "-", "-", "-"]
        elif t.kind == "classifier":
            worse = t.shadow.accuracy < t.live.accuracy
            quality = [(_e(t.rows), "n"), f"{t.live.accuracy:.2%}", f"{t.shadow.accuracy:.2%}", f"{t.accuracy_delta:+.2%}", (_e(t.improvements), "n"), _n(t.regressions, t.regressions > t.improvements)]
        else:
            worse = t.shadow.mae > t.live.mae
            quality = [(_e(t.rows), "n"), f"MAE {t.live.mae:.4g}", f"MAE {t.shadow.mae:.4g}", f"{t.shadow.mae - t.live.mae:+.4g}", "-", "-"]
        rows.append([sl, b, agree or "-", *quality, (_badge(status) if gt is not None else "-", "")])
        classes.append("regressed" if status == "FAIL" or worse else "")
    head = ["slice", "bucket", "agreement with live (rows)", "outcome rows", "live", "shadow", "delta", "improvements", "regressions", "gate"]
    return ["<h4>Per slice</h4>", _table(head, rows, classes), '<p class="note">red: the slice gate fails, or the shadow is worse than live there</p>']


def _disagreement(s: pb.ShadowReport) -> list[str]:
    g = s.ground_truth
    out = ["<h4>Disagreement breakdown</h4>"]
    if g.kind == "classifier" and g.rows:
        n = g.rows
        out.append(
            f"<p>ground truth ({n} rows): accuracy live {g.live.accuracy:.2%} [{g.live.accuracy_ci.lo:.2%}, {g.live.accuracy_ci.hi:.2%}], "
            f"shadow {g.shadow.accuracy:.2%} [{g.shadow.accuracy_ci.lo:.2%}, {g.shadow.accuracy_ci.hi:.2%}], delta {g.accuracy_delta:+.2%}</p>"
        )
        rows = [
            ["improvements (shadow right, live wrong)", (_e(g.improvements), "n"), f"{g.improvements / n:.2%}", f"[{g.improvement_rate.lo:.2%}, {g.improvement_rate.hi:.2%}]"],
            ["regressions (live right, shadow wrong)", _n(g.regressions, g.regressions > g.improvements), f"{g.regressions / n:.2%}", f"[{g.regression_rate.lo:.2%}, {g.regression_rate.hi:.2%}]"],
            ["both right", (_e(g.both_right), "n"), f"{g.both_right / n:.2%}", ""],
            ["both wrong", (_e(g.both_wrong), "n"), f"{g.both_wrong / n:.2%}", ""],
        ]
        out.append(_table(["outcome rows", "count", "share", "95% interval"], rows))
    elif g.kind == "regression" and g.rows:
        out.append(f"<p>ground truth ({g.rows} rows): MAE live {g.live.mae:.4g}, shadow {g.shadow.mae:.4g}</p>")
    else:
        out.append('<p class="note">no outcomes yet: agreement with live is not accuracy (send outcomes with RecordOutcomes)</p>')
    for o in s.outputs:
        k = o.n_classes
        if not k or len(o.confusion) != k * k:
            continue
        m = [list(o.confusion[i * k : (i + 1) * k]) for i in range(k)]
        out.append(f"<p>{_e(o.name)}: live x shadow labels ({o.agreed_rows} of {o.rows} rows agree; rows: live label, columns: shadow label)</p>")
        if k <= CONFUSION_MAX:
            out.append(_table(["live \\ shadow", *map(str, range(k))], [[str(i), *(_n(v, i != j and v > 0) for j, v in enumerate(row))] for i, row in enumerate(m)]))
        else:
            off = sorted(((v, i, j) for i, row in enumerate(m) for j, v in enumerate(row) if i != j and v), reverse=True)[:10]
            out.append(_table(["live label", "shadow label", "rows"], [[str(i), str(j), (_e(v), "n")] for v, i, j in off]))
    return out


def _contract(r: pb.RouteReport, s: pb.ShadowReport) -> list[str]:
    rows = [
        ["sampled / sent / ok", (_e(f"{s.sampled} / {s.sent} / {s.ok}"), "n"), "sampled = sent + shed + down; sent = ok + errors"],
        ["compared pairs", (_e(s.compared), "n"), "both answers OK and comparable"],
        ["contract mismatches", _n(s.contract_mismatch, s.contract_mismatch > 0), "outputs differ from live in name, dtype or shape"],
        ["shadow errors", _n(_errs(s.errors), bool(s.errors)), "failed shadow calls by gRPC status"],
        ["live errors", _n(_errs(r.live_errors), bool(r.live_errors)), "failed live calls by gRPC status"],
        ["live failed", (_e(s.live_failed), "n"), "the shadow answered, live did not: nothing to compare"],
        ["shed", _n(s.shed, s.shed > 0), "not sent: max_in_flight reached"],
        ["down", _n(s.down, s.down > 0), "not sent: the shadow's connection was down"],
        ["in flight", (_e(s.in_flight), "n"), "shadow calls in flight when the report was taken"],
        ["front's own failures", _n(s.internal_errors, s.internal_errors > 0), "after the shadow answered OK (see the front's log)"],
    ]
    for o in s.outputs:
        what = "NaN/inf/outside [0, 1]" if o.probabilities else "NaN/inf"
        rows.append([f"invalid rows of {o.name}", _n(f"shadow {o.shadow_invalid_rows}, live {o.live_invalid_rows} of {o.rows}", o.shadow_invalid_rows > 0), what])
        if o.slice_rows_dropped:
            rows.append([f"slice rows of {o.name} not kept", _n(o.slice_rows_dropped, True), "per-slice memory bound"])
    if s.drift_edges_differ:
        rows.append(["replicas with other drift edges", _n(s.drift_edges_differ, True), "their drift histograms were not added"])
    cost = format_cost(s.cost) + format_budget(s) + capacity_lines(s)  # budget.py, capacity.py
    return ["<h4>Contract and errors</h4>", _table(["", "count", "meaning"], rows)] + ([f"<pre>{_e(chr(10).join(x.strip() for x in cost))}</pre>"] if cost else [])


def _completeness(r: pb.RouteReport) -> list[str]:
    out = ["<h3>Feature completeness (inputs of shadowed requests)</h3>"]
    rows = [[i.name, (_e(i.requests), "n"), (_e(i.values), "n"), *(_n(getattr(i, f), getattr(i, f) > 0) for f in PROBLEMS)] for i in r.inputs]
    if rows:
        out.append(_table(["input", "requests", "values", "NaN", "inf", "empty strings", "dtype mismatch", "shape mismatch", "missing", "undeclared"], rows))
    else:
        out.append('<p class="note">no shadowed request checked yet</p>')
    if r.inputs_not_checked:
        out.append(f'<p class="note">{r.inputs_not_checked} requests not checked (larger than 1 MiB or not parseable)</p>')
    if r.inputs_metadata_error:
        out.append(f'<p class="note">inputs: model metadata unavailable ({_e(r.inputs_metadata_error)})</p>')
    return out


PROBLEMS = ("nan", "inf", "empty_strings", "dtype_mismatch", "shape_mismatch", "missing", "undeclared")


def _state_of(state: Any, model: str, target: str) -> dict:
    """The sketches the report does not carry: route live latency, shadow latency, drift histograms."""
    rs = state.routes.get(model) if state is not None else None
    ts = next((t for t in rs.shadows if t.target.name == target), None) if rs is not None else None
    if ts is None:
        return {"outputs": {}}
    return {"outputs": dict(ts.stats.outputs), "latency": ts.stats.latency, "live_latency": rs.stats.live_latency}


def _route(i: int, r: pb.RouteReport, state: Any, plots) -> list[str]:
    live = r.live
    out = [f'<h2 id="route-{i}">route {_e(r.model)}</h2>',
           f"<p>live {_e(live.address)} {_e(live.model)}:{_e(live.version or '*')}; requests {r.requests}, ok {r.live_ok}, errors {_e(_errs(r.live_errors))}, "
           f"shm (not mirrored) {r.shm_not_mirrored}; p50/p90/p99/p99.9 ms {_e(_lat(r.live_latency))}; front's own added time per live request, p50/p90/p99/p99.9 ms {_e(_lat(r.front_added))}; "
           f"sketches {r.sketch_bytes / 1024:.0f} KiB</p>"]  # fmt: skip
    if r.explicit_version_not_mirrored:
        out.append(f'<p class="note">{r.explicit_version_not_mirrored} requests named a version other than the pinned one: served as named, not mirrored</p>')
    floor = {o.name: o for s in r.shadows if s.target.noise_floor for o in s.outputs}
    for s in r.shadows:
        t = s.target
        st = {**_state_of(state, r.model, t.name), "floor": floor}
        out.append(f'<section class="shadow"><h3>{_e(r.model)} &rarr; {_e(t.name)} {_badge(s.verdict.decision)}</h3>')
        out.append(f'<p class="note">{_e(t.model)}:{_e(t.version or "*")} at {_e(t.address)}, sample rate {t.sample_rate:g}, max in flight {t.max_in_flight}'
                   + (" &mdash; A/A noise floor: a replica of live; its differences are jitter, not change" if t.noise_floor else "") + "</p>")  # fmt: skip
        out += _distributions(s, st, plots)
        out += ['<div class="cols"><div>', *_calibration(s.ground_truth, plots), "</div><div>", *_latency(r, s, st, plots), "</div></div>"]
        out += _slices(s) + _disagreement(s) + _contract(r, s) + ["</section>"]
    if not r.shadows:
        out.append('<p class="note">no shadow targets on this route</p>')
    return out + _ledger(r) + _nway(r) + _completeness(r)


def _nway(r: pb.RouteReport) -> list[str]:
    """identical_sample: the shadows ranked against each other and live on the same rows."""
    if not r.HasField("nway"):
        return []
    n = r.nway
    lines = nway_lines(n)
    out = [f"<h3>Fair N-way comparison (identical_sample): {n.requests} requests, {n.rows} rows, the same for every shadow</h3>",
           f'<p class="note">{_e(lines[0].strip())}; {_e(lines[1].strip())}</p>']  # fmt: skip
    head, rows = ranking_rows(n)
    out.append(_table(head, rows))
    head, rows = pair_rows(n)
    return out + ["<h4>Pairwise, paired 95% intervals on the same rows</h4>", _table(head, rows)]


def _ledger(r: pb.RouteReport) -> list[str]:
    """The coverage ledger: one row per target, one column per reason (every live request)."""
    by = ledger_by_target(r)
    if not by:
        return []
    reasons = list(dict.fromkeys(reason for rows in by.values() for reason, _ in rows))
    body = [[t, *(dict(rows).get(reason, 0) for reason in reasons), sum(n for _, n in rows)] for t, rows in by.items()]
    return [f"<h3>Coverage ledger: what became of each of the {r.requests} live requests</h3>", _table(["target", *reasons, "total"], body)]


def render_html(state: Any, report: pb.Report, title: str = "shadowgrpc report") -> str:
    """The page for ``report`` (build_report(state)); ``state`` (FrontState, or None) supplies the
    sketches behind the distribution and latency plots. Raises ImportError naming
    ``pip install 'shadowgrpc[html]'`` when matplotlib is missing."""
    plots = _plots()
    rep = report
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(state.as_of)) if state is not None else "(no state)"
    header, *summary = summary_lines(rep)
    body = [f"<h1>{_e(title)}</h1>", f'<p class="meta">{_e(header)}; as of {when}</p>']
    body += _verdicts(rep)
    if state is None:
        body.append('<p class="note">no comparison state given: output distributions and latency CDFs are not drawn</p>')
    for i, r in enumerate(rep.routes):
        body += _route(i, r, state, plots)
    if not rep.routes:
        body.append("<p>(no routes configured)</p>")
    body.append("<h2>Ground-truth store</h2>" + "".join(f'<p class="note">{_e(line)}</p>' for line in summary))  # and the paired log
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip


def write_html_for(command: str, state: Any, report: pb.Report, path: str, title: str) -> bool:
    """A command's --html (report, analyze, replay): write the page and say so on stderr; False,
    after saying why on stderr, when it cannot be written (a path, or matplotlib missing)."""
    try:
        write_html(state, report, path, title)
    except (OSError, ImportError) as e:
        print(f"{command}: --html: {e}", file=sys.stderr)
        return False
    print(f"{command}: wrote {path}", file=sys.stderr)
    return True


def write_html(state: Any, report: pb.Report, path: str, title: str = "shadowgrpc report") -> None:
    """Write render_html(...) to ``path`` (UTF-8; replaced whole, never left half-written)."""
    page = render_html(state, report, title)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
