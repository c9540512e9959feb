"""Resource cost: what a shadow adds to Triton's compute, from Triton's own statistics API and,
where configured, its Prometheus metrics endpoint.

Triton counts, per model and version, inferences and the time spent computing them
(``compute_input + compute_infer + compute_output``) and queueing. The front snapshots these
counters when it starts (for every live and shadow target) and again when a report is asked for;
the deltas over that window give live's and each shadow's compute, and the shadow's *extra*
compute as a fraction of live's ("shadow roughly doubles inference compute: report by how much").

The counters are Triton's, not the front's: other clients of the same model/version count too.
When live is not pinned to a version, versions that a shadow of the same model uses are excluded
from live's total (and vice versa for an unpinned shadow). A counter that went back since the
baseline (Triton restarted, the model was reloaded) counts from zero, as Prometheus'
``increase()`` does; a version unloaded since the baseline drops out.

The metrics endpoint (``metrics_url`` of a live or shadow target: Triton's ``--metrics-port``,
which its gRPC address does not tell, so it is never guessed) gives the same per-model figures
as counters labelled ``model`` and ``version``: ``nv_inference_count``,
``nv_inference_compute_{input,infer,output}_duration_us`` and
``nv_inference_queue_duration_us`` (series that differ only in other labels, e.g. ``gpu_uuid``
for a model with instances on several GPUs, are added). It also gives what the statistics API
does not, per device and so shared by every model there: ``nv_gpu_utilization`` and
``nv_gpu_memory_used_bytes`` (gauges, read at report time), ``nv_energy_consumption`` (joules
since Triton started, a counter: its increase over the window) per ``gpu_uuid``, and
``nv_cpu_utilization`` / ``nv_cpu_memory_used_bytes``. Each endpoint is scraped once at start and
once per report, in a thread, within ``METRICS_TIMEOUT_S``: a slow, dead or odd endpoint gives a
reason in the report, never a failed or stalled one.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from tritonclient.grpc import service_pb2 as kserve

from . import _prometheus

if TYPE_CHECKING:  # report.py imports format_cost: keep this module light
    from .backends import Upstream
    from .config import LiveTarget, ShadowTarget
    from .router import Router

STATS_TIMEOUT_S = 2.0
METRICS_TIMEOUT_S = 2.0

# Triton's metric names (tritonserver's metrics, docs: user_guide/metrics.md).
INFERENCES = "nv_inference_count"
COMPUTE_US = ("nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us")
QUEUE_US = "nv_inference_queue_duration_us"
GPU_UTILIZATION = "nv_gpu_utilization"
GPU_MEMORY_USED = "nv_gpu_memory_used_bytes"
GPU_ENERGY = "nv_energy_consumption"
CPU_UTILIZATION = "nv_cpu_utilization"
CPU_MEMORY_USED = "nv_cpu_memory_used_bytes"
BASELINE_NOW = "baseline taken just now ({} unavailable before): ask again later"


@dataclass(frozen=True, slots=True)
class Usage:
    inferences: int = 0
    compute_ns: int = 0
    queue_ns: int = 0

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.inferences - other.inferences, self.compute_ns - other.compute_ns, self.queue_ns - other.queue_ns)

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.inferences + other.inferences, self.compute_ns + other.compute_ns, self.queue_ns + other.queue_ns)


Snapshot = dict[str, Usage]  # version -> usage, for one (address, model)


async def fetch_usage(upstream: Upstream, model: str, timeout: float = STATS_TIMEOUT_S) -> Snapshot:
    """Per-version usage of ``model`` on ``upstream`` (all versions Triton reports)."""
    raw = await upstream.unary["ModelStatistics"](kserve.ModelStatisticsRequest(name=model).SerializeToString(), timeout=timeout)
    out: Snapshot = {}
    for m in kserve.ModelStatisticsResponse.FromString(raw).model_stats:
        s = m.inference_stats
        out[m.version] = Usage(
            inferences=m.inference_count,
            compute_ns=s.compute_input.ns + s.compute_infer.ns + s.compute_output.ns,
            queue_ns=s.queue.ns,
        )
    return out


@dataclass(frozen=True, slots=True)
class TritonMetrics:
    """One scrape of a Triton metrics endpoint, as much as the cost needs of it."""

    models: dict[str, Snapshot] = field(default_factory=dict)  # model -> version -> usage
    gpus: dict[str, dict[str, float]] = field(default_factory=dict)  # gpu_uuid -> metric -> value
    cpu: dict[str, float] = field(default_factory=dict)  # CPU_UTILIZATION / CPU_MEMORY_USED -> value
    missing: str = ""  # why per-model usage cannot be read from it ("" = it can)


def triton_metrics(samples: _prometheus.Samples) -> TritonMetrics:
    """The cost's view of parsed Triton metrics; NaN and infinite values are left out."""
    names = (INFERENCES, *COMPUTE_US, QUEUE_US)
    acc: dict[tuple[str, str], list[float]] = {}
    for i, name in enumerate(names):
        for labels, v in samples.get(name, {}).items():
            d = dict(labels)
            if "model" in d and math.isfinite(v):
                acc.setdefault((d["model"], d.get("version", "")), [0.0] * len(names))[i] += v
    models: dict[str, Snapshot] = {}
    for (model, version), (n, c_in, c_infer, c_out, q) in acc.items():
        models.setdefault(model, {})[version] = Usage(int(n), round((c_in + c_infer + c_out) * 1000), round(q * 1000))
    gpus: dict[str, dict[str, float]] = {}
    for name in (GPU_UTILIZATION, GPU_MEMORY_USED, GPU_ENERGY):
        for labels, v in samples.get(name, {}).items():
            uuid = dict(labels).get("gpu_uuid")
            if uuid is not None and math.isfinite(v):
                gpus.setdefault(uuid, {})[name] = v
    cpu = {name: v for name in (CPU_UTILIZATION, CPU_MEMORY_USED) for v in samples.get(name, {}).values() if math.isfinite(v)}
    missing = [n for n in names if n not in samples]
    return TritonMetrics(models, gpus, cpu, f"no {', '.join(missing)} in its metrics (an older Triton?)" if missing else "")


