"""``shadowgrpc demo``: the embedded Triton with the example repository, the front with the shipped
example config (fraud v1 live, v2 shadow and a v1 A/A noise floor; merchant_intent v1 live, v2
shadow at 50%), a few thousand tritonclient requests through the front, the fraud outcomes sent
afterwards, the report, and a consistency check of the report's counts against what was sent.
Everything is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np


def example_config() -> dict:
    return tomllib.loads(resources.files("shadowgrpc.examples").joinpath("shadow.toml").read_text())


async def _drive(port: int, n_fraud: int, n_intent: int, concurrency: int, batch: int, progress: bool) -> dict:
    import tritonclient.grpc.aio as grpcclient
    from tqdm import tqdm

    from .examples.data import make_transactions

    feats, labels = make_transactions(n_fraud * batch, seed=7)
    texts = [b"FRESHMART GROCERY 0042", b"SKYJET AIRLINES TICKET", b"LUCKY SPIN CASINO", b"CITY BUS PASS", b"HOTEL AURORA"]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    sem = asyncio.Semaphore(concurrency)
    sent = {"fraud": 0, "merchant_intent": 0, "errors": 0, "fraud_attempts": n_fraud, "merchant_intent_attempts": n_intent}
    bar = tqdm(total=n_fraud + n_intent, desc="requests through the front", unit="req", disable=not progress, file=sys.stderr)

    async def send(model: str, x, request_id: str) -> None:
        async with sem:
            try:
                await client.infer(model, [x], request_id=request_id)
                sent[model] += 1
            except Exception:
                sent["errors"] += 1
            bar.update()

    def fraud(i: int):
        x = grpcclient.InferInput("features", [batch, 8], "FP32")
        x.set_data_from_numpy(feats[i * batch : (i + 1) * batch])
        return send("fraud", x, f"demo-fraud-{i}")

    def intent(i: int):
        x = grpcclient.InferInput("text", [1, 1], "BYTES")
        x.set_data_from_numpy(np.array([[texts[i % len(texts)]]], dtype=np.object_))
        return send("merchant_intent", x, f"demo-intent-{i}")

    t0 = time.perf_counter()
    # All fraud requests, then the merchant_intent ones, at most `concurrency` in flight.
    await asyncio.gather(*[fraud(i) for i in range(n_fraud)], *[intent(i) for i in range(n_intent)])
    bar.close()
    await client.close()
    sent["seconds"] = time.perf_counter() - t0
    sent["labels"] = labels
    sent["batch"] = batch
    return sent


async def _send_outcomes(admin_port: int, n_fraud: int, batch: int, labels) -> object:
    """The ground truth arrives later: one outcome (a label per row) per fraud request."""
    import grpc

    from .v1 import shadow_pb2, shadow_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{admin_port}") as ch:
        stub = shadow_pb2_grpc.ShadowControlStub(ch)
        return await stub.RecordOutcomes(
            iter(
                shadow_pb2.Outcome(request_id=f"demo-fraud-{i}", labels=[int(x) for x in labels[i * batch : (i + 1) * batch]])
                for i in range(n_fraud)
            ),
            timeout=60,
        )


async def _demo(args: argparse.Namespace, triton_address: str, prefs: Path) -> int:
    from .config import Settings
    from .report import format_report
    from .server import Front
    from .telemetry import TelemetryOptions

    cfg = example_config()
    cfg["server"].update(default_live=triton_address, listen="127.0.0.1:0", admin_listen="127.0.0.1:0")
    front = Front(Settings.from_dict(cfg), TelemetryOptions.from_env(trace_if_otlp_endpoint=True))  # traces when OTEL_* names an endpoint
    await front.start()
    try:
        print(f"front: KServe v2 on 127.0.0.1:{front.port}, ShadowControl on 127.0.0.1:{front.admin_port}")
        sent = await _drive(front.port, args.requests, args.intent_requests, args.concurrency, args.batch, not args.no_progress)
        print(
            f"sent {sent['fraud']} fraud + {sent['merchant_intent']} merchant_intent requests "
            f"({sent['errors']} errors) in {sent['seconds']:.1f} s"
        )
        await front.router.drain(timeout=5.0)  # every shadow answer is in before the report
        got = await _send_outcomes(front.admin_port, args.requests, args.batch, sent["labels"])
        print(f"ground truth: {got.received} fraud outcomes sent, {got.accepted} joined, {got.unknown} without a waiting pair")
        from .cli import fetch_report

        rep = await asyncio.to_thread(fetch_report, f"127.0.0.1:{front.admin_port}")
        print()
        print(format_report(rep))
        print()
        return _check(rep, sent, prefs, got)
    finally:
        await front.stop(grace=1.0)


def _check(rep, sent: dict, prefs: Path, outcomes) -> int:
    """The report's counts must match what the demo sent; say so, or say what differs."""
    problems = []
    fraud_shadows = [s for r in rep.routes if r.model == "fraud" for s in r.shadows]
    # Every compared pair carried an id, so every one of them must have been joined with its outcome.
    if outcomes.accepted != sent["fraud"] or any(s.ground_truth.rows != s.compared * sent["batch"] for s in fraud_shadows):
        problems.append(
            f"ground truth: {outcomes.accepted} outcomes joined for {sent['fraud']} fraud requests; rows per shadow "
            + ", ".join(f"{s.target.name} {s.ground_truth.rows} for {s.compared} pairs" for s in fraud_shadows)
        )
    routes = {r.model: r for r in rep.routes}
    for model in ("fraud", "merchant_intent"):
        r = routes[model]
        if r.requests != sent[f"{model}_attempts"] or r.live_ok != sent[model]:
            problems.append(
                f"{model}: sent {sent[f'{model}_attempts']} ({sent[model]} answered), report says requests={r.requests} live_ok={r.live_ok}"
            )
        for s in r.shadows:
            errs = sum(s.errors.values())
            if s.sent != s.ok + errs or s.sampled != s.sent + s.shed + s.down:
                problems.append(
                    f"{model}/{s.target.name}: sampled {s.sampled} != sent {s.sent} + shed {s.shed} + down {s.down}, "
                    f"or sent != ok {s.ok} + errors {errs}"
                )
    lines = prefs.read_text().splitlines() if prefs.exists() else []
    if len(lines) != sent["merchant_intent"]:
        problems.append(f"preference cache has {len(lines)} lines for {sent['merchant_intent']} live merchant_intent requests")
    if problems:
        print("consistency check FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(
        f"consistency check: OK (report counts match the {sent['fraud'] + sent['merchant_intent']} requests sent and "
        f"the {outcomes.accepted} outcomes joined; "
        f"preference cache holds {len(lines)} lines = live merchant_intent requests only; shadow writes skipped)"
    )
    return 0


