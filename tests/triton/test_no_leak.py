"""Nothing leaks, against the real Triton (issue 13, security):

1. a shadow's answer never reaches a caller: the shadow is ``fraud_sentinel`` (tests/models), whose
   every output row is a float32 pair no other model gives (bits 0x3EC0FFEE, 0x3F1DEAD5) and whose
   errors carry a sentinel message; every answer the data port gives (ModelInfer OK and error, its
   initial and trailing metadata and status details, ModelStreamInfer responses and the stream's
   metadata and status) is searched for those bytes and their string forms, and the live answers
   are byte-identical to Triton's direct ones. A positive control first shows the needles are found
   in fraud_sentinel's own answers.
2. the report never holds request inputs unless configured: inputs with sentinel values (a float32
   in every column of some fraud rows, a BYTES string for merchant_intent) never appear in GetReport
   (the protobuf bytes, its text, JSON and HTML renderings) nor in the snapshot (its JSON and every
   base64 sketch in it); the paired log holds them only with ``[log] keep_inputs = true``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable

import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc.examples.data import make_transactions
from shadowgrpc.report_html import render_html
from shadowgrpc.report_text import format_report, report_json
from shadowgrpc.snapshot import load as load_snapshot
from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc
from tests.frontctl import front_for
from tests.kserve import BIG, fraud_request, intent_request

pytestmark = [pytest.mark.triton, pytest.mark.once]

STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
INFER = "/inference.GRPCInferenceService/ModelInfer"

# fraud_sentinel's answers (tests/models/fraud_sentinel/1/model.py)
SENTINEL_ROW = np.array((0x3EC0FFEE, 0x3F1DEAD5), dtype=np.uint32).view(np.float32)
SENTINEL_ERROR = "SHADOW-ONLY-ERROR-8c1f3e"
ERROR_TRIGGER = -4242.0
SHADOW_NAME = "sentinel-shadow-q9"  # only in the front's config: no answer to a caller names it
SHADOW_NEEDLES = [
    SENTINEL_ROW.tobytes(), SENTINEL_ROW[:1].tobytes(), SENTINEL_ROW[1:].tobytes(),  # raw float32, the pair and each
    SENTINEL_ROW.astype(">f4").tobytes(), SENTINEL_ROW.astype(np.float64).tobytes(),  # big-endian, widened
    b"0.37695", b"0.61686", SENTINEL_ROW.tobytes().hex().encode(), base64.b64encode(SENTINEL_ROW.tobytes())[:8],
    SENTINEL_ERROR.encode(), b"fraud_sentinel", SHADOW_NAME.encode(),
]  # fmt: skip

# request inputs with sentinel values (test 2)
INPUT_VALUE = np.float32(7654321.5)  # exact in float32
INPUT_TEXT = b"ZQX-INPUT-SENTINEL-4711"
INPUT_NEEDLES = [
    np.array([INPUT_VALUE] * 2, "<f4").tobytes(), np.float32(INPUT_VALUE).tobytes(), np.float64(INPUT_VALUE).tobytes(),
    b"7654321", b"7.65432e", b"7.654e+06", b"7.6543e", INPUT_TEXT, INPUT_TEXT.decode().lower().encode(),
    base64.b64encode(INPUT_TEXT)[:12],
]  # fmt: skip


def found(blob: bytes, needles: Iterable[bytes]) -> list[bytes]:
    return [n for n in needles if n in blob]


def md_bytes(md) -> bytes:
    """Metadata (key, value) pairs as bytes: keys and values (str or bytes)."""
    out = b""
    for k, v in md or ():
        out += k.encode() + b"=" + (v if isinstance(v, bytes) else str(v).encode()) + b"\n"
    return out


def infer_all(address: str, raws: list[bytes]) -> list[tuple[str, bytes, bytes]]:
    """Each request once on ModelInfer: (status name, response bytes or status details, everything
    the caller got: bytes, details, initial and trailing metadata, the debug string)."""
    out = []
    with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", BIG)]) as ch:
        call = ch.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        for raw in raws:
            try:
                resp, c = call.with_call(raw, timeout=30)
            except grpc.RpcError as e:
                details = (e.details() or "").encode()
                seen = details + md_bytes(e.initial_metadata()) + md_bytes(e.trailing_metadata()) + (e.debug_error_string() or "").encode()
                out.append((e.code().name, details, seen))
            else:
                out.append(("OK", resp, resp + md_bytes(c.initial_metadata()) + md_bytes(c.trailing_metadata())))
    return out


def stream_all(address: str, raws: list[bytes]) -> tuple[list[bytes], bytes]:
    """One ModelStreamInfer with ``raws``: (every response, everything the caller got)."""
    with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", BIG)]) as ch:
        call = ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)(iter(raws), timeout=30)
        responses = list(call)
        seen = b"".join(responses) + md_bytes(call.initial_metadata()) + md_bytes(call.trailing_metadata())
        seen += call.code().name.encode() + (call.details() or "").encode()
    return responses, seen


def caller_requests(tag: str) -> list[bytes]:
    """OK for live and shadow; OK for live, failing on the shadow (the trigger row); failing on both
    (wrong width, wrong datatype, a version live lacks), with and without request ids."""
    feats, _ = make_transactions(16, seed=5)
    trig = feats[:3].copy()
    trig[1, 0] = ERROR_TRIGGER
    wide = pb.ModelInferRequest(model_name="fraud", model_version="1", id=f"{tag}-wide")
    wide.inputs.add(name="features", datatype="FP32", shape=[1, 9])
    wide.raw_input_contents.append(np.ones((1, 9), np.float32).tobytes())
    dtype = fraud_request(feats[:2], rid=f"{tag}-dtype")
    dtype.inputs[0].datatype = "FP64"
    return [
        fraud_request(feats[0:4], rid=f"{tag}-ok-1").SerializeToString(),
        fraud_request(feats[4:5], rid="").SerializeToString(),
        fraud_request(feats[5:13], rid=f"{tag}-ok-2").SerializeToString(),
        fraud_request(trig, rid=f"{tag}-shadow-fails").SerializeToString(),
        fraud_request(trig[1:2], rid="").SerializeToString(),
        wide.SerializeToString(),
        dtype.SerializeToString(),
        fraud_request(feats[:1], rid=f"{tag}-v9", version="9").SerializeToString(),
    ]


def test_a_shadow_answer_never_reaches_a_caller(triton):
    reqs = caller_requests("leak")
    # Positive control: the needles are in fraud_sentinel's own answers, OK and error alike.
    as_sentinel = [r.replace(b"\n\x05fraud\x12\x011", b"\n\x0efraud_sentinel\x12\x011", 1) for r in reqs[:4]]
    direct_sentinel = infer_all(triton.grpc_address, as_sentinel)
    assert [s for s, _, _ in direct_sentinel][:3] == ["OK"] * 3 and direct_sentinel[3][0] != "OK", direct_sentinel
    assert all(SENTINEL_ROW.tobytes() in b for s, b, _ in direct_sentinel[:3]), "control: fraud_sentinel's answers hold the sentinel rows"
    assert SENTINEL_ERROR.encode() in direct_sentinel[3][2], direct_sentinel[3]

    routes = [{"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": SHADOW_NAME, "model": "fraud_sentinel", "sample_rate": 1.0}]}]
    ft = front_for(triton.grpc_address, routes)
    try:
        ss = ft.router.routes["fraud"].shadows[0]
        direct = infer_all(triton.grpc_address, reqs)
        assert [s for s, _, _ in direct][:5] == ["OK"] * 5 and all(s != "OK" for s, _, _ in direct[5:]), [s for s, _, _ in direct]
        stream_reqs = reqs
        direct_stream, _ = stream_all(triton.grpc_address, stream_reqs)
        for round_ in range(2):  # the second round after every shadow call has finished
            via = infer_all(ft.address, reqs)
            for (ds, db, _), (vs, vb, seen), raw in zip(direct, via, reqs):
                assert (vs, vb) == (ds, db), f"round {round_}: {raw[:40]!r}: front {vs} {vb[:200]!r}, direct {ds} {db[:200]!r}"
                assert not found(seen, SHADOW_NEEDLES), f"round {round_}: shadow bytes in the answer to {raw[:40]!r}: {found(seen, SHADOW_NEEDLES)}"
            responses, seen = stream_all(ft.address, stream_reqs)
            assert responses == direct_stream, f"round {round_}: stream answers differ from Triton's"
            assert not found(seen, SHADOW_NEEDLES), f"round {round_}: shadow bytes in the stream: {found(seen, SHADOW_NEEDLES)}"
            assert ft.drain(15.0) == 0
        st = ss.stats
        # The shadow did answer, with its sentinels and its sentinel error, on both RPCs.
        assert st.ok >= 2 * 6 and sum(st.errors.values()) >= 2 * 4, (st.ok, dict(st.errors))
        assert st.stream_requests >= 2 * 5 and st.compared >= 2 * 6, (st.stream_requests, st.compared)
    finally:
        ft.stop()


# -------------------------------------------------------------------------------------------
# 2. the report and the paired log
# -------------------------------------------------------------------------------------------


def _input_traffic(address: str) -> None:
    feats, _ = make_transactions(64, seed=9)
    feats[::3] = INPUT_VALUE  # every column of every third row
    reqs = [fraud_request(feats[i : i + 4], rid=f"in-{i}").SerializeToString() for i in range(0, 64, 4)]
    texts = [b"SKYJET AIRLINES", INPUT_TEXT, b"LUCKY SPIN CASINO"]
    reqs += [intent_request(texts[i % 3 :] + texts[: i % 3], rid=f"txt-{i}").SerializeToString() for i in range(6)]
    assert [s for s, _, _ in infer_all(address, reqs)] == ["OK"] * len(reqs)


def _sketch_bytes(doc) -> bytes:
    """Every base64 string of the snapshot document, decoded (the sketches' binary form)."""
    out = b""
    if isinstance(doc, dict):
        doc = list(doc.values())
    if isinstance(doc, list):
        for v in doc:
            out += _sketch_bytes(v)
    elif isinstance(doc, str) and len(doc) >= 8 and re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", doc):
        try:
            out += base64.b64decode(doc, validate=True) + b"\n"
        except ValueError:
            pass
    return out


def _log_bytes(log_dir) -> tuple[bytes, int]:
    """Every value of every paired-log file (binary columns raw, others as JSON), and the row count."""
    blob, rows = b"", 0
    for f in sorted(log_dir.glob("**/*.parquet")):
        t = pq.read_table(f)
        rows += t.num_rows if "pairs" in f.parts else 0
        for name in t.column_names:
            for v in t.column(name).to_pylist():
                blob += v if isinstance(v, bytes) else json.dumps(v, default=lambda x: x.hex() if isinstance(x, bytes) else str(x)).encode()
                blob += b"\n"
        blob += f.read_bytes()
    return blob, rows


@pytest.mark.parametrize("keep_inputs", [False, True])
def test_the_report_never_holds_request_inputs_and_the_log_only_when_configured(triton, tmp_path, keep_inputs):
    routes = [
        {"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]},
        {"model": "merchant_intent", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]},
    ]
    log_dir = tmp_path / "log"
    ft = front_for(triton.grpc_address, routes, log={"path": str(log_dir), "flush_s": 0.5, "keep_inputs": keep_inputs})
    try:
        _input_traffic(ft.address)
        assert ft.drain(15.0) == 0
        with grpc.insecure_channel(ft.admin_address, options=[("grpc.max_receive_message_length", BIG)]) as ch:
            rep = shadow_pb2_grpc.ShadowControlStub(ch).GetReport(shadow_pb2.GetReportRequest(snapshot=True), timeout=30)
        ft.flush_log()
    finally:
        ft.stop()
    by_model = {r.model: r for r in rep.routes}
    assert by_model["fraud"].shadows[0].compared == 16 and by_model["merchant_intent"].shadows[0].compared == 6, rep  # the traffic was seen
    state = load_snapshot(rep.snapshot)
    doc = json.loads(rep.snapshot)
    renderings = {
        "GetReport bytes": rep.SerializeToString(),
        "text": format_report(rep).encode(),
        "JSON": report_json(rep).encode(),
        "HTML": render_html(state, rep).encode(),
        "snapshot": rep.snapshot,
        "snapshot sketches": _sketch_bytes(doc),
    }
    for what, blob in renderings.items():
        assert len(blob) > 100, what
        assert not found(blob, INPUT_NEEDLES), f"request inputs in the report's {what}: {found(blob, INPUT_NEEDLES)}"
    # The configured case: the paired log holds the request bytes only with keep_inputs = true.
    blob, rows = _log_bytes(log_dir)
    assert rows == 22, rows
    if keep_inputs:
        assert np.float32(INPUT_VALUE).tobytes() * 2 in blob and INPUT_TEXT in blob
    else:
        assert not found(blob, INPUT_NEEDLES), f"request inputs in the paired log without keep_inputs: {found(blob, INPUT_NEEDLES)}"