async def fetch_metrics(url: str, timeout: float = METRICS_TIMEOUT_S) -> TritonMetrics:
    """Scrape and read one Triton metrics endpoint (fetch and parse run in a thread)."""

    def get() -> TritonMetrics:
        return triton_metrics(_prometheus.parse(_prometheus.fetch(url, timeout))[0])

    return await asyncio.wait_for(asyncio.to_thread(get), timeout + 1.0)


def _delta(now: Snapshot, base: Snapshot, version: str, exclude: set[str]) -> Usage:
    """Usage over the window: of ``version`` if pinned, else of every version not excluded. A
    counter that went back counts from zero; a version gone since the baseline drops out."""
    total = Usage()
    for v, u in now.items():
        if (v == version) if version else (v not in exclude):
            d = u - base.get(v, Usage())
            total = total + (u if min(d.inferences, d.compute_ns, d.queue_ns) < 0 else d)
    return total


def _pair(live: LiveTarget, t: ShadowTarget, same_model: bool, now: tuple[Snapshot, Snapshot], base: tuple[Snapshot, Snapshot]) -> dict:
    """The usage fields of ComputeCost (and of its Metrics) for live and one shadow."""
    # Same model on the same Triton: an unpinned side leaves out the other's version.
    live_excl = {t.version} if same_model and t.version else set()
    sh_excl = {live.version} if same_model and live.version else set()
    lu = _delta(now[0], base[0], live.version, live_excl)
    su = _delta(now[1], base[1], t.version, sh_excl)
    return {
        "live_inferences": lu.inferences,
        "shadow_inferences": su.inferences,
        "live_compute_ms": lu.compute_ns / 1e6,
        "shadow_compute_ms": su.compute_ns / 1e6,
        "live_queue_ms": lu.queue_ns / 1e6,
        "shadow_queue_ms": su.queue_ns / 1e6,
        "extra_compute_fraction": (su.compute_ns / lu.compute_ns) if lu.compute_ns > 0 else 0.0,
    }


def _adopt(snap: dict, baseline: dict, taken: dict, now: float) -> set:
    """Take a baseline for the keys that answered and have none yet; returns those keys."""
    fresh = {k for k, v in snap.items() if k not in baseline and not isinstance(v, str)}
    for k in fresh:
        baseline[k] = snap[k]
        taken[k] = now
    return fresh


