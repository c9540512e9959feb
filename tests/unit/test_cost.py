"""Resource cost from Triton's metrics endpoint (issue 3 item 4): the Prometheus parser, the cost's
reading of Triton's metric names, and CostTracker against a fake Triton (statistics over gRPC,
metrics over HTTP, so GPU figures and failures can be staged). Against the real embedded Triton:
tests/triton/test_cost_metrics.py."""

from __future__ import annotations

import asyncio
import http.server
import math
import re
import threading
import time
from collections.abc import Iterator

import pytest
from tritonclient.grpc import service_pb2 as kpb

from shadowgrpc import _prometheus
from shadowgrpc.backends import Upstreams
from shadowgrpc.config import ConfigError, Settings
from shadowgrpc.cost import CostTracker, Usage, _delta, format_cost, triton_metrics
from shadowgrpc.report import build_report
from shadowgrpc.report_text import format_report
from shadowgrpc.router import Router
from shadowgrpc.snapshot import load, snapshot
from tests.fakes import FakeTriton

# -- the parser ------------------------------------------------------------------------------


def test_parser_reads_escaped_labels_special_values_and_skips_comments():
    text = (
        '# HELP nv_inference_count Number of inferences {"odd" help} with \\ and "quotes"\n'
        "# TYPE nv_inference_count counter\n"
        'nv_inference_count{model="fraud",version="1"} 40\n'
        'nv_inference_count{model="a\\"b\\\\c\\nd",version="2",} 3 1712345678000\n'
        'odd{ a = "x,y}z" , b="# not a comment",c="\\t kept"}1.5e3\n'
        "bare 7\r\n"
        "empty_braces{} -2\n"
        'nan_metric{model="m"} NaN\n'
        "pos_inf +Inf\n"
        "neg_inf -Inf\n"
        'exemplar{le="0.5"} 3 # {trace_id="abc"} 0.4 1.0\n'
        "\n"
        "   \n"
        "# EOF\n"
    )
    s, bad = _prometheus.parse(text)
    assert bad == 0
    assert s["nv_inference_count"][(("model", "fraud"), ("version", "1"))] == 40
    assert s["nv_inference_count"][(("model", 'a"b\\c\nd'), ("version", "2"))] == 3
    assert s["odd"] == {(("a", "x,y}z"), ("b", "# not a comment"), ("c", "\\t kept")): 1500.0}
    assert s["bare"] == {(): 7.0} and s["empty_braces"] == {(): -2.0}
    assert math.isnan(s["nan_metric"][(("model", "m"),)])
    assert s["pos_inf"][()] == math.inf and s["neg_inf"][()] == -math.inf
    assert s["exemplar"] == {(("le", "0.5"),): 3.0}


@pytest.mark.parametrize(
    "line",
    [
        "no_value",
        'unclosed{a="1" 2',
        "unquoted{a=1} 2",
        'not_a_number{a="1"} twelve',
        "too_many 1 2 3",
        '{a="1"} 2',
        "dash-1",
        'unterminated{a="\\"} 1',
        'no_comma{a="1" b="2"} 3',
        'bad_label{1a="x"} 1',
    ],
)
def test_parser_skips_and_counts_a_line_it_cannot_read(line):
    s, bad = _prometheus.parse(f"good 1\n{line}\nalso_good{{x=\"y\"}} 2\n")
    assert bad == 1
    assert s["good"] == {(): 1.0} and s["also_good"] == {(("x", "y"),): 2.0}
    assert set(s) == {"good", "also_good"}


def test_parser_keeps_the_last_of_a_repeated_series_and_handles_nothing():
    s, bad = _prometheus.parse('x{a="1"} 1\nx{a="1"} 5\n')
    assert s == {"x": {(("a", "1"),): 5.0}} and bad == 0
    assert _prometheus.parse("") == ({}, 0)


# -- Triton's names --------------------------------------------------------------------------

