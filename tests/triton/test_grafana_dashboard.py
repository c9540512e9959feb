"""The Grafana dashboard (shadowgrpc/examples/grafana/shadowgrpc.json) against what a real front
exposes: a front with Prometheus metrics on, in front of the session Triton, takes a little
traffic (a shadow that answers, one that fails), its /metrics is scraped over HTTP and parsed by
prometheus_client, and every metric, selector label, grouping label and legend label that the
dashboard's PromQL and template variables use must be in that scrape. Also the dashboard's own
validity (uid, title, schemaVersion, unique panel ids, non-overlapping gridPos, the datasource as
the ``${DS_PROMETHEUS}`` variable), and that the check does fail on a made-up name or label."""

from __future__ import annotations

import copy
import json
import re
import urllib.request
from importlib import resources

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shadowgrpc.examples.data import make_transactions
from tests.frontctl import front_for
from tests.kserve import INFER, fraud_request

pytestmark = pytest.mark.once  # once: the dashboard against a real scrape; no twin-dependent result (make test's pure-Python pass skips it)

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
ROUTE = {"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}, {"name": "faulty", "model": "fraud_faulty"}]}
FUNCTIONS = {"sum", "min", "max", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "clamp_min", "clamp_max", "abs"}
AGGREGATIONS = {"sum", "min", "max", "avg", "count"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"

Series = dict[str, set[str]]  # metric sample name -> label names seen on it


def dashboard() -> dict:
    return json.loads(resources.files("shadowgrpc.examples").joinpath("grafana/shadowgrpc.json").read_text())


def parse_promql(expr: str) -> tuple[dict[str, set[str]], set[str], set[str]]:
    """({metric: selector labels}, grouping labels (by/without/on/ignoring), functions called)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (Grafana variables live there)
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors: [$__rate_interval]
    grouping: set[str] = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        grouping |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    metrics: dict[str, set[str]] = {}

    def selector(m: re.Match) -> str:
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2)))
        metrics.setdefault(m.group(1) or "{}", set()).update(labels)
        return f" {m.group(1) or ''} "

    e = re.sub(rf"({NAME})?\s*\{{([^}}]*)\}}", selector, e)
    functions: set[str] = set()
    for m in re.finditer(rf"(?<![\w.])({NAME})(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call:
            functions.add(word)
        elif word not in KEYWORDS and word.lower() not in ("inf", "nan"):
            metrics.setdefault(word, set())
    return metrics, grouping, functions


def check_expr(expr: str, series: Series, legend: str = "") -> list[str]:
    metrics, grouping, functions = parse_promql(expr)
    problems = [f"unknown function {f}() in {expr}" for f in sorted(functions - FUNCTIONS)]
    if not metrics:
        problems.append(f"no metric in {expr}")
    for name, labels in metrics.items():
        if name not in series:
            problems.append(f"metric {name} is not exposed by the front")
            continue
        problems += [f"label {lab} is not on {name}" for lab in sorted(labels - series[name])]
        problems += [f"grouping label {lab} is not on {name}" for lab in sorted(grouping - series[name])]
    aggregated = bool(functions & AGGREGATIONS)
    shown = grouping - {"le"} if aggregated else set().union(*(series.get(n, set()) for n in metrics))
    problems += [f"legend label {lab} is not in the result of {expr}" for lab in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend) if lab not in shown]
    return problems


def check_dashboard(d: dict, series: Series) -> list[str]:
    problems = []
    for key, kind in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list), ("templating", dict)):
        if not isinstance(d.get(key), kind) or not d.get(key):
            problems.append(f"dashboard {key} missing or not a {kind.__name__}")
    if problems:
        return problems
    if len(d["uid"]) > 40 or d["schemaVersion"] < 36:
        problems.append("uid longer than 40 characters or schemaVersion below 36")
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables.get("DS_PROMETHEUS")
    inputs = {i.get("name") for i in d.get("__inputs", [])}
    if "DS_PROMETHEUS" not in inputs and not (ds and ds["type"] == "datasource" and ds["query"] == "prometheus"):
        problems.append("no DS_PROMETHEUS datasource variable (or __inputs entry)")
    for v in variables.values():
        if v["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"]["query"])
        if m is None or v["datasource"] != DS:
            problems.append(f"variable {v['name']}: not label_values(metric, label) on ${{DS_PROMETHEUS}}")
            continue
        problems += check_expr(m.group(1), series)
        metric = next(iter(parse_promql(m.group(1))[0]))
        if m.group(2) not in series.get(metric, set()):
            problems.append(f"variable {v['name']}: label {m.group(2)} is not on {metric}")
    ids, cells = set(), set()
    for p in d["panels"]:
        pid, g = p.get("id"), p.get("gridPos", {})
        if not isinstance(pid, int) or pid in ids:
            problems.append(f"panel id {pid!r} missing or repeated")
        ids.add(pid)
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24:
            problems.append(f"panel {pid}: bad gridPos {g}")
            continue
        for cell in ((x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])):
            if cell in cells:
                problems.append(f"panel {pid} overlaps another at {cell}")
                break
            cells.add(cell)
        if p["type"] == "row":
            continue
        refs = [t.get("refId") for t in p.get("targets", [])]
        if not p.get("title") or not refs or len(set(refs)) != len(refs):
            problems.append(f"panel {pid}: no title, no targets or repeated refIds")
        for t in [p, *p.get("targets", [])]:
            if t.get("datasource") != DS:
                problems.append(f"panel {pid}: datasource {t.get('datasource')} is not {DS}")
        for t in p.get("targets", []):
            problems += check_expr(t["expr"], series, t.get("legendFormat", ""))
    return problems


def _scrape(port: int) -> Series:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    series: Series = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            series.setdefault(s.name, set()).update(s.labels)
    return series


@pytest.fixture(scope="module")
def series(triton, tmp_path_factory) -> Series:
    mp = pytest.MonkeyPatch()
    mp.delenv("SHADOWGRPC_TRACE", raising=False)
    mp.setenv("SHADOWGRPC_METRICS_PORT", "0")  # metrics alone, tracing off
    front = front_for(triton.grpc_address, [ROUTE], log={"path": str(tmp_path_factory.mktemp("grafana-log"))})  # the log's metrics too
    try:
        feats, _ = make_transactions(8, seed=11)
        with grpc.insecure_channel(front.address) as ch:
            call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
            for i in range(4):
                call(fraud_request(feats[2 * i : 2 * i + 2], rid=f"grafana-{i}").SerializeToString(), timeout=10)
        front.drain()
        return _scrape(front.front.metrics_port)
    finally:
        front.stop()
        mp.undo()


@pytest.mark.triton
def test_every_name_and_label_the_dashboard_uses_is_exposed(series):
    assert "shadowgrpc_requests_total" in series and {"route", "target", "status"} <= series["shadowgrpc_errors_total"]
    d = dashboard()
    assert check_dashboard(d, series) == []
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    used = set().union(*(parse_promql(e)[0] for e in exprs))
    # The dashboard covers the front's request, error, shadow-call, latency, agreement and drift metrics.
    for name in ("shadowgrpc_requests_total", "shadowgrpc_errors_total", "shadowgrpc_shadowed_total", "shadowgrpc_shed_total",
                 "shadowgrpc_shadow_down_total", "shadowgrpc_live_duration_bucket_total", "shadowgrpc_shadow_duration_bucket_total",
                 "shadowgrpc_shadow_agreement", "shadowgrpc_shadow_divergence", "shadowgrpc_shadow_contract_mismatch_total"):  # fmt: skip
        assert name in used, name


@pytest.mark.triton
def test_the_check_fails_on_made_up_names_and_labels(series):
    d = dashboard()
    first = next(p for p in d["panels"] if p["type"] == "timeseries")

    def broken(**change) -> list[str]:
        bad = copy.deepcopy(d)
        target = next(p for p in bad["panels"] if p["id"] == first["id"])["targets"][0]
        target.update(change)
        return check_dashboard(bad, series)

    assert any("shadowgrpc_made_up_total is not exposed" in p for p in broken(expr="sum(rate(shadowgrpc_made_up_total[5m]))"))
    assert any("label region is not on" in p for p in broken(expr='sum(rate(shadowgrpc_requests_total{region="eu"}[5m]))'))
    assert any("grouping label model" in p for p in broken(expr="sum by (model) (rate(shadowgrpc_requests_total[5m]))"))
    assert any("legend label output" in p for p in broken(legendFormat="{{output}}"))
    assert any("unknown function" in p for p in broken(expr="sum(rat(shadowgrpc_requests_total[5m]))"))
    assert any("datasource" in p for p in broken(datasource={"type": "prometheus", "uid": "my-prom"}))
    bad = copy.deepcopy(d)
    bad["panels"][2]["id"] = bad["panels"][1]["id"]
    bad["templating"]["list"][1]["query"]["query"] = "label_values(shadowgrpc_requests_total, model)"
    problems = check_dashboard(bad, series)
    assert any("repeated" in p for p in problems) and any("label model is not on shadowgrpc_requests_total" in p for p in problems)