class CostTracker:
    """Baseline at start, deltas at report time; one ModelStatistics call per (address, model)
    and one scrape per metrics URL."""

    def __init__(self, router: Router, metrics_timeout: float = METRICS_TIMEOUT_S) -> None:
        self.router = router
        self.metrics_timeout = metrics_timeout
        self.baseline: dict[tuple[str, str], Snapshot] = {}
        self.baseline_time: dict[tuple[str, str], float] = {}
        self.metrics_baseline: dict[str, TritonMetrics] = {}
        self.metrics_baseline_time: dict[str, float] = {}
        self._keys: dict[tuple[str, str], Upstream] = {}
        self._urls: set[str] = set()
        self._refresh_keys()

    def _refresh_keys(self) -> None:
        """What to read, from the routes as served now (auto-shadow adds targets as it goes)."""
        for rs in self.router.routes.values():
            if not rs.shadows:
                continue
            self._keys[(rs.route.live.address, rs.route.live.model)] = rs.live
            for ss in rs.shadows:
                self._keys[(ss.target.address, ss.target.model)] = ss.upstream
            self._urls |= {rs.route.live.metrics_url, *(ss.target.metrics_url for ss in rs.shadows)} - {""}

    async def _snapshot(self) -> dict[tuple[str, str], Snapshot | str]:
        self._refresh_keys()
        keys = list(self._keys)
        results = await asyncio.gather(*(fetch_usage(self._keys[k], k[1]) for k in keys), return_exceptions=True)
        out: dict[tuple[str, str], Snapshot | str] = {}
        for k, r in zip(keys, results):
            if isinstance(r, grpc.aio.AioRpcError):
                out[k] = f"ModelStatistics({k[1]}) at {k[0]}: {r.code().name}: {r.details()}"
            elif isinstance(r, BaseException):
                out[k] = f"ModelStatistics({k[1]}) at {k[0]}: {r!r}"
            else:
                out[k] = r
        return out

    async def _scrape(self) -> dict[str, TritonMetrics | str]:
        self._refresh_keys()
        urls = sorted(self._urls)
        results = await asyncio.gather(*(fetch_metrics(u, self.metrics_timeout) for u in urls), return_exceptions=True)
        out: dict[str, TritonMetrics | str] = {}
        for u, r in zip(urls, results):
            if isinstance(r, Exception):  # asyncio.TimeoutError is TimeoutError
                out[u] = f"GET {u}: {_prometheus.describe(r, self.metrics_timeout)}"
            elif isinstance(r, BaseException):
                raise r
            else:
                out[u] = r
        return out

    async def start(self) -> None:
        """Take the baselines; targets that do not answer get theirs at the first report."""
        stats, metrics = await asyncio.gather(self._snapshot(), self._scrape())
        now = time.monotonic()
        _adopt(stats, self.baseline, self.baseline_time, now)
        _adopt(metrics, self.metrics_baseline, self.metrics_baseline_time, now)

    async def collect(self) -> dict[tuple[str, str], dict]:
        """(route model, shadow name) -> fields of shadowgrpc.v1.ComputeCost."""
        now_snap, now_metrics = await asyncio.gather(self._snapshot(), self._scrape())
        now = time.monotonic()
        fresh = _adopt(now_snap, self.baseline, self.baseline_time, now)
        mfresh = _adopt(now_metrics, self.metrics_baseline, self.metrics_baseline_time, now)
        out: dict[tuple[str, str], dict] = {}
        for name, rs in self.router.routes.items():
            live = rs.route.live
            lkey = (live.address, live.model)
            for ss in rs.shadows:
                t = ss.target
                skey = (t.address, t.model)
                problem = next((now_snap[k] for k in (lkey, skey) if isinstance(now_snap.get(k), str)), None)
                if problem is None and (lkey in fresh or skey in fresh):
                    problem = BASELINE_NOW.format("Triton's statistics were")
                if problem is not None:
                    cost: dict = {"available": False, "reason": problem}
                else:
                    pair = _pair(live, t, lkey == skey, (now_snap[lkey], now_snap[skey]), (self.baseline[lkey], self.baseline[skey]))
                    window = now - min(self.baseline_time[lkey], self.baseline_time[skey])
                    cost = {"available": True, **pair, "window_s": window}
                if live.metrics_url or t.metrics_url:
                    cost["metrics"] = self._metrics_cost(live, t, now_metrics, mfresh, now)
                out[(name, t.name)] = cost
        return out

    def _metrics_cost(self, live: LiveTarget, t: ShadowTarget, snap: dict[str, TritonMetrics | str], fresh: set, now: float) -> dict:
        """Fields of ComputeCost.Metrics for live and one shadow."""
        hosts = [self._host(url, serves, snap[url], now) for url, serves in _hosts(live.metrics_url, t.metrics_url)]
        if not (live.metrics_url and t.metrics_url):
            side = "live (routes[].live.metrics_url)" if not live.metrics_url else "this shadow (routes[].shadows[].metrics_url)"
            return {"available": False, "reason": f"no metrics_url for {side}", "hosts": hosts}
        (lu, lm), (su, sm) = (live.metrics_url, live.model), (t.metrics_url, t.model)
        problem = None
        for url, model in ((lu, lm), (su, sm)):
            m = snap[url]
            if isinstance(m, str):
                problem = m
            elif model not in m.models:
                problem = f"{url}: no {INFERENCES} for model {model!r} (not loaded there, or counter metrics off?)"
            elif m.missing:
                problem = f"{url}: {m.missing}"
            if problem is not None:
                break
        if problem is None and (lu in fresh or su in fresh):
            problem = BASELINE_NOW.format("Triton's metrics were")
        if problem is not None:
            return {"available": False, "reason": problem, "hosts": hosts}
        now_l, now_s = snap[lu].models[lm], snap[su].models[sm]  # type: ignore[union-attr]
        base_l, base_s = self.metrics_baseline[lu].models.get(lm, {}), self.metrics_baseline[su].models.get(sm, {})
        pair = _pair(live, t, (lu, lm) == (su, sm), (now_l, now_s), (base_l, base_s))
        window = now - min(self.metrics_baseline_time[lu], self.metrics_baseline_time[su])
        return {"available": True, **pair, "window_s": window, "hosts": hosts}

    def _host(self, url: str, serves: str, m: TritonMetrics | str, now: float) -> dict:
        """Fields of ComputeCost.Host: one Triton's CPU and GPUs (per device, not per model)."""
        if isinstance(m, str):
            return {"metrics_url": url, "serves": serves, "reason": m}
        window = now - self.metrics_baseline_time[url]
        base = self.metrics_baseline[url].gpus
        h: dict = {"metrics_url": url, "serves": serves, "window_s": window, "gpus": []}
        if CPU_UTILIZATION in m.cpu:
            h["cpu_utilization"] = m.cpu[CPU_UTILIZATION]
        if CPU_MEMORY_USED in m.cpu:
            h["cpu_memory_used_bytes"] = m.cpu[CPU_MEMORY_USED]
        for uuid, g in sorted(m.gpus.items()):
            gpu: dict = {"uuid": uuid}
            if GPU_UTILIZATION in g:
                gpu["utilization"] = g[GPU_UTILIZATION]
            if GPU_MEMORY_USED in g:
                gpu["memory_used_bytes"] = g[GPU_MEMORY_USED]
            if GPU_ENERGY in g:
                e = g[GPU_ENERGY] - base.get(uuid, {}).get(GPU_ENERGY, 0.0)
                gpu["energy_j"] = e if e >= 0 else g[GPU_ENERGY]  # went back: Triton restarted
                if window > 0:
                    gpu["mean_power_w"] = gpu["energy_j"] / window
            h["gpus"].append(gpu)
        return h


