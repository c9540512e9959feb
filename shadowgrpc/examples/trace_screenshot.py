"""Take a screenshot of a real demo trace in a real viewer (``make trace-screenshot``).

Runs, all on 127.0.0.1 and all stopped at the end:
1. Phoenix (``phoenix serve``, from its own venv: ``--phoenix PATH``), which takes OTLP/HTTP
   protobuf at ``/v1/traces`` and refuses JSON (415);
2. a relay that takes Triton 2.51's OTLP/HTTP **JSON** (its only format), re-encodes it as
   protobuf and forwards it to Phoenix: in production an OpenTelemetry Collector does this (its
   OTLP receiver accepts JSON) and exports to any backend;
3. ``shadowgrpc demo`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` = Phoenix (the front's spans) and
   ``--triton-trace-url`` = the relay (Triton's spans, under the front's);
then finds a trace in which the front, the live call, the shadow call and Triton's spans for both
are present (Phoenix's REST API), and has headless Chromium (Debian's ``chromium``) render its
page to a PNG.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def otlp_json_to_protobuf(body: bytes) -> bytes:
    """OTLP/JSON (ids in hex, as the OTLP spec's JSON mapping says) -> OTLP protobuf bytes."""
    doc = json.loads(body)

    def fix(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in _ID_KEYS and isinstance(v, str):
                    node[k] = base64.b64encode(bytes.fromhex(v)).decode()
                else:
                    fix(v)
        elif isinstance(node, list):
            for v in node:
                fix(v)

    fix(doc)
    return json_format.ParseDict(doc, tpb.ExportTraceServiceRequest(), ignore_unknown_fields=True).SerializeToString()


def start_relay(target: str) -> tuple[ThreadingHTTPServer, int, dict]:
    counts = {"json_requests": 0, "forwarded": 0, "failed": 0}

    class Relay(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            counts["json_requests"] += 1
            try:
                data = body if "json" not in self.headers.get("Content-Type", "") else otlp_json_to_protobuf(body)
                req = urllib.request.Request(target, data=data, headers={"Content-Type": "application/x-protobuf"})
                urllib.request.urlopen(req, timeout=10).read()
                counts["forwarded"] += 1
                self.send_response(200)
            except Exception as e:  # report, never crash the relay
                counts["failed"] += 1
                print(f"relay: {e!r}", file=sys.stderr)
                self.send_response(502)
            self.end_headers()

    port = _free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Relay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port, counts


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up in {timeout:g} s") from None
            time.sleep(0.5)


def all_spans(base: str) -> list[dict]:
    """Every span of Phoenix's default project (its REST API pages by cursor, 1000 at most)."""
    out: list[dict] = []
    cursor = ""
    while True:
        page = _get(f"{base}/v1/projects/default/spans?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
        out += page.get("data", [])
        cursor = page.get("next_cursor") or ""
        if not cursor:
            return out


def pick_trace(spans: list[dict]) -> tuple[str, str] | None:
    """(trace id, node id of its first shadow span) of a trace with the front's server span, a
    live and a shadow client span, and Triton spans under each of them."""
    by_trace: dict[str, list[dict]] = {}
    for s in spans:
        by_trace.setdefault(s["context"]["trace_id"], []).append(s)
    best, best_key = None, (-1, -1)
    for tid, ss in by_trace.items():
        attrs = [s.get("attributes", {}) for s in ss]
        roles = {a.get("shadowgrpc.role") for a in attrs}
        triton = sum(1 for s in ss if s["name"].startswith("InferRequest") or s["name"] == "compute")
        shadows = [s for s, a in zip(ss, attrs) if a.get("shadowgrpc.role") == "shadow" and not a.get("shadowgrpc.noise_floor")]
        if not ({"live", "shadow"} <= roles and triton >= 2 and shadows):
            continue
        # Prefer a request on which the shadow disagreed with live, then the most spans.
        disagreed = min(s.get("attributes", {}).get("shadowgrpc.agreement", 1.0) for s in shadows) < 1.0
        if (disagreed, len(ss)) > best_key:
            best, best_key = (tid, shadows[0].get("id", "")), (disagreed, len(ss))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phoenix", required=True, help="the phoenix executable (its own venv)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium", help="headless Chromium")
    ap.add_argument("--out", default="shadowgrpc/examples/demo-trace.png", help="PNG to write")
    ap.add_argument("--requests", type=int, default=200, help="demo fraud requests (default 200)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="shadowgrpc-viewer-") as tmp:
        port, grpc_port = _free_port(), _free_port()
        env = dict(os.environ, PHOENIX_HOST="127.0.0.1", PHOENIX_PORT=str(port), PHOENIX_GRPC_PORT=str(grpc_port), PHOENIX_WORKING_DIR=tmp)
        phoenix = subprocess.Popen([args.phoenix, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "phoenix.log", "w"))
        relay = None
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base, 120)
            relay, relay_port, counts = start_relay(f"{base}/v1/traces")
            demo_env = dict(
                os.environ,
                OTEL_SERVICE_NAME="shadowgrpc-demo",
                OTEL_EXPORTER_OTLP_ENDPOINT=base,
                OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                OTEL_METRICS_EXPORTER="none",
            )
            cmd = [sys.executable, "-m", "shadowgrpc", "demo", "--requests", str(args.requests), "--intent-requests", "20", "--no-progress"]
            cmd += ["--triton-trace-url", f"http://127.0.0.1:{relay_port}/v1/traces"]
            subprocess.run(cmd, env=demo_env, check=True, stdout=subprocess.DEVNULL)
            spans: list[dict] = []
            picked = None
            for _ in range(30):
                spans = all_spans(base)
                picked = pick_trace(spans)
                if picked:
                    break
                time.sleep(1)
            print(f"phoenix holds {len(spans)} spans; relay forwarded {counts['forwarded']} Triton JSON exports ({counts['failed']} failed)")
            if picked is None:
                print("no trace with live, shadow and Triton spans found", file=sys.stderr)
                return 1
            tid, node = picked
            url = trace_url(base, tid, node)
            print(f"trace {tid}: {url}")
            out = Path(args.out).resolve()
            subprocess.run(
                [args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1600,1000",
                 "--virtual-time-budget=20000", f"--screenshot={out}", url],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            print(f"wrote {out}")
            return 0
        finally:
            if relay is not None:
                relay.shutdown()
            phoenix.terminate()
            try:
                phoenix.wait(10)
            except subprocess.TimeoutExpired:
                phoenix.kill()


def trace_url(base: str, trace_id: str, span_node: str = "") -> str:
    """Phoenix's trace page (routes /projects/:projectId/traces/:traceId, selectedSpanNodeId)."""
    project = base64.b64encode(b"Project:1").decode()  # the default project's global id
    query = f"?selectedSpanNodeId={urllib.parse.quote(span_node)}" if span_node else ""
    return f"{base}/projects/{project}/traces/{trace_id}{query}"


if __name__ == "__main__":
    sys.exit(main())