TRITON_TEXT = """\
# TYPE nv_inference_count counter
nv_inference_count{{gpu_uuid="GPU-a",model="m",version="1"}} {n1a}
nv_inference_count{{gpu_uuid="GPU-b",model="m",version="1"}} {n1b}
nv_inference_count{{model="m",version="2"}} {n2}
nv_inference_count{{model="other",version="1"}} 999
nv_inference_compute_input_duration_us{{gpu_uuid="GPU-a",model="m",version="1"}} 10
nv_inference_compute_input_duration_us{{gpu_uuid="GPU-b",model="m",version="1"}} 5
nv_inference_compute_infer_duration_us{{gpu_uuid="GPU-a",model="m",version="1"}} {c1}
nv_inference_compute_infer_duration_us{{gpu_uuid="GPU-b",model="m",version="1"}} NaN
nv_inference_compute_infer_duration_us{{model="m",version="2"}} {c2}
nv_inference_compute_output_duration_us{{model="m",version="1"}} 1.5
nv_inference_queue_duration_us{{model="m",version="1"}} 20
nv_inference_queue_duration_us{{model="m",version="2"}} 30
nv_gpu_utilization{{gpu_uuid="GPU-a"}} {util}
nv_gpu_memory_used_bytes{{gpu_uuid="GPU-a"}} 2147483648
nv_energy_consumption{{gpu_uuid="GPU-a"}} {energy}
nv_energy_consumption{{gpu_uuid="GPU-b"}} +Inf
nv_cpu_utilization 0.25
nv_cpu_memory_used_bytes 1073741824
"""


def _triton_text(n1a=30, n1b=10, n2=40, c1=1000, c2=1500, util=0.5, energy=1000.0):
    return TRITON_TEXT.format(n1a=n1a, n1b=n1b, n2=n2, c1=c1, c2=c2, util=util, energy=energy)


def test_triton_metrics_adds_a_models_series_and_reads_devices():
    m = triton_metrics(_prometheus.parse(_triton_text())[0])
    assert m.missing == ""
    # Series of one model/version on two GPUs are added; the NaN one is left out; us -> ns.
    assert m.models["m"]["1"] == Usage(inferences=40, compute_ns=(10 + 5 + 1000 + 1.5) * 1000, queue_ns=20_000)
    assert m.models["m"]["2"] == Usage(40, 1_500_000, 30_000)
    assert m.gpus == {"GPU-a": {"nv_gpu_utilization": 0.5, "nv_gpu_memory_used_bytes": 2**31, "nv_energy_consumption": 1000.0}}
    assert m.cpu == {"nv_cpu_utilization": 0.25, "nv_cpu_memory_used_bytes": 2**30}


def test_triton_metrics_names_the_metrics_it_misses():
    m = triton_metrics(_prometheus.parse('nv_inference_count{model="m",version="1"} 3\nnv_gpu_utilization{gpu_uuid="g"} 0.1\n')[0])
    assert "nv_inference_compute_infer_duration_us" in m.missing and "nv_inference_count" not in m.missing
    assert m.gpus == {"g": {"nv_gpu_utilization": 0.1}}


def test_delta_pins_excludes_and_counts_a_reset_counter_from_zero():
    base = {"1": Usage(10, 100, 10), "2": Usage(50, 500, 50), "3": Usage(5, 5, 5)}
    now = {"1": Usage(30, 300, 30), "2": Usage(20, 200, 20), "4": Usage(1, 1, 1)}  # 2 went back, 3 unloaded, 4 new
    assert _delta(now, base, "1", set()) == Usage(20, 200, 20)
    assert _delta(now, base, "2", set()) == Usage(20, 200, 20)  # from zero
    assert _delta(now, base, "", {"1"}) == Usage(21, 201, 21)
    assert _delta(now, base, "9", set()) == Usage()