def _hosts(live_url: str, shadow_url: str) -> list[tuple[str, str]]:
    """(metrics URL, which sides it serves), live's first, one entry when they are the same."""
    urls = dict.fromkeys(u for u in (live_url, shadow_url) if u)
    return [(u, ", ".join(side for side, su in (("live", live_url), ("shadow", shadow_url)) if su == u)) for u in urls]


def format_cost(c) -> list[str]:
    """The report's lines for one shadow's ComputeCost (shadowgrpc.v1)."""
    lines = _usage_lines(c, "Triton statistics")
    if c.HasField("metrics"):
        m = c.metrics
        lines += _usage_lines(m, "Triton metrics")
        for h in m.hosts:
            lines.append(f"      Triton metrics at {h.metrics_url} ({h.serves}): " + _host_text(h))
    return lines


def _usage_lines(c, source: str) -> list[str]:
    if c.available:
        return [
            f"    compute ({source}, {c.window_s:.0f} s): shadow {c.shadow_compute_ms:.1f} ms over "
            f"{c.shadow_inferences} inferences = {c.extra_compute_fraction:.2f}x live's {c.live_compute_ms:.1f} ms over "
            f"{c.live_inferences}; queue live {c.live_queue_ms:.1f} ms, shadow {c.shadow_queue_ms:.1f} ms"
        ]
    return [f"    compute ({source}): unavailable ({c.reason})"] if c.reason else []


def _host_text(h) -> str:
    if h.reason:
        return f"unavailable ({h.reason})"
    parts = []
    if h.HasField("cpu_utilization"):
        cpu = f"CPU {h.cpu_utilization:.0%}"
        parts.append(cpu + (f", RAM used {h.cpu_memory_used_bytes / 2**30:.1f} GiB" if h.HasField("cpu_memory_used_bytes") else ""))
    for g in h.gpus:
        bits = [f"{g.utilization:.0%} busy" if g.HasField("utilization") else "", f"{g.memory_used_bytes / 2**30:.1f} GiB used" if g.HasField("memory_used_bytes") else ""]
        if g.HasField("energy_j"):
            bits.append(f"{g.energy_j:.0f} J over {h.window_s:.0f} s" + (f" (mean {g.mean_power_w:.0f} W)" if g.HasField("mean_power_w") else ""))
        parts.append(f"GPU {g.uuid}: " + ", ".join(b for b in bits if b))
    if h.gpus:
        parts.append("GPU utilization and energy are per GPU (every model on it), not per model")
    else:
        parts.append("no GPU metrics")
    return "; ".join(parts)
