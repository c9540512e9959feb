"""The front's metrics through the OpenTelemetry metrics API.

Every instrument is observable: its callback reads the router's own stats (RouteStats,
ShadowStats) when a reader collects (a Prometheus scrape, an OTLP export), so metrics cost the
request path nothing (a recorded OpenTelemetry histogram cost ~10 us per value here, ~60 us per
shadowed request in all). The latency histograms come from the router's latency sketches (1%
buckets) as cumulative bucket counts with an ``le`` attribute, Prometheus' histogram layout
(``histogram_quantile()`` reads them), plus count and sum. Callbacks run on the reader's
thread: they copy what they read and skip what changes under them.

Names (Prometheus: dots become underscores, counters end in ``_total``, seconds in
``_seconds``), attributes in braces:
  shadowgrpc.requests{route}  shadowgrpc.live.ok{route}  shadowgrpc.unrouted
  shadowgrpc.errors{route,target,status}        live (target="live") and shadow errors
  shadowgrpc.shadowed{route,target}             shadow calls sent
  shadowgrpc.shed{route,target}  shadowgrpc.shadow.sampled|down|not_ready|ok|compared|contract_mismatch{route,target}
  shadowgrpc.shm_not_mirrored{route}
  shadowgrpc.mirror.decisions{route,target,reason}   the coverage ledger (ledger.py): sent, or why not
  shadowgrpc.shadow.copies{route,target,outcome[,status]}  shadowgrpc.shadow.paced{route,target,fate}   capacity.py
  shadowgrpc.live.duration.bucket{route,le}  shadowgrpc.live.duration.count|sum{route}   successful live calls, s
  shadowgrpc.shadow.duration.bucket{route,target,le}  shadowgrpc.shadow.duration.count|sum{route,target}
  shadowgrpc.shadow.in_flight{route,target}
  shadowgrpc.shadow.budget.used|limit{route,target,kind=requests|bytes|compute_s}  shadowgrpc.shadow.budget.paused{route,target}
  shadowgrpc.shadow.agreement{route,target,output}        top-label (or in-tolerance) agreement, 0..1
  shadowgrpc.shadow.divergence{route,target,output,measure=js|psi}   drift, live vs shadow
  shadowgrpc.telemetry.spans.dropped{reason=queue_full|export_failed}  shadowgrpc.telemetry.spans.queued
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .. import ledger
from .._capacity_report import metric_rows as capacity_rows
from ..budget_watch import metric_rows
from ..sketches import LAT_BOUNDS

log = logging.getLogger("shadowgrpc.telemetry")

LATENCY_BOUNDS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

Rows = Iterable[tuple[float, dict[str, Any]]]


class RouterMetrics:
    def __init__(self, meter: Meter, router: Any, telemetry: Any) -> None:
        self.router = router
        self.telemetry = telemetry
        counters = {
            "shadowgrpc.requests": ("routed ModelInfer requests", self._route_stat("requests")),
            "shadowgrpc.live.ok": ("live calls answered OK", self._route_stat("live_ok")),
            "shadowgrpc.shm_not_mirrored": ("requests in shared memory, not mirrored", self._route_stat("shm_not_mirrored")),
            "shadowgrpc.unrouted": ("ModelInfer requests without a route (proxied)", lambda: [(router.state.unrouted + router.state.unparsed, {})]),
            "shadowgrpc.errors": ("failed calls by target and gRPC status", self._errors),
            "shadowgrpc.shadowed": ("shadow calls sent", self._shadow_stat("sent")),
            "shadowgrpc.shed": ("shadow calls shed (in-flight or byte budget)", self._shadow_stat("shed")),
            "shadowgrpc.shadow.sampled": ("requests sampled for a shadow", self._shadow_stat("sampled")),
            "shadowgrpc.shadow.down": ("shadow calls not sent: target down", self._shadow_stat("down")),
            "shadowgrpc.shadow.not_ready": ("sampled, not sent: target not ready or refused by the contract check", self._shadow_stat("not_ready")),
            "shadowgrpc.shadow.ok": ("shadow calls answered OK", self._shadow_stat("ok")),
            "shadowgrpc.shadow.compared": ("live/shadow pairs compared", self._shadow_stat("compared")),
            "shadowgrpc.shadow.contract_mismatch": ("pairs whose outputs differ in name, type or shape", self._shadow_stat("contract_mismatch")),
            "shadowgrpc.mirror.decisions": ("the coverage ledger: live requests per target by what became of them (sent or why not)", self._ledger),
            "shadowgrpc.shadow.copies": ("capacity shadow: uncompared copies and fills by outcome", lambda: capacity_rows(self._shadows(), "copies")),
            "shadowgrpc.shadow.paced": ("constant_qps: mirrored requests by fate (queued, released, dropped, filled)", lambda: capacity_rows(self._shadows(), "paced")),
            "shadowgrpc.telemetry.spans.dropped": ("spans dropped: export queue full or export failed", self._dropped),
            "shadowgrpc.log.rows": ("paired-log rows by fate: written, shed (queue full), dropped (after a write error)", self._log_rows),
            "shadowgrpc.log.write_errors": ("paired-log write errors (each stops the log)", self._log_stat("write_errors")),
            "shadowgrpc.log.files_deleted": ("paired-log files deleted to stay under max_disk_mb", self._log_stat("files_deleted")),
        }
        for role, sketches in (("live", self._live_sketches), ("shadow", self._shadow_sketches)):
            what = f"successful {role} Triton calls"
            counters[f"shadowgrpc.{role}.duration.bucket"] = (f"{what} no slower than le seconds", _buckets(sketches))
            counters[f"shadowgrpc.{role}.duration.count"] = (what, lambda sk=sketches: [(h.count, a) for h, a in sk()])
            counters[f"shadowgrpc.{role}.duration.sum"] = (f"{what}: seconds in all", lambda sk=sketches: [(h.sum_ns / 1e9, a) for h, a in sk()])
        for name, (desc, rows) in counters.items():
            meter.create_observable_counter(name, callbacks=[_callback(name, rows)], description=desc)
        gauges = {
            "shadowgrpc.shadow.in_flight": ("shadow calls in flight", self._in_flight),
            "shadowgrpc.shadow.budget.used": ("shadow budget used this period, by kind (requests, bytes, compute_s)", lambda: metric_rows(self._shadows(), "used")),
            "shadowgrpc.shadow.budget.limit": ("shadow budget per period, by kind (this process's share)", lambda: metric_rows(self._shadows(), "limit")),
            "shadowgrpc.shadow.budget.paused": ("1 while the target's budget has paused mirroring to it", lambda: metric_rows(self._shadows(), "paused")),
            "shadowgrpc.shadow.agreement": ("live/shadow agreement per output, 0..1", self._agreement),
            "shadowgrpc.shadow.divergence": ("live vs shadow output drift (Jensen-Shannon bits, PSI)", self._divergence),
            "shadowgrpc.telemetry.spans.queued": ("spans waiting in the export queue", self._queued),
            "shadowgrpc.log.bytes_on_disk": ("bytes of the paired log's finished files", self._log_stat("bytes_on_disk")),
            "shadowgrpc.log.queued": ("paired-log rows waiting for the writer", self._log_stat("rows_queued")),
        }
        for name, (desc, rows) in gauges.items():
            meter.create_observable_gauge(name, callbacks=[_callback(name, rows)], description=desc)

    # observed when collected
    def _live_sketches(self) -> list[tuple[Any, dict[str, str]]]:
        return [(rs.stats.live_latency, {"route": route}) for route, rs in self._routes()]

    def _shadow_sketches(self) -> list[tuple[Any, dict[str, str]]]:
        return [(ss.stats.latency, {"route": route, "target": ss.target.name}) for route, ss in self._shadows()]

    def _routes(self) -> list[tuple[str, Any]]:
        return list(self.router.routes.items())

    def _shadows(self) -> Iterable[tuple[str, Any]]:
        for route, rs in self._routes():
            for ss in list(rs.shadows):
                yield route, ss

    def _route_stat(self, field: str) -> Callable[[], Rows]:
        return lambda: [(getattr(rs.stats, field), {"route": route}) for route, rs in self._routes()]

    def _shadow_stat(self, field: str) -> Callable[[], Rows]:
        return lambda: [(getattr(ss.stats, field), {"route": route, "target": ss.target.name}) for route, ss in self._shadows()]

    def _errors(self) -> Rows:
        for route, rs in self._routes():
            for status, n in dict(rs.stats.live_errors).items():
                yield n, {"route": route, "target": "live", "status": status}
        for route, ss in self._shadows():
            for status, n in dict(ss.stats.errors).items():
                yield n, {"route": route, "target": ss.target.name, "status": status}

    def _ledger(self) -> Rows:
        for route, rs in self._routes():
            for target, reason, n in ledger.rows(rs):
                yield n, {"route": route, "target": target, "reason": reason}

    def _in_flight(self) -> Rows:
        return [(ss.in_flight, {"route": route, "target": ss.target.name}) for route, ss in self._shadows()]

    def _agreement(self) -> Rows:
        for route, ss in self._shadows():
            for name, o in list(ss.stats.outputs.items()):
                rows = o.rows
                if rows:
                    yield o.agreed_rows / rows, {"route": route, "target": ss.target.name, "output": name}

    def _divergence(self) -> Rows:
        from ..report import drift_pb

        for route, ss in self._shadows():
            for name, o in list(ss.stats.outputs.items()):
                if o.hist_live is None:
                    continue
                d = drift_pb(o)
                for measure in ("js", "psi"):
                    yield getattr(d, measure), {"route": route, "target": ss.target.name, "output": name, "measure": measure}

    def _log_rows(self) -> Rows:
        pl = self.router.log
        if pl is None:
            return []
        st = pl.stats
        return [(st.rows_written, {"fate": "written"}), (st.rows_shed, {"fate": "shed"}), (st.rows_dropped, {"fate": "dropped"})]

    def _log_stat(self, field: str) -> Callable[[], Rows]:
        return lambda: [] if self.router.log is None else [(getattr(self.router.log.stats, field), {})]

    def _dropped(self) -> Rows:
        return [(n, {"reason": reason}) for reason, n in self.telemetry.spans_dropped().items()]

    def _queued(self) -> Rows:
        p = self.telemetry.processor
        return [(p.queue_length(), {})] if p is not None else []


_UPPER = np.asarray(LAT_BOUNDS[1:], dtype=np.float64)  # bucket i holds values below _UPPER[i]
_LE_INDEX = np.searchsorted(_UPPER, LATENCY_BOUNDS_S, side="right")  # buckets wholly at or below each bound


def _buckets(sketches: Callable[[], list[tuple[Any, dict[str, str]]]]) -> Callable[[], Rows]:
    """Cumulative counts at LATENCY_BOUNDS_S (to the sketch's 1% resolution) and at +Inf."""

    def rows() -> Rows:
        for h, attrs in sketches():
            cum = np.cumsum(h.counts)
            for le, i in zip(LATENCY_BOUNDS_S, _LE_INDEX, strict=True):
                yield int(cum[i - 1]) if i else 0, {**attrs, "le": f"{le:g}"}
            yield int(cum[-1]), {**attrs, "le": "+Inf"}

    return rows


def _callback(name: str, rows: Callable[[], Rows]):
    def callback(options: CallbackOptions) -> list[Observation]:
        try:
            return [Observation(v, a) for v, a in rows()]
        except Exception:  # noqa: BLE001 - stats changed under us, or a bug: never fail the reader
            log.debug("metric %s: callback failed", name, exc_info=True)
            return []

    return callback
