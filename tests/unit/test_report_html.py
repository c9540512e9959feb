"""The HTML report (shadowgrpc/report_html.py) from comparison states built the way the front builds
them (compare_responses on KServe responses, outcomes scored): the verdict first, every section,
one embedded plot per distribution / calibration / latency CDF, slice regressions in red, user
strings escaped, nothing loaded from the network, and a clear error without matplotlib. How a
browser renders it: tests/local/test_report_html_chromium.py."""

from __future__ import annotations

import base64
import re
import sys

import numpy as np
import pytest

from shadowgrpc.codec import decode_request
from shadowgrpc.compare import compare_responses
from shadowgrpc.completeness import InputStats
from shadowgrpc.config import Settings
from shadowgrpc.outcomes import score
from shadowgrpc.report import build_report
from shadowgrpc.report_html import INSTALL_HINT, render_html, write_html
from shadowgrpc.slices import assign
from shadowgrpc.state import FrontState
from tests.wire import fp32_request, fp32_response

ROWS = 4  # per request
NASTY = '<script>alert("x")</script>&'  # a user-chosen name


def _probs(rng, labels: np.ndarray, p_right: np.ndarray) -> np.ndarray:
    """Calibrated two-class probabilities: right with probability p_right, confidence p_right."""
    pred = np.where(rng.random(len(labels)) < p_right, labels, 1 - labels)
    out = np.empty((len(labels), 2))
    out[np.arange(len(labels)), pred] = p_right
    out[np.arange(len(labels)), 1 - pred] = 1 - p_right
    return out


def make_state(shadow: str = "better", n: int = 300, model: str = "fraud", target: str = "v2", seed: int = 0) -> FrontState:
    """A front's state after ``n`` requests of ROWS rows, all compared and scored. ``shadow``:
    "better" (more accurate everywhere: PASS) or "worse_high" (better below x = 0.5, much worse
    above: the slice gate FAILs; also a few errors, a contract mismatch and NaN inputs)."""
    cfg = {"routes": [{
        "model": model, "live": {"version": "1"}, "shadows": [{"name": target, "version": "2"}],
        "slices": [{"name": "band", "input": "x", "edges": [0.5], "labels": ["low", "high"]}],
        "outputs": {"probability": {"kind": "classifier"}, "value": {"kind": "regression"}},
        "gates": {"min_pairs": 50, "min_outcomes": 100, "slice_min_outcomes": 100},
    }]}  # fmt: skip
    route = Settings.from_dict(cfg).routes[0]
    state = FrontState.for_routes((route,), 1000, 60.0, 1 << 20)
    rs = state.routes[model]
    ts = rs.shadows[0]
    rng = np.random.default_rng(seed)
    for i in range(n):
        x = rng.random((ROWS, 1))
        labels = rng.integers(0, 2, ROWS)
        high = x[:, 0] >= 0.5
        p_shadow = np.full(ROWS, 0.9) if shadow == "better" else np.where(high, 0.55, 0.97)
        live_p, shadow_p = _probs(rng, labels, np.full(ROWS, 0.75)), _probs(rng, labels, p_shadow)
        v = rng.normal(3.0, 1.0, (ROWS, 1))
        rs.stats.requests += 1
        rs.stats.live_ok += 1
        rs.stats.live_latency.record(1e-3 * (1 + 0.3 * rng.random()))
        ts.stats.sampled += 1
        ts.stats.sent += 1
        ts.stats.ok += 1
        ts.stats.latency.record(1e-3 * (1 + 0.3 * rng.random()))
        buckets = assign(route.slices, decode_request(fp32_request(x=x)))
        primary = compare_responses(fp32_response(probability=live_p, value=v), fp32_response(probability=shadow_p, value=v + rng.normal(0, 0.01, v.shape)), ts.stats, route, buckets)
        assert primary is not None
        score(ts.outcomes, primary[0], primary[1], labels, None, route.slices, buckets, primary[2])
    rs.completeness.inputs["x"] = InputStats(requests=n, values=n * ROWS)
    if shadow != "better":
        ts.stats.sent += 2
        ts.stats.sampled += 2
        ts.stats.errors["UNAVAILABLE"] = 2
        ts.stats.contract_mismatch = 1
        rs.completeness.inputs["x"].nan = 3
    return state


def _page(state: FrontState) -> str:
    return render_html(state, build_report(state))


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


@pytest.fixture(scope="module")
def failing() -> tuple[FrontState, str]:
    s = make_state("worse_high")
    return s, _page(s)


def test_verdict_first_with_each_gates_figure_and_threshold(failing):
    state, page = failing
    rep = build_report(state)
    sr = rep.routes[0].shadows[0]
    assert sr.verdict.decision == "FAIL"
    gates = {g.name: g for g in sr.verdict.gates}
    assert gates["accuracy[band high]"].status == "FAIL" and gates["contract"].status == "FAIL"
    body = page[page.index("<body>"):]
    # The banner is the first thing in the body after the title line, in the FAIL colour class.
    first = re.search(r'<div id="verdict" class="banner (\w+)">', body)
    assert first and first.group(1) == "FAIL" and body.index("<h1>") < first.start() < body.index('id="route-0"')
    verdict = body[first.start(): body.index('id="route-0"')]
    text = _text(verdict)
    for g in sr.verdict.gates:
        assert g.name in text and g.status in text
    lat = gates["latency_p99"]
    assert f"{lat.value:.2f}x live" in text and f"FAIL above {lat.threshold:g}x" in text
    err = gates["error_rate"]
    assert f"{err.value:.2%}" in text and f"max {err.threshold:.2%}" in text
    acc = gates["accuracy[band high]"]
    assert f"{acc.value:+.2%} (95% lower bound)" in text and f"min {acc.threshold:+.2%}" in text


