"""``shadowgrpc demo``: the embedded Triton with the example repository, the front with the shipped
example config (fraud v1 live, v2 shadow and a v1 A/A noise floor; merchant_intent v1 live, v2
shadow at 50%), a few thousand tritonclient requests through the front, the fraud outcomes sent
afterwards, the report, and a consistency check of the report's counts against what was sent.
Everything is stopped at the end, also on Ctrl-C.

The front answers callers as fast as live does and sheds shadow calls past a target's
``max_in_flight`` (DESIGN.md: live never waits for shadow). On a busy 2-core machine the shadow
falls behind live for moments, so a client sending flat out loses some shadow calls, and then some
fraud outcomes find no pair to join. The demo client is therefore paced by default: the front runs
in the demo's own event loop, and a request is sent only while every shadow target of its route has
room for all requests the client may have in flight (``in_flight + concurrency <= max_in_flight``),
so none is shed. ``--no-pace`` sends flat out. Either way the check accounts for every shadow call
that was not compared (shed, down, failed, live failed, contract mismatch): the outcomes joined must
lie in the range those losses allow, exactly one per fraud request when nothing was lost.
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

# A paced request waits at most this long for shadow room, then goes anyway (a shed is counted).
PACE_MAX_WAIT_S = 10.0


def example_config() -> dict:
    return tomllib.loads(resources.files("shadowgrpc.examples").joinpath("shadow.toml").read_text())


def shadow_room(router, concurrency: int):
    """``room(model)``: True while every shadow target of the model's route can take ``concurrency``
    more requests without reaching its ``max_in_flight`` (False never lasts: in-flight shadow calls
    end within their deadline). Only for a client sharing the front's event loop."""

    def room(model: str) -> bool:
        rs = router.routes.get(model)
        return rs is None or all(ss.in_flight <= max(0, ss.target.max_in_flight - concurrency) for ss in rs.shadows)

    return room


async def _drive(port: int, n_fraud: int, n_intent: int, concurrency: int, batch: int, progress: bool, room=None) -> dict:
    """Send the requests, at most ``concurrency`` in flight; with ``room`` (see ``shadow_room``) each
    one waits (up to PACE_MAX_WAIT_S) until its shadows have room."""
    import tritonclient.grpc.aio as grpcclient
    from tqdm import tqdm

    from ..examples.data import make_transactions

    feats, labels = make_transactions(n_fraud * batch, seed=7)
    texts = [b"FRESHMART GROCERY 0042", b"SKYJET AIRLINES TICKET", b"LUCKY SPIN CASINO", b"CITY BUS PASS", b"HOTEL AURORA"]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    sem = asyncio.Semaphore(concurrency)
    sent = {"fraud": 0, "merchant_intent": 0, "errors": 0, "fraud_attempts": n_fraud, "merchant_intent_attempts": n_intent}
    sent["ids"] = {"fraud": [f"demo-fraud-{i}" for i in range(n_fraud)], "merchant_intent": [f"demo-intent-{i}" for i in range(n_intent)]}
    pace = {"waits": 0, "seconds": 0.0, "gave_up": 0}
    bar = tqdm(total=n_fraud + n_intent, desc="requests through the front", unit="req", disable=not progress, file=sys.stderr)

    async def send(model: str, x, request_id: str) -> None:
        async with sem:
            if room is not None and not room(model):
                t = time.perf_counter()
                while not room(model):
                    if time.perf_counter() - t > PACE_MAX_WAIT_S:
                        pace["gave_up"] += 1
                        break
                    await asyncio.sleep(0.002)
                pace["waits"] += 1
                pace["seconds"] += time.perf_counter() - t
            try:
                await client.infer(model, [x], request_id=request_id)
                sent[model] += 1
            except Exception:
                sent["errors"] += 1
            bar.update()

    def fraud(i: int):
        x = grpcclient.InferInput("features", [batch, 8], "FP32")
        x.set_data_from_numpy(feats[i * batch : (i + 1) * batch])
        return send("fraud", x, sent["ids"]["fraud"][i])

    def intent(i: int):
        x = grpcclient.InferInput("text", [1, 1], "BYTES")
        x.set_data_from_numpy(np.array([[texts[i % len(texts)]]], dtype=np.object_))
        return send("merchant_intent", x, sent["ids"]["merchant_intent"][i])

    t0 = time.perf_counter()
    # All fraud requests, then the merchant_intent ones, at most `concurrency` in flight.
    await asyncio.gather(*[fraud(i) for i in range(n_fraud)], *[intent(i) for i in range(n_intent)])
    bar.close()
    await client.close()
    sent["seconds"] = time.perf_counter() - t0
    sent["labels"] = labels
    sent["batch"] = batch
    sent["pace"] = pace
    return sent


