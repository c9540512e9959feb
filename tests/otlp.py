"""A real OTLP receiver on loopback, for tests and benchmarks.

``OtlpReceiver`` serves, on free 127.0.0.1 ports:

* gRPC: ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` and
  ``...metrics.v1.MetricsService/Export`` (what the SDK's OTLP gRPC exporters call);
* HTTP: ``POST /v1/traces`` and ``POST /v1/metrics`` with OTLP protobuf
  (``application/x-protobuf``, the SDK's OTLP/HTTP exporters) or OTLP JSON
  (``application/json``: Triton 2.51's only format, ids as hex strings), gzip or not.

Every span received is kept as a :class:`Span` (ids in hex, attributes as plain Python values,
the resource's ``service.name``), or only counted (``keep_spans=False``, for benchmarks); metric
requests are kept as protobuf messages.
``delay_s`` makes every export answer late (a slow collector).

``HangingPort`` accepts TCP connections and never answers (a hung collector); ``closed_port()`` is
a port that refuses connections (a collector that is down).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as mgrpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tgrpc

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_JSON_KINDS = {f"SPAN_KIND_{v}": k for k, v in KINDS.items()}


@dataclasses.dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    service: str
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int
    status: int  # 0 unset, 1 ok, 2 error
    via: str  # "grpc", "http-protobuf" or "http-json"


def _pb_value(v) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_pb_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


def _json_value(v: dict) -> Any:
    for key, val in v.items():
        if key == "intValue":
            return int(val)
        if key == "arrayValue":
            return [_json_value(x) for x in val.get("values", [])]
        return val
    return None


def spans_from_pb(req: tpb.ExportTraceServiceRequest, via: str) -> list[Span]:
    out = []
    for rs in req.resource_spans:
        res = {a.key: _pb_value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(Span(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, KINDS.get(s.kind, "?"),
                                str(res.get("service.name", "")), {a.key: _pb_value(a.value) for a in s.attributes},
                                s.start_time_unix_nano, s.end_time_unix_nano, s.status.code, via))
    return out


def spans_from_json(doc: dict) -> list[Span]:
    """OTLP JSON (hex ids, camelCase keys), as opentelemetry-cpp's exporter in Triton writes it."""
    out = []
    for rs in doc.get("resourceSpans", doc.get("resource_spans", [])):
        res = {a["key"]: _json_value(a.get("value", {})) for a in rs.get("resource", {}).get("attributes", [])}
        for ss in rs.get("scopeSpans", rs.get("scope_spans", [])):
            for s in ss.get("spans", []):
                kind = s.get("kind", 0)
                kind = KINDS.get(_JSON_KINDS.get(kind, kind) if isinstance(kind, str) else kind, "?")
                out.append(Span(s.get("traceId", "").lower(), s.get("spanId", "").lower(), s.get("parentSpanId", "").lower(),
                                s.get("name", ""), kind, str(res.get("service.name", "")),
                                {a["key"]: _json_value(a.get("value", {})) for a in s.get("attributes", [])},
                                int(s.get("startTimeUnixNano", 0)), int(s.get("endTimeUnixNano", 0)),
                                int((s.get("status") or {}).get("code", 0) or 0), "http-json"))
    return out