def triton_trace_args(url: str) -> list[str]:
    """tritonserver flags for OpenTelemetry trace mode: export to ``url`` (OTLP/HTTP JSON, the only
    format Triton 2.51 sends), trace only requests that carry a ``traceparent`` (rate=0), so its
    spans join the front's traces."""
    return [
        "--trace-config", "mode=opentelemetry",
        "--trace-config", f"opentelemetry,url={url}",
        "--trace-config", "opentelemetry,bsp_schedule_delay=200",
        "--trace-config", "rate=0",
        "--trace-config", "level=TIMESTAMPS",
    ]  # fmt: skip


def _cmd_demo(args: argparse.Namespace) -> int:
    from .triton import EmbeddedTriton, example_repository

    with tempfile.TemporaryDirectory(prefix="shadowgrpc-demo-") as tmp:
        prefs = Path(tmp) / "preference_cache.jsonl"
        log_path = Path(args.triton_log) if args.triton_log else Path(tmp) / "tritonserver.log"
        print(f"starting the embedded Triton (example repository; log: {log_path}) ...", flush=True)
        extra = triton_trace_args(args.triton_trace_url) if args.triton_trace_url else ()
        with EmbeddedTriton(example_repository(), log_path=log_path, env={"SHADOWGRPC_PREFERENCE_CACHE": str(prefs)}, extra_args=extra) as triton:
            print(f"Triton ready on {triton.grpc_address}", flush=True)
            return asyncio.run(_demo(args, triton.grpc_address, prefs))


def add_demo_parser(sub) -> None:
    d = sub.add_parser(
        "demo",
        help="run the end-to-end demo on the embedded Triton",
        description="Start the embedded Triton (example model repository), the front with the shipped example "
        "config (fraud v1 live / v2 shadow, merchant_intent v1 live / v2 shadow), send requests with tritonclient "
        "through the front, print the report and check its counts against what was sent.",
    )
    d.add_argument("--requests", type=int, default=3000, help="fraud requests to send (default 3000)")
    d.add_argument("--intent-requests", type=int, default=300, help="merchant_intent requests (default 300)")
    d.add_argument("--batch", type=int, default=4, help="transactions per fraud request (default 4)")
    d.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    d.add_argument("--triton-log", metavar="FILE", help="keep Triton's log here (default: a temp file)")
    d.add_argument(
        "--triton-trace-url",
        metavar="URL",
        help="run Triton in OpenTelemetry trace mode, exporting its spans (OTLP/HTTP JSON) to URL, e.g. "
        "http://127.0.0.1:4318/v1/traces of an OpenTelemetry Collector; they join the front's traces "
        "(the front's own spans go where the OTEL_* variables say)",
    )
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_demo)