async def _send_outcomes(admin_port: int, n_fraud: int, batch: int, labels) -> object:
    """The ground truth arrives later: one outcome (a label per row) per fraud request."""
    import grpc

    from ..v1 import shadow_pb2, shadow_pb2_grpc

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
    from ..config import Settings
    from ..report_text import format_report
    from ..server import Front
    from ..telemetry import TelemetryOptions

    cfg = example_config()
    cfg["server"].update(default_live=triton_address, listen="127.0.0.1:0", admin_listen="127.0.0.1:0")
    settings = Settings.from_dict(cfg)
    rates = {r.model: {s.name: s.sample_rate for s in r.shadows} for r in settings.routes}
    front = Front(settings, TelemetryOptions.from_env(trace_if_otlp_endpoint=True))  # traces when OTEL_* names an endpoint
    await front.start()
    try:
        print(f"front: KServe v2 on 127.0.0.1:{front.port}, ShadowControl on 127.0.0.1:{front.admin_port}")
        room = None if args.no_pace else shadow_room(front.router, args.concurrency)
        sent = await _drive(front.port, args.requests, args.intent_requests, args.concurrency, args.batch, not args.no_progress, room)
        print(
            f"sent {sent['fraud']} fraud + {sent['merchant_intent']} merchant_intent requests "
            f"({sent['errors']} errors) in {sent['seconds']:.1f} s"
        )
        p = sent["pace"]
        if room is None:
            print("pacing: off (--no-pace): shadow calls past max_in_flight are shed and counted")
        else:
            print(
                f"pacing: {p['waits']} requests waited {p['seconds']:.1f} s in all for shadow room (max_in_flight)"
                + (f"; {p['gave_up']} went after {PACE_MAX_WAIT_S:g} s without it" if p["gave_up"] else "")
            )
        cancelled = await front.router.drain(timeout=5.0)  # every shadow answer is in before the outcomes
        if cancelled:
            print(f"{cancelled} shadow calls still in flight after 5 s were cancelled (counted as CANCELLED)")
        got = await _send_outcomes(front.admin_port, args.requests, args.batch, sent["labels"])
        print(f"ground truth: {got.received} fraud outcomes sent, {got.accepted} joined, {got.unknown} without a waiting pair")
        from ..client import fetch_report

        rep = await asyncio.to_thread(fetch_report, f"127.0.0.1:{front.admin_port}")
        print()
        print(format_report(rep))
        print()
        return _check(rep, sent, prefs, got, rates)
    finally:
        await front.stop(grace=1.0)


def _not_compared(s) -> int:
    """Sampled shadow calls of one target that gave no compared pair: shed, down, failed, or
    answered without a pair (live failed, contract mismatch)."""
    return s.sampled - s.compared if s.sampled > s.compared else 0


def _losses(s) -> str:
    parts = [f"shed {s.shed}", f"down {s.down}", f"errors {sum(s.errors.values())}", f"live failed {s.live_failed}", f"mismatch {s.contract_mismatch}"]
    return ", ".join(p for p in parts if not p.endswith(" 0")) or "none"


