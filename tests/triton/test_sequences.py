"""Sequences (a model with a sequence batcher, tests/models/seq_sum) through the front, against the real
Triton: a shadowed sequence is mirrored whole (start to end, seen from the model side by its
recorder lines) or not at all, its pairs compared at its end; one shed midway is counted and kept
out of the comparison. Live answers are byte-identical to Triton's direct ones."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc.packing import sample_key
from tests.fixtures_triton import read_jsonl
from tests.frontctl import front_for
from tests.kserve import _raw

pytestmark = pytest.mark.triton


def seq_request(corrid: int, x: float, start: bool, end: bool, rid: str = "") -> bytes:
    req = pb.ModelInferRequest(model_name="seq_sum", model_version="1", id=rid)
    req.inputs.add(name="INPUT", datatype="FP32", shape=[1, 1])
    req.raw_input_contents.append(np.array([[x]], np.float32).tobytes())
    req.parameters["sequence_id"].int64_param = corrid
    req.parameters["sequence_start"].bool_param = start
    req.parameters["sequence_end"].bool_param = end
    return req.SerializeToString()


def _steps(corrid: int, n: int) -> list[float]:
    return [float((corrid + i) % 5) for i in range(n)]  # some sequences hold a 3: v2 disagrees there


def _recorded(triton, corrids) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in read_jsonl(triton.recorder_path):
        if r.get("model") == "seq_sum" and r["model_version"] == "2" and r["corrid"] in corrids:
            out.setdefault(r["corrid"], []).append(r)
    return out


def test_shadowed_sequences_are_mirrored_whole_and_the_others_not_at_all(triton):
    ft = front_for(triton.grpc_address, [{"model": "seq_sum", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2", "sample_rate": 0.5}]}])
    try:
        rs = ft.router.routes["seq_sum"]
        assert rs.sequence_batching and not rs.decoupled
        base = time.time_ns() % 10**12 * 100
        corrids = [base + i for i in range(40)]
        steps = 4
        reqs = [[seq_request(c, x, i == 0, i == steps - 1, rid=f"{c}-{i}") for i, x in enumerate(_steps(c, steps))] for c in corrids]
        chf, via = _raw(ft.address)
        with chf:  # interleaved: step i of every sequence, then step i + 1
            got = [[via(reqs[k][i], timeout=10) for k in range(len(corrids))] for i in range(steps)]
        ft.drain()
        chd, direct = _raw(triton.grpc_address)
        with chd:  # the same sequences on Triton directly, after the front's have ended
            want = [[direct(reqs[k][i], timeout=10) for k in range(len(corrids))] for i in range(steps)]
        assert got == want
        shadowed = {c for c in corrids if sample_key(str(c)) < 0.5}
        assert 0 < len(shadowed) < len(corrids)
        seen = _recorded(triton, set(corrids))
        assert set(seen) == shadowed
        for c, recs in seen.items():
            assert [r["input"] for r in recs] == _steps(c, steps)
            assert [(r["start"], r["end"], r["shadow"]) for r in recs] == [(i == 0, i == steps - 1, True) for i in range(steps)]
        s = rs.shadows[0].stats
        assert (s.sequences_mirrored, s.sequences_shed_midway, s.sequence_requests_excluded) == (len(shadowed), 0, 0)
        assert s.sent == s.ok == s.compared == steps * len(shadowed)
        assert rs.stats.sequences == len(corrids)
    finally:
        ft.stop()


def test_a_sequence_shed_midway_is_counted_and_excluded_from_the_comparison(triton):
    route = {"model": "seq_sum", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2", "max_in_flight": 1}]}
    ft = front_for(triton.grpc_address, [route])
    try:
        s = ft.router.routes["seq_sum"].shadows[0].stats
        base = time.time_ns() % 10**12 * 100 + 50
        a, b = base, base + 1
        chf, via = _raw(ft.address)
        with chf:
            via(seq_request(a, 1.0, True, False), timeout=10)
            ft.drain()
            # b's start is slow on the shadow (999: v2 sleeps): it holds the target's one slot...
            slow = threading.Thread(target=lambda: via(seq_request(b, 999.0, True, False), timeout=10))
            slow.start()
            deadline = time.monotonic() + 5
            while ft.router.routes["seq_sum"].shadows[0].in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            via(seq_request(a, 2.0, False, False), timeout=10)  # ...so a's second step is shed
            slow.join()
            ft.drain()
            via(seq_request(a, 3.0, False, True), timeout=10)  # not sent: a is broken
            via(seq_request(b, 1.0, False, True), timeout=10)
        ft.drain()
        assert (s.sequences_mirrored, s.sequences_shed_midway, s.sequence_requests_excluded, s.shed) == (2, 1, 3, 1)
        assert s.sent == 3 and s.compared == 2  # a's start (excluded) and b's two steps (compared)
        seen = _recorded(triton, {a, b})
        assert [r["input"] for r in seen[a]] == [1.0] and [r["input"] for r in seen[b]] == [999.0, 1.0]
    finally:
        ft.stop()