def test_metrics_url_config_is_validated_and_inherited_by_shadows_on_lives_address():
    url = "http://triton:8002/metrics"
    doc = {"routes": [{"model": "m", "live": {"metrics_url": url}, "shadows": [{"version": "2"}, {"name": "far", "address": "other:8001"}, {"name": "off", "version": "3", "metrics_url": ""}]}]}
    r = Settings.from_dict(doc).routes[0]
    assert r.live.metrics_url == url and [s.metrics_url for s in r.shadows] == [url, "", ""]
    for where, bad in (("live", "triton:8002"), ("live", 8002), ("shadows[1]", "ftp://x/metrics"), ("shadows[1]", "http://h:99999/")):
        d = {"routes": [{"model": "m", "live": {}, "shadows": [{"version": "2"}, {"name": "far"}]}]}
        target = d["routes"][0]["live"] if where == "live" else d["routes"][0]["shadows"][1]
        target["metrics_url"] = bad
        with pytest.raises(ConfigError, match="^" + re.escape(f"routes[0].{where}.metrics_url: must be an http(s) URL")):
            Settings.from_dict(d)


# -- CostTracker against a fake Triton ------------------------------------------------------


def _run(coro):
    """Run ``coro`` on a private loop (asyncio.run would leave the thread without a default loop)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


class StatsTriton(FakeTriton):
    """FakeTriton that also answers ModelStatistics from ``usage`` (model -> version -> Usage)."""

    def __init__(self) -> None:
        super().__init__()
        self.usage: dict[str, dict[str, Usage]] = {}

    async def ModelStatistics(self, request, context):
        resp = kpb.ModelStatisticsResponse()
        for version, u in self.usage.get(request.name, {}).items():
            st = resp.model_stats.add(name=request.name, version=version, inference_count=u.inferences)
            st.inference_stats.compute_infer.ns = u.compute_ns
            st.inference_stats.queue.ns = u.queue_ns
        return resp


class MetricsEndpoint:
    """An HTTP server on loopback answering GET /metrics with ``body`` (after ``delay_s``)."""

    def __init__(self) -> None:
        self.body = ""
        self.delay_s = 0.0
        self.status = 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(outer.delay_s)
                data = outer.body.encode()
                try:
                    self.send_response(outer.status)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (the slow endpoint)
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoints() -> Iterator[tuple[MetricsEndpoint, MetricsEndpoint]]:
    a, b = MetricsEndpoint(), MetricsEndpoint()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_tracker_reports_metrics_cost_gpu_energy_and_reasons(endpoints):
    ep, slow = endpoints
    slow.delay_s, slow.body = 2.0, _triton_text()

    async def go():
        fake = StatsTriton()
        addr = await fake.start()
        fake.usage = {"m": {"1": Usage(100, 10**6, 0), "2": Usage(0, 0, 0)}}
        ep.body = _triton_text()
        routes = [
            {
                "model": "m",
                "live": {"version": "1", "metrics_url": ep.url},
                "shadows": [
                    {"name": "v2", "version": "2"},  # same address: live's metrics_url
                    {"name": "blind", "version": "2", "metrics_url": ""},
                    {"name": "dead", "version": "2", "metrics_url": "http://127.0.0.1:1/metrics"},
                    {"name": "slow", "version": "2", "metrics_url": slow.url},
                ],
            },
            {"model": "plain", "live": {"version": "1"}, "shadows": [{"version": "2"}]},
        ]
        settings = Settings.from_dict({"server": {"default_live": addr}, "routes": routes})
        ups = Upstreams(settings.max_message_bytes, settings.upstream_compression)
        router = Router(settings, ups)
        tracker = CostTracker(router, metrics_timeout=0.3)
        try:
            await tracker.start()
            fake.usage = {"m": {"1": Usage(140, 2 * 10**6, 0), "2": Usage(40, 3 * 10**6, 0)}}
            ep.body = _triton_text(n1a=50, n1b=30, n2=80, c1=5000, c2=9000, util=0.75, energy=1600.0)
            t0 = time.monotonic()
            costs = await tracker.collect()
            took = time.monotonic() - t0
            rep = build_report(router.state, "", costs)
            return costs, rep, took, snapshot(router.state, costs)
        finally:
            await ups.close()
            await fake.stop()

    costs, rep, took, snap = _run(go())
    assert took < 1.5  # the slow endpoint is given up on, the report is not held
    v2 = costs[("m", "v2")]
    assert v2["available"] and v2["live_inferences"] == 40 and v2["shadow_inferences"] == 40
    m = v2["metrics"]
    assert m["available"] and m["live_inferences"] == 40 and m["shadow_inferences"] == 40
    assert m["live_compute_ms"] == pytest.approx(4.0) and m["shadow_compute_ms"] == pytest.approx(7.5)
    assert m["extra_compute_fraction"] == pytest.approx(7.5 / 4.0) and m["live_queue_ms"] == 0.0
    (host,) = m["hosts"]
    assert host["serves"] == "live, shadow" and host["cpu_utilization"] == 0.25
    (gpu,) = host["gpus"]
    assert gpu["uuid"] == "GPU-a" and gpu["utilization"] == 0.75 and gpu["energy_j"] == pytest.approx(600.0)
    assert gpu["mean_power_w"] == pytest.approx(600.0 / host["window_s"])
    assert costs[("m", "blind")]["metrics"]["reason"] == "no metrics_url for this shadow (routes[].shadows[].metrics_url)"
    dead = costs[("m", "dead")]["metrics"]
    assert not dead["available"] and dead["reason"].startswith("GET http://127.0.0.1:1/metrics: ") and "refused" in dead["reason"]
    assert [h["serves"] for h in dead["hosts"]] == ["live", "shadow"] and "reason" in dead["hosts"][1]
    assert costs[("m", "slow")]["metrics"]["reason"].endswith("no answer within 0.3 s")
    assert "metrics" not in costs[("plain", "plain:2")]  # no metrics_url at all: nothing said
    text = format_report(rep)
    assert re.search(r"compute \(Triton metrics, \d+ s\): shadow 7\.5 ms over 40 inferences = 1\.88x live's 4\.0 ms over 40;", text)
    assert re.search(r"GPU GPU-a: 75% busy, 2\.0 GiB used, 600 J over \d+ s \(mean \d+ W\)", text)
    assert "GPU utilization and energy are per GPU (every model on it), not per model" in text
    assert "compute (Triton metrics): unavailable (no metrics_url for this shadow" in text
    # A snapshot keeps the metrics part: the report from disk says the same.
    view = load(snap)
    again = build_report(view, "", view.costs)
    assert [s.cost for s in again.routes[0].shadows] == [s.cost for s in rep.routes[0].shadows]


def test_tracker_waits_for_a_baseline_when_the_endpoint_was_down_at_start(endpoints):
    ep, _ = endpoints
    ep.status = 503

    async def go():
        fake = StatsTriton()
        addr = await fake.start()
        fake.usage = {"m": {"1": Usage(1, 1, 0), "2": Usage(1, 1, 0)}}
        settings = Settings.from_dict({"server": {"default_live": addr}, "routes": [{"model": "m", "live": {"version": "1", "metrics_url": ep.url}, "shadows": [{"version": "2"}]}]})
        ups = Upstreams(settings.max_message_bytes, settings.upstream_compression)
        tracker = CostTracker(Router(settings, ups))
        try:
            await tracker.start()
            first = (await tracker.collect())[("m", "m:2")]["metrics"]
            ep.status, ep.body = 200, _triton_text()
            second = (await tracker.collect())[("m", "m:2")]["metrics"]
            ep.body = _triton_text(n2=45)
            third = (await tracker.collect())[("m", "m:2")]["metrics"]
            return first, second, third
        finally:
            await ups.close()
            await fake.stop()

    first, second, third = _run(go())
    assert not first["available"] and first["reason"].endswith("HTTP 503 Service Unavailable")
    assert not second["available"] and second["reason"].startswith("baseline taken just now")
    assert third["available"] and third["shadow_inferences"] == 5 and third["live_inferences"] == 0


def test_format_cost_without_metrics_is_the_statistics_line_only():
    from shadowgrpc.v1 import shadow_pb2 as pb

    c = pb.ComputeCost(available=False, reason="ModelStatistics(m) at x: UNAVAILABLE: down")
    assert format_cost(c) == ["    compute (Triton statistics): unavailable (ModelStatistics(m) at x: UNAVAILABLE: down)"]