def _check(rep, sent: dict, prefs: Path, outcomes, rates: dict[str, dict[str, float]]) -> int:
    """The report's counts must match what the demo sent; say so, or say what differs.

    ``rates``: the configured sample rate per route and shadow name. Sampling is deterministic by
    request id (``sample_key``), so the demo knows which of its requests each shadow sampled. The
    ground-truth join: every fraud request got one outcome; a request has a pair to join when at
    least one of its sampled shadows compared it. With ``lost`` sampled shadow calls not compared
    (all targets), ``union - lost <= joined <= min(union, sum of compared)`` (``union``: requests
    sampled by any shadow), and ``joined == union`` when nothing was lost; every compared pair of
    every target must have been joined (its ground-truth rows = compared x batch)."""
    from ..packing import sample_key

    problems = []
    batch = sent["batch"]
    routes = {r.model: r for r in rep.routes}
    sampled_ids: dict[str, dict[str, set[str]]] = {}
    for model in ("fraud", "merchant_intent"):
        r = routes.get(model)
        if r is None:
            problems.append(f"{model}: no route in the report")
            continue
        if r.requests != sent[f"{model}_attempts"] or r.live_ok != sent[model]:
            problems.append(
                f"{model}: sent {sent[f'{model}_attempts']} ({sent[model]} answered), report says requests={r.requests} live_ok={r.live_ok}"
            )
        if sorted(s.target.name for s in r.shadows) != sorted(rates[model]):
            problems.append(f"{model}: shadows {[s.target.name for s in r.shadows]} in the report, {sorted(rates[model])} configured")
        keys = {rid: sample_key(rid) for rid in sent["ids"][model]}
        per = sampled_ids[model] = {}
        for s in r.shadows:
            rate = rates[model].get(s.target.name, s.target.sample_rate)
            expected = per[s.target.name] = {rid for rid, k in keys.items() if k < rate}
            errs = sum(s.errors.values())
            if s.sampled != len(expected):
                problems.append(f"{model}/{s.target.name}: sampled {s.sampled}, but sample_key < {rate:g} picks {len(expected)} of the ids sent")
            if s.sent != s.ok + errs or s.sampled != s.sent + s.shed + s.down:
                problems.append(
                    f"{model}/{s.target.name}: sampled {s.sampled} != sent {s.sent} + shed {s.shed} + down {s.down}, "
                    f"or sent != ok {s.ok} + errors {errs}"
                )
            if s.ok != s.compared + s.live_failed + s.contract_mismatch:
                problems.append(
                    f"{model}/{s.target.name}: ok {s.ok} != compared {s.compared} + live failed {s.live_failed} + contract mismatch {s.contract_mismatch}"
                )
    fraud_shadows = [s for s in routes["fraud"].shadows] if "fraud" in routes else []
    union = len(set().union(*sampled_ids.get("fraud", {}).values()))
    lost = sum(_not_compared(s) for s in fraud_shadows)
    compared = [s.compared for s in fraud_shadows]
    lo = max([union - lost, *compared])
    hi = min(union, sum(compared))
    o = outcomes
    if o.received != sent["fraud_attempts"] or o.accepted + o.unknown != o.received or o.duplicate or o.mismatch:
        problems.append(
            f"ground truth: {o.received} outcomes received for {sent['fraud_attempts']} fraud requests: "
            f"accepted {o.accepted} + unknown {o.unknown} (duplicate {o.duplicate}, mismatch {o.mismatch})"
        )
    if not lo <= o.accepted <= hi:
        problems.append(
            f"ground truth: {o.accepted} outcomes joined; with {union} fraud requests sampled and {lost} shadow calls not compared ("
            + "; ".join(f"{s.target.name}: {_losses(s)}" for s in fraud_shadows)
            + f") {lo}..{hi} can be"
        )
    if any(s.ground_truth.rows != s.compared * batch for s in fraud_shadows):
        problems.append(
            "ground truth: every compared pair must be joined; rows per shadow "
            + ", ".join(f"{s.target.name} {s.ground_truth.rows} for {s.compared} pairs x {batch}" for s in fraud_shadows)
        )
    lines = prefs.read_text().splitlines() if prefs.exists() else []
    if len(lines) != sent["merchant_intent"]:
        problems.append(f"preference cache has {len(lines)} lines for {sent['merchant_intent']} live merchant_intent requests")
    if problems:
        print("consistency check FAILED:\n  " + "\n  ".join(problems))
        return 1
    joined = (
        f"the {o.accepted} outcomes joined = every fraud request sampled by a shadow ({union})"
        if lost == 0
        else f"the {o.accepted} outcomes joined, {lo}..{hi} possible as {lost} fraud shadow calls were not compared ("
        + "; ".join(f"{s.target.name}: {_losses(s)}" for s in fraud_shadows if _not_compared(s))
        + ")"
    )
    print(
        f"consistency check: OK (report counts match the {sent['fraud'] + sent['merchant_intent']} requests sent, "
        f"shadow samples match sample_key, every compared fraud pair was joined, {joined}; "
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
    from . import EmbeddedTriton, example_repository

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
    d.add_argument(
        "--no-pace",
        action="store_true",
        help="send as fast as live answers (by default a request waits until its shadows have room under max_in_flight, "
        "so that none is shed); shed shadow calls are counted and the check allows for them",
    )
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_demo)
