"""Feature completeness of shadowed requests, against the real Triton's model metadata."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from shadowgrpc.examples.data import make_transactions
from tests.frontctl import front_for
from tests.kserve import INFER, fraud_request, intent_request

pytestmark = pytest.mark.triton


def test_nan_inf_empty_strings_and_contract_of_inputs_are_counted(triton):
    routes = [
        {"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}, {"name": "aa", "version": "1", "noise_floor": True}]},
        {"model": "merchant_intent", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]},
    ]
    feats, _ = make_transactions(4, seed=3)
    reqs = [fraud_request(feats) for _ in range(10)]
    for k in range(3):
        x = feats.copy()
        x[k, 2] = np.nan
        reqs.append(fraud_request(x))
    for _ in range(2):
        x = feats.copy()
        x[0, 0] = np.inf
        reqs.append(fraud_request(x))
    for _ in range(2):
        r = fraud_request(feats)
        r.inputs[0].datatype = "INT32"
        reqs.append(r)
    reqs.append(fraud_request(np.zeros((4, 5), np.float32)))
    texts = [intent_request([b"HOTEL AURORA", b""]), intent_request([b""]), intent_request([b"CITY BUS PASS"])]
    ft = front_for(triton.grpc_address, routes)
    try:
        with grpc.insecure_channel(ft.address) as ch:
            call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
            for r in reqs + texts:
                try:
                    call(r.SerializeToString(), timeout=10)
                except grpc.RpcError:
                    pass  # NaN (v1 refuses it), wrong dtype and shape: Triton says no; still counted
        ft.drain()
        fraud = ft.router.routes["fraud"].completeness
        intent = ft.router.routes["merchant_intent"].completeness
    finally:
        ft.stop()
    f = fraud.inputs["features"]
    # Counted once per request, not once per shadow target.
    assert (f.requests, f.nan, f.inf, f.dtype_mismatch, f.shape_mismatch, f.missing) == (18, 3, 2, 2, 1, 0)
    # 15 FP32 requests of 4x8, 2 "INT32" ones of 32 values, one 4x5: every value is counted.
    assert f.values == 15 * 32 + 2 * 32 + 20
    t = intent.inputs["text"]
    assert (t.requests, t.values, t.empty_strings, t.dtype_mismatch, t.shape_mismatch) == (3, 4, 2, 0, 0)
    assert fraud.metadata_error == "" and fraud.not_checked == 0
