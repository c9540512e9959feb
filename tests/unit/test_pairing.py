"""The after-both-answers stage and the defects it once had, each with a test that failed before
(no Triton here): wide float outputs, invalid shadow rows counted per output, metadata failures,
per-input memory, and large requests decoded off the loop. The defects that need the real Triton:
tests/triton/test_pairing_end_to_end.py."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from tritonclient.grpc import service_pb2 as kserve

from shadowgrpc import pairing
from shadowgrpc.compare import compare_responses
from shadowgrpc.completeness import MAX_UNKNOWN_NAMES, UNDECLARED, Completeness
from shadowgrpc.stats import ShadowStats
from tests.wire import fp32_response


def test_a_wide_float_output_is_compared_as_a_vector_not_a_32k_by_32k_confusion_matrix():
    s = ShadowStats()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 32768)).astype(np.float32)
    primary = compare_responses(fp32_response(logits=a), fp32_response(logits=a + 0.01), s)
    o = s.outputs["logits"]
    assert o.kind == "embedding" and not hasattr(o.paired, "confusion")
    assert o.paired.count == 2 and len(o.paired.to_bytes()) < 64 << 10
    assert primary is not None and primary[0].shape == (2, 32768)
    # Up to the limit it is still a classifier; the limit is configurable.
    s2 = ShadowStats()
    compare_responses(fp32_response(p=np.full((1, 1024), 1 / 1024)), fp32_response(p=np.full((1, 1024), 1 / 1024)), s2)
    assert s2.outputs["p"].kind == "classifier"


def test_invalid_shadow_rows_are_counted_per_output():
    s = ShadowStats()
    live = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    shadow = np.array([[np.nan, np.nan], [1.3, -0.3], [0.5, 0.5]])
    compare_responses(fp32_response(p=live), fp32_response(p=shadow), s)
    o = s.outputs["p"]
    assert o.probabilities and (o.shadow_invalid, o.live_invalid, o.rows) == (2, 0, 3)


class _Upstream:
    """A fake upstream whose ModelMetadata does what the test says."""

    def __init__(self, metadata) -> None:
        self.calls = 0

        async def call(raw, timeout=None):
            self.calls += 1
            return await metadata()

        self.unary = {"ModelMetadata": call}


def _request(names: list[str]) -> kserve.ModelInferRequest:
    req = kserve.ModelInferRequest(model_name="m")
    for n in names:
        req.inputs.add(name=n, datatype="FP32", shape=[1, 2])
        req.raw_input_contents.append(np.zeros(2, np.float32).tobytes())
    return req


def test_a_metadata_failure_of_any_kind_never_leaves_a_check_pending():
    async def broken():
        raise RuntimeError("injected")

    async def go():
        up = _Upstream(broken)
        c = Completeness(up, "m", "")
        await asyncio.wait_for(c.check(_request(["x"])), 2)  # before: pending forever
        await asyncio.wait_for(c.check(_request(["x"])), 2)
        return up.calls, c

    calls, c = asyncio.run(go())
    assert calls == 2 and "RuntimeError: injected" in c.metadata_error  # retried, reason kept


def test_per_input_statistics_are_keyed_by_declared_inputs_only():
    async def declared():
        meta = kserve.ModelMetadataResponse(name="m")
        meta.inputs.add(name="features", datatype="FP32", shape=[-1, 2])
        return meta.SerializeToString()

    async def unknown():
        raise RuntimeError("down")

    async def go(meta):
        c = Completeness(_Upstream(meta), "m", "")
        for i in range(500):
            await c.check(_request(["features", f"caller-chose-{i}"]))
        return c

    c = asyncio.run(go(declared))
    assert set(c.inputs) == {"features", UNDECLARED} and c.inputs[UNDECLARED].requests == 500
    c = asyncio.run(go(unknown))  # metadata unknown: bounded all the same
    assert len(c.inputs) == MAX_UNKNOWN_NAMES + 1 and c.inputs[UNDECLARED].requests == 500 - (MAX_UNKNOWN_NAMES - 1)  # features + 63 names, then one bucket


def test_large_requests_are_decoded_off_the_event_loop_and_huge_ones_not_at_all(monkeypatch):
    threads = []

    def spy(raw):
        threads.append(threading.current_thread() is threading.main_thread())
        return kserve.ModelInferRequest.FromString(raw)

    monkeypatch.setattr(pairing, "decode_request", spy)
    small = _request(["x"]).SerializeToString()
    big = kserve.ModelInferRequest(model_name="m", raw_input_contents=[bytes(pairing.ON_LOOP_DECODE_MAX + 1)]).SerializeToString()
    assert asyncio.run(pairing.decode(small)) is not None and threads == [True]
    assert asyncio.run(pairing.decode(big)) is not None and threads == [True, False]
    monkeypatch.setattr(pairing, "MAX_DECODE_BYTES", len(big) - 1)
    assert asyncio.run(pairing.decode(big)) is None and len(threads) == 2


def test_integer_labels_outside_the_configured_classes_are_invalid_rows():
    from shadowgrpc.config import Settings

    route = Settings.from_dict({"routes": [{"model": "m", "outputs": {"label": {"classes": 3}}}]}).routes[0]

    def labels(values: list[int]) -> bytes:
        r = kserve.ModelInferResponse(model_name="m")
        r.outputs.add(name="label", datatype="INT32", shape=[len(values), 1])
        r.raw_output_contents.append(np.array(values, np.int32).tobytes())
        return r.SerializeToString()

    s = ShadowStats()
    compare_responses(labels([0, 1, 2, 1]), labels([0, 5, -1, 1]), s, route)
    o = s.outputs["label"]
    assert (o.live_invalid, o.shadow_invalid, o.rows) == (0, 2, 4)
    unchecked = ShadowStats()  # without `classes` nothing says which labels exist
    compare_responses(labels([0, 1]), labels([7, -1]), unchecked)
    assert unchecked.outputs["label"].shadow_invalid == 0
