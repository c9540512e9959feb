"""A logged shadow run shared by the paired-log tests (tests/triton/test_pairlog_offline.py,
test_replay.py) and benchmarks/spark_check.py: the routes, the traffic with its outcomes, and the
comparison of two reports (``diff``) that leaves out what the log does not hold."""

from __future__ import annotations

import math

import grpc
import numpy as np
from google.protobuf import json_format

# Report fields the log does not carry (analysis/rebuild.py says why), by path suffix.
NOT_LOGGED = {
    "uptime_s", "unrouted_requests", "unparsed_requests", "stream_messages", "snapshot",
    "outcomes.waiting", "outcomes.stored", "outcomes.evicted_full", "outcomes.evicted_expired",
    "outcomes.max_pairs", "outcomes.ttl_s", "outcomes.evicted_bytes", "outcomes.bytes",
    "outcomes.max_bytes", "outcomes.reused_ids",
    "inputs", "inputs_not_checked", "inputs_metadata_error", "cost", "in_flight",
    # what the front learns from Triton and its own sampling, not from the pairs (repository.py, coverage.py)
    "status", "status_reason", "window", "contract_problems", "parity", "checklist", "auto", "coverage",
}  # fmt: skip


def diff(a, b, path: str = "") -> list[str]:
    """Differences between two report dicts: ints/strings exactly, floats to 1e-9 relative."""
    if path.split(".")[-1].split("[")[0] in NOT_LOGGED or path in NOT_LOGGED:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items online, {len(b)} offline"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        x, y = float(a or 0.0), float(b or 0.0)
        if math.isnan(x) and math.isnan(y):
            return []
        return [] if x == y or abs(x - y) <= 1e-9 * max(abs(x), abs(y)) else [f"{path}: {a!r} online, {b!r} offline"]
    return [] if a == b else [f"{path}: {a!r} online, {b!r} offline"]


def as_dict(rep) -> dict:
    return json_format.MessageToDict(rep, preserving_proto_field_name=True)


ROUTES = [
    {
        "model": "fraud",
        "live": {"version": "1"},
        "shadows": [{"name": "v2", "version": "2"}, {"name": "nan", "model": "fraud_nan"}],
        "slices": [
            {"name": "amount", "input": "features", "column": 0, "edges": [3.3], "labels": ["under_2000", "2000_plus"]},
            {"name": "foreign", "input": "features", "column": 6, "edges": [0.5], "labels": ["domestic", "abroad"]},
        ],
        "gates": {"min_pairs": 50, "min_outcomes": 50},
    },
    {"model": "merchant_intent", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]},
    {"model": "basket_value", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2", "sample_rate": 0.5}]},
]


def traffic(address: str, n: int):
    """Fraud requests of 1..4 rows (every 17th without an id), merchant_intent and basket_value
    requests; returns (the outcomes to send as (request id, labels, values), each fraud
    request's rows)."""
    from shadowgrpc.examples.data import make_baskets, make_merchant_texts, make_transactions
    from tests.kserve import INFER, fraud_request, intent_request
    from tritonclient.grpc import service_pb2 as kserve

    feats, flabels = make_transactions(n, seed=31)
    texts, ilabels = make_merchant_texts(n // 2, seed=31)
    baskets, values = make_baskets(n // 2, seed=31)
    outcomes = []
    fraud_rows = []  # the features of each fraud request
    rng = np.random.default_rng(31)
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        i = 0
        while i < n:
            k = int(rng.integers(1, 5))  # 1..4 rows per request
            rid = f"fr-{i}" if i % 17 else ""  # some callers set no id (sampled at random)
            call(fraud_request(feats[i : i + k], rid=rid).SerializeToString(), timeout=10)
            fraud_rows.append(feats[i : i + k])
            if rid:
                outcomes.append((rid, [int(x) for x in flabels[i : i + k]], None))
            i += k
        for j in range(n // 2):
            call(intent_request([texts[j].encode()], rid=f"mi-{j}").SerializeToString(), timeout=10)
            outcomes.append((f"mi-{j}", [int(ilabels[j])], None))
            req = kserve.ModelInferRequest(model_name="basket_value", id=f"bv-{j}")
            req.inputs.add(name="features", datatype="FP32", shape=[1, 4])
            req.raw_input_contents.append(baskets[j : j + 1].tobytes())
            call(req.SerializeToString(), timeout=10)
            outcomes.append((f"bv-{j}", None, [float(values[j])]))
    return outcomes, fraud_rows

def outcome_messages(outcomes: list) -> list:
    """The outcomes of ``traffic`` as RecordOutcomes messages, plus one of each kind that is not
    joined: a duplicate, an unknown id, a rejected one, one whose rows do not fit."""
    from shadowgrpc.v1 import shadow_pb2

    msgs = [shadow_pb2.Outcome(request_id=r, labels=lb or [], values=v or []) for r, lb, v in outcomes]
    msgs += [shadow_pb2.Outcome(request_id=outcomes[0][0], labels=outcomes[0][1])]  # a duplicate
    msgs += [shadow_pb2.Outcome(request_id="never-sent", labels=[1])]  # unknown
    msgs += [shadow_pb2.Outcome(request_id="x", labels=[1], values=[1.0])]  # rejected
    msgs += [shadow_pb2.Outcome(request_id="mi-0", labels=[1, 2])]  # rows do not fit (after accepted: a duplicate)
    return msgs
