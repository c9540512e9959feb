"""[routes.mirror] rules against the real Triton: what a rule keeps on live never reaches a shadow's
Triton (seen from the recorder model's side), live answers stay byte-identical, and the coverage
ledger accounts for every live request per target, in the report and in a real Prometheus scrape."""

from __future__ import annotations

import json
import time
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shadowgrpc.report import build_report
from shadowgrpc.report_text import format_report
from tests.frontctl import front_for
from tests.kserve import _raw, fraud_request

pytestmark = [pytest.mark.triton, pytest.mark.once]

ROUTE = {
    "model": "fraud",
    "live": {"version": "1"},
    "shadows": [{"name": "recorder", "model": "fraud_recorder"}, {"name": "v2", "version": "2", "sample_rate": 0.5}],
    "slices": [{"name": "amount", "input": "features", "column": 0, "edges": [3.3]}],
    "mirror": {
        "max_request_mb": 0.001,  # 1048 bytes: 64 rows x 8 floats (2 KiB) is too large
        "include": [{"name": "tenants", "header": "x-tenant", "in": ["a", "b"]}],
        "exclude": [
            {"name": "writes", "header": "x-write", "equals": True},
            {"name": "write-mode", "parameter": "mode", "equals": "write"},
            {"name": "named-v1", "version": "1"},
            {"name": "big-amounts", "slice": "amount", "bucket": ">= 3.3"},
        ],
    },
}


def _rows(n: int, amount: float, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(0.0, 1.0, (n, 8)).astype(np.float32)
    x[:, 0] = amount
    return x


def _scrape(port: int) -> list:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def test_rules_keep_requests_on_live_and_the_ledger_accounts_for_every_one(triton, monkeypatch):
    monkeypatch.setenv("SHADOWGRPC_METRICS_PORT", "0")
    monkeypatch.delenv("SHADOWGRPC_TRACE", raising=False)
    tag = f"rules-{time.time_ns()}"
    good = [(f"{tag}-ok-{i}", fraud_request(_rows(2, 1.0, i), rid=f"{tag}-ok-{i}", version=""), (("x-tenant", "a" if i % 2 else "b"),)) for i in range(12)]
    bad = {}

    def add(kind: str, req, md=(("x-tenant", "a"),)):
        rid = f"{tag}-{kind}"
        req.id = rid
        bad[rid] = (kind, req, md)

    add("writes", fraud_request(_rows(2, 1.0, 50), version=""), (("x-tenant", "a"), ("x-write", "true")))
    wm = fraud_request(_rows(2, 1.0, 51), version="")
    wm.parameters["mode"].string_param = "write"
    add("write-mode", wm)
    add("named-v1", fraud_request(_rows(2, 1.0, 52), version="1"))
    add("big-amounts", fraud_request(_rows(2, 5.0, 53), version=""))
    add("tenant-c", fraud_request(_rows(2, 1.0, 54), version=""), (("x-tenant", "c"),))
    add("no-tenant", fraud_request(_rows(2, 1.0, 55), version=""), ())
    add("too-large", fraud_request(_rows(64, 1.0, 56), version=""))
    ro = fraud_request(_rows(2, 1.0, 57), version="")
    ro.parameters["mode"].string_param = "read"  # a parameter that does not match: mirrored
    good.append((f"{tag}-read-mode", ro, (("x-tenant", "a"),)))
    ro.id = f"{tag}-read-mode"

    front = front_for(triton.grpc_address, [ROUTE])
    try:
        chd, direct = _raw(triton.grpc_address)
        chf, via = _raw(front.address)
        with chd, chf:
            for rid, req, md in good + [(rid, req, md) for rid, (_, req, md) in bad.items()]:
                pinned = type(req)()
                pinned.CopyFrom(req)
                pinned.model_version = "1"  # the route pins live version 1: what Triton answers directly
                assert via(req.SerializeToString(), timeout=10, metadata=md) == direct(pinned.SerializeToString(), timeout=10), rid
        front.drain()
        rs = front.router.routes["fraud"]
        report = build_report(front.router.state, "fraud")
        samples = _scrape(front.front.metrics_port)
    finally:
        front.stop()

    # From the shadow Triton's side: every mirrored request arrived, no kept one did.
    seen = {json.loads(line).get("request_id") for line in triton.recorder_path.read_text().splitlines()}
    assert {rid for rid, _, _ in good} <= seen
    assert not set(bad) & seen

    st = rs.stats
    assert st.requests == len(good) + len(bad)
    assert st.too_large == 1
    assert dict(st.excluded) == {"excluded: writes": 1, "excluded: write-mode": 1, "excluded: named-v1": 1, "excluded: big-amounts": 1, "not included": 2}

    rr = report.routes[0]
    ledger = {}
    for row in rr.ledger:
        ledger.setdefault(row.target, {})[row.reason] = row.requests
    for target in ("recorder", "v2"):
        assert sum(ledger[target].values()) == rr.requests  # every live request, once per target
        assert ledger[target]["excluded: writes"] == 1 and ledger[target]["too_large"] == 1 and ledger[target]["not included"] == 2
    assert ledger["recorder"]["sent"] == len(good)
    v2 = ledger["v2"]
    assert v2["sent"] + v2.get("not_sampled", 0) == len(good) and 0 < v2["sent"] < len(good)  # sample_rate 0.5 by id hash
    text = format_report(report)
    assert "coverage ledger" in text and "excluded: big-amounts 1" in text

    def metric(target: str, reason: str) -> float:
        return sum(s.value for s in samples if s.name == "shadowgrpc_mirror_decisions_total" and s.labels == {"route": "fraud", "target": target, "reason": reason})

    for target in ("recorder", "v2"):
        for reason, n in ledger[target].items():
            assert metric(target, reason) == n, (target, reason)


def _stream(address: str, msgs: list[bytes], md: tuple) -> list[bytes]:
    with grpc.insecure_channel(address) as ch:
        call = ch.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer", request_serializer=None, response_deserializer=None)
        return list(call(iter(msgs), timeout=30, metadata=md))


def test_stream_messages_obey_the_same_rules(triton):
    tag = f"rules-stream-{time.time_ns()}"
    front = front_for(triton.grpc_address, [ROUTE])
    try:
        kept = [fraud_request(_rows(2, 1.0, i), rid=f"{tag}-w-{i}", version="").SerializeToString() for i in range(4)]
        sent = [fraud_request(_rows(2, 1.0, 10 + i), rid=f"{tag}-ok-{i}", version="").SerializeToString() for i in range(3)]
        assert len(_stream(front.address, kept, (("x-tenant", "a"), ("x-write", "true")))) == 4  # answered by live
        assert len(_stream(front.address, sent, (("x-tenant", "b"),))) == 3
        front.drain()
        st = front.router.routes["fraud"].stats
        assert dict(st.stream_not_mirrored) == {"excluded: writes": 4}
        assert st.requests == 0 and not st.excluded  # unary counters and the unary ledger untouched
    finally:
        front.stop()
    seen = {json.loads(line).get("request_id") for line in triton.recorder_path.read_text().splitlines()}
    assert {f"{tag}-ok-{i}" for i in range(3)} <= seen
    assert not {f"{tag}-w-{i}" for i in range(4)} & seen