def test_every_section_and_one_plot_each(failing):
    state, page = failing
    for h in ("Output distributions, live vs shadow", "Calibration", "Latency", "Per slice", "Disagreement breakdown",
              "Contract and errors", "Feature completeness", "Ground-truth store"):
        assert h in page, h
    imgs = re.findall(r'<img src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"', page)
    # two outputs' distributions, one calibration curve, one latency CDF
    assert sorted(alt for _, alt in imgs) == ["calibration curves", "latency CDFs", "probability distributions", "value distributions"]
    for b64, _ in imgs:
        svg = base64.b64decode(b64)
        assert svg.startswith(b"<?xml") and b"<svg" in svg and b"<path" in svg
    # Self-contained: nothing to fetch when viewed, no script.
    assert not re.search(r'(src|href)="(?!data:)', page) and "<script" not in page.lower() and "@import" not in page and "url(" not in page


def test_slice_regression_is_red_and_the_numbers_match_the_report(failing):
    state, page = failing
    sr = build_report(state).routes[0].shadows[0]
    table = page[page.index("<h4>Per slice</h4>"):]
    table = table[: table.index("</table>")]
    rows = {re.findall(r"<td[^>]*>([^<]*)</td>", r)[1]: r for r in re.findall(r"<tr[^>]*>.*?</tr>", table)[1:]}
    assert 'class="regressed"' in rows["high"] and 'class="regressed"' not in rows["low"]
    high = next(x.truth for x in sr.ground_truth.slices if x.bucket == "high")
    assert f"{high.live.accuracy:.2%}" in rows["high"] and f"{high.shadow.accuracy:.2%}" in rows["high"] and "FAIL" in rows["high"]
    g = sr.ground_truth
    text = _text(page)
    assert f"improvements (shadow right, live wrong) {g.improvements}" in text and f"regressions (live right, shadow wrong) {g.regressions}" in text
    assert f"both right {g.both_right}" in text and f"both wrong {g.both_wrong}" in text
    assert "live \\ shadow 0 1" in text  # the 2 x 2 confusion matrix of the classifier output


def test_contract_errors_and_completeness_problems_are_shown(failing):
    _, page = failing
    text = _text(page)
    assert "contract mismatches 1" in text and "shadow errors UNAVAILABLE=2" in text
    row = re.search(r"<tr><td>x</td>.*?</tr>", page).group(0)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", row)[:4] == ["x", "300", "1200", "3"] and '<td class="n bad">3</td>' in row


def test_a_better_shadow_passes_in_green():
    page = _page(make_state("better", n=80, seed=1))
    assert re.search(r'<div id="verdict" class="banner PASS">', page) and 'class="regressed"' not in page.split('id="route-0"')[1]


def test_user_strings_are_escaped():
    page = _page(make_state("better", n=30, model=NASTY, target=NASTY))
    assert NASTY not in page and "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page


def test_empty_state_and_no_state():
    state = FrontState()
    rep = build_report(state)
    rep.log.path, rep.log.rows_written = NASTY, 7  # the paired-prediction log's line
    page = render_html(state, rep, title="empty <front>")
    assert "NO SHADOWS" in page and "(no routes configured)" in page and "<title>empty &lt;front&gt;</title>" in page
    assert NASTY not in page and "paired log &lt;script" in page and "rows written 7" in page
    rep.source = "paired log /x"  # an offline report names its source, not the live store's counters
    page = render_html(state, rep)
    assert "offline: paired log /x; outcomes joined by id" in page and "pairs waiting" not in page
    s = make_state("better", n=5)
    page = render_html(None, build_report(s))
    assert "NOT_ENOUGH_DATA" in page and 'alt="latency CDFs"' not in page and "no comparison state given" in page


def test_write_html_and_the_missing_matplotlib_error(tmp_path, monkeypatch):
    s = make_state("better", n=5)
    out = tmp_path / "r.html"
    write_html(None, build_report(s), str(out), title="t")  # (the plots: the tests above)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>") and [p.name for p in tmp_path.iterdir()] == ["r.html"]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(ImportError, match=re.escape(INSTALL_HINT)):
        write_html(s, build_report(s), str(tmp_path / "x.html"))
    assert not (tmp_path / "x.html").exists()


def test_plots_of_the_edge_cases():
    from shadowgrpc import _plots
    from shadowgrpc.sketches import Histogram, LatencySketch

    wide = Histogram(np.linspace(0, 1, 11), 6)  # more classes than panels: one panel of all classes
    wide.update(np.random.default_rng(0).dirichlet(np.ones(6), 50))
    outside = Histogram([-1e-3, 0.0, 1e-3, 1.0, 1e3], 1)  # a log-spaced grid around 0 (symlog), every value beyond it
    outside.update(np.array([-5e3, 2e3]))
    lat = LatencySketch()
    lat.record_many(np.array([2e-3, 3e-3, 40e-3]))
    for uri in (_plots.distributions(wide.edges, wide.counts, wide.counts), _plots.distributions(outside.edges, outside.counts, outside.counts),
                _plots.latency_cdf(None, lat.counts)):  # fmt: skip
        assert uri is not None and base64.b64decode(uri.split(",", 1)[1]).startswith(b"<?xml")
    empty = Histogram([0.0, 1.0], 1)
    assert _plots.distributions(empty.edges, empty.counts, empty.counts) is None
    assert _plots.latency_cdf(LatencySketch().counts, None) is None and _plots.calibration([(0.0, 0, 0.0)], []) is None