class OtlpReceiver:
    """gRPC + HTTP OTLP receiver on loopback (context manager). ``spans`` and ``metric_requests``
    grow as exports arrive; ``exports`` counts export calls by transport."""

    def __init__(self, delay_s: float = 0.0, keep_spans: bool = True) -> None:
        self.delay_s = delay_s
        self.keep_spans = keep_spans
        self.span_count = 0  # every span received, kept or not
        self.spans: list[Span] = []
        self.metric_requests: list[mpb.ExportMetricsServiceRequest] = []
        self.exports: dict[str, int] = {"grpc": 0, "http": 0}
        self.http_errors: list[str] = []
        self._lock = threading.Lock()
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        receiver = self

        class Traces(tgrpc.TraceServiceServicer):
            def Export(self, request, context):
                receiver._delay()
                if receiver.keep_spans:
                    receiver._add_spans(spans_from_pb(request, "grpc"), "grpc")
                else:
                    receiver._count(sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans), "grpc")
                return tpb.ExportTraceServiceResponse()

        class Metrics(mgrpc.MetricsServiceServicer):
            def Export(self, request, context):
                receiver._delay()
                receiver._add_metrics(request, "grpc")
                return mpb.ExportMetricsServiceResponse()

        tgrpc.add_TraceServiceServicer_to_server(Traces(), self._grpc)
        mgrpc.add_MetricsServiceServicer_to_server(Metrics(), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True)
        self.grpc_endpoint = f"http://127.0.0.1:{self.grpc_port}"  # OTEL_EXPORTER_OTLP_ENDPOINT for grpc
        self.http_endpoint = f"http://127.0.0.1:{self.http_port}"  # ... for http/protobuf; + /v1/traces for Triton

    def start(self) -> OtlpReceiver:
        self._grpc.start()
        self._http_thread.start()
        return self

    def stop(self) -> None:
        self._grpc.stop(0)
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _delay(self) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)

    def _add_spans(self, spans: list[Span], via: str) -> None:
        with self._lock:
            self.spans.extend(spans)
            self.span_count += len(spans)
            self.exports[via] += 1

    def _count(self, n: int, via: str) -> None:
        with self._lock:
            self.span_count += n
            self.exports[via] += 1

    def _add_metrics(self, req: mpb.ExportMetricsServiceRequest, via: str) -> None:
        with self._lock:
            self.metric_requests.append(req)
            self.exports[via] += 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1: answers curl's "Expect: 100-continue" (Triton's exporter) at once and keeps
            # the connection; under HTTP/1.0 curl waits a second before each body.
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding", "") == "gzip":
                    body = gzip.decompress(body)
                ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
                try:
                    receiver._delay()
                    self._take(body, ctype)
                except Exception as e:  # noqa: BLE001 - answered as 400 and kept for the test to see
                    receiver.http_errors.append(f"{self.path} {ctype}: {type(e).__name__}: {e}")
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype or "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _take(self, body: bytes, ctype: str) -> None:
                if self.path == "/v1/traces":
                    if ctype == "application/json":
                        receiver._add_spans(spans_from_json(json.loads(body or b"{}")), "http")
                    else:
                        receiver._add_spans(spans_from_pb(tpb.ExportTraceServiceRequest.FromString(body), "http-protobuf"), "http")
                elif self.path == "/v1/metrics" and ctype != "application/json":
                    receiver._add_metrics(mpb.ExportMetricsServiceRequest.FromString(body), "http")
                else:
                    raise ValueError("unsupported path or content type")

        return Handler

    # -- reading -----------------------------------------------------------------------------
    def snapshot(self) -> list[Span]:
        with self._lock:
            return list(self.spans)

    def wait_for(self, predicate: Callable[[list[Span]], Any], timeout: float = 10.0) -> Any:
        """Poll until ``predicate(spans)`` is truthy; return its value (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            got = predicate(self.snapshot())
            if got:
                return got
            if time.monotonic() > deadline:
                seen = ", ".join(f"{s.service}/{s.name}[{s.span_id[:4]}<-{s.parent_span_id[:4]}]" for s in self.snapshot()[:40])
                errors = "; ".join(self.http_errors[-5:]) or "none"
                raise AssertionError(f"OTLP receiver: condition not met within {timeout:g} s; {len(self.spans)} spans received: {seen}; HTTP errors: {errors}")
            time.sleep(0.05)

    def metric_names(self) -> set[str]:
        with self._lock:
            reqs = list(self.metric_requests)
        return {m.name for r in reqs for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


class HangingPort:
    """A loopback port that accepts TCP connections and never answers (a hung collector)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="otlp-hang", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)  # held open, never read nor written

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for c in self.accepted:
            c.close()
        self._sock.close()


def closed_port() -> tuple[socket.socket, int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), never listening."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]
