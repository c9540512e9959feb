"""The N-way block of the report (identical_sample, nway.py): the protobuf from a route's
NWayState, and its text and HTML rows (report_text.py, report_html.py)."""

from __future__ import annotations

from .nway import NWayState
from .v1 import shadow_pb2 as pb


def nway_pb(st: NWayState) -> pb.NWay:
    """The N-way block of a route's report (RouteReport.nway)."""
    out = pb.NWay(targets=st.names, requests=st.requests, rows=st.rows, truth_rows=st.truth_rows)
    out.incomplete.update(st.incomplete)
    by, order = st.ranking()
    out.ranked_by = by
    ranked = order if by == "accuracy" else [0, *order]  # live first as the reference when ranked by agreement
    for m in ranked:
        mo = out.ranking.add(name=st.models[m], rank=order.index(m) + 1 if m in order else 0, latency_s=st.mean_latency(m))
        if m == 0:
            mo.agree_rows, mo.agreement = st.rows, 1.0 if st.rows else 0.0
            mo.agreement_ci.lo, mo.agreement_ci.hi = (1.0, 1.0) if st.rows else (0.0, 0.0)
        else:
            mo.agree_rows = st.agree[m - 1]
            mo.agreement, mo.agreement_ci.lo, mo.agreement_ci.hi = st.agreement(m - 1)
        mo.correct = st.correct[m]
        mo.accuracy, mo.accuracy_ci.lo, mo.accuracy_ci.hi = st.accuracy(m)
        k = order.index(m) if m in order else -1
        if 0 <= k < len(order) - 1:
            paired = st.paired_accuracy if by == "accuracy" else st.paired_agreement
            mo.ahead_of_next = paired(m, order[k + 1])[3] > 0.0
    for i in range(len(st.models)):
        for j in range(i + 1, len(st.models)):
            a, b = st.models[i], st.models[j]
            x, y, d, lo, hi = st.paired_agreement(i, j)
            out.pairs.add(a=a, b=b, metric="agreement", a_only=x, b_only=y, delta=d, ci=pb.Interval(lo=lo, hi=hi), n=st.rows)
            if st.truth_rows:
                x, y, d, lo, hi = st.paired_accuracy(i, j)
                out.pairs.add(a=a, b=b, metric="accuracy", a_only=x, b_only=y, delta=d, ci=pb.Interval(lo=lo, hi=hi), n=st.truth_rows)
            d, lo, hi = st.latency_diff(i, j)
            out.pairs.add(a=a, b=b, metric="latency_s", delta=d, ci=pb.Interval(lo=lo, hi=hi), n=st.requests)
    return out


def _ci(i: pb.Interval, pct: bool = True) -> str:
    return f"[{i.lo:+.2%}, {i.hi:+.2%}]" if pct else f"[{i.lo * 1e3:+.2f}, {i.hi * 1e3:+.2f}] ms"


def _verdict(metric: str, p: pb.NWayPair) -> str:
    """Who is ahead on ``metric``, or "no difference shown" when the paired interval holds 0."""
    if p.ci.lo > 0:
        return f"{p.a} {'slower' if metric == 'latency_s' else 'ahead'}"
    if p.ci.hi < 0:
        return f"{p.b} {'slower' if metric == 'latency_s' else 'ahead'}"
    return "no difference shown"


def ranking_rows(n: pb.NWay) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the ranking table, best first."""
    truth = n.ranked_by == "accuracy"
    head = ["rank", "model", "agreement with live", "95% interval"] + (["accuracy", "95% interval"] if truth else []) + ["mean latency ms", "ahead of next"]
    rows = []
    for m in n.ranking:
        row = [str(m.rank) if m.rank else "ref", m.name, f"{m.agreement:.2%} ({m.agree_rows}/{n.rows})", f"[{m.agreement_ci.lo:.2%}, {m.agreement_ci.hi:.2%}]"]
        if truth:
            row += [f"{m.accuracy:.2%} ({m.correct}/{n.truth_rows})", f"[{m.accuracy_ci.lo:.2%}, {m.accuracy_ci.hi:.2%}]"]
        last = m.rank == len(n.ranking) - (0 if truth else 1)
        rows.append(row + [f"{m.latency_s * 1e3:.2f}", "yes" if m.ahead_of_next else ("-" if not m.rank or last else "no")])
    return head, rows


def pair_rows(n: pb.NWay) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the pairwise matrix: every two models on every metric, on the same rows."""
    head = ["a", "b", "metric", "a right & b wrong", "b right & a wrong", "delta (a - b)", "paired 95% interval", "n", "reading"]
    rows = []
    for p in n.pairs:
        if p.metric == "agreement" and "live" in (p.a, p.b):
            continue  # a shadow's agreement with live: the ranking's figure
        lat = p.metric == "latency_s"
        rows.append([
            p.a, p.b, p.metric, "" if lat else str(p.a_only), "" if lat else str(p.b_only),
            f"{p.delta * 1e3:+.2f} ms" if lat else f"{p.delta:+.2%}", _ci(p.ci, not lat), str(p.n), _verdict(p.metric, p),
        ])  # fmt: skip
    return head, rows


def nway_lines(n: pb.NWay) -> list[str]:
    """The text report's N-way block of one route."""
    incomplete = sum(n.incomplete.values())
    out = [
        f"  identical_sample: {n.requests} requests ({n.rows} rows) compared on every shadow ({', '.join(n.targets)}); "
        f"{incomplete} compared on none" + (": " + ", ".join(f"{k} {v}" for k, v in sorted(n.incomplete.items())) if incomplete else ""),
        f"    ranked by {n.ranked_by}" + (f" ({n.truth_rows} rows with ground truth)" if n.truth_rows else " (no ground truth yet: agreement is not quality)"),
    ]
    head, rows = ranking_rows(n)
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
    out += ["    " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    _, prs = pair_rows(n)
    for r in prs:
        lat = r[2] == "latency_s"
        what = f"{r[5]} {r[6]}" if lat else f"{r[5]} {r[6]} (b {r[3]}, c {r[4]})"
        out.append(f"    {r[0]} vs {r[1]} {r[2]}: {what} over {r[7]}: {r[8]}")
    return out
