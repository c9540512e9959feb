"""Bad input, sent to the real Triton directly and to a front on it: malformed and truncated
protobuf, absurd shapes, wrong datatypes, oversized messages, unknown models, invalid UTF-8, huge
metadata, on ModelInfer and ModelStreamInfer. For each input the front gives the status class
(code) Triton gives, or its own documented one where it cannot (its configured message limit);
it stays up (a good request afterwards is answered) and leaks nothing (no shadow task left, the
shadow byte budget back to 0).

The test generates the table of README.md's "Bad input" section (between the ``bad-input``
markers) and fails when the README's differs; ``SHADOWGRPC_UPDATE_README=1`` rewrites it."""

from __future__ import annotations

import difflib
import os
import pathlib
import time
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc.examples.data import make_transactions
from tests.frontctl import front_for
from tests.kserve import BIG, fraud_request

pytestmark = [pytest.mark.triton, pytest.mark.once]

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- bad-input:begin -->", "<!-- bad-input:end -->"
FRONT_LIMIT_MB = 4  # server.max_message_mb of the front under test (the smallest the config allows)
LIMIT_BYTES = FRONT_LIMIT_MB << 20
TIMEOUT = 10.0
SERVICE = "/inference.GRPCInferenceService/"


@dataclass
class Case:
    name: str
    payload: bytes | list[bytes]  # bytes: ModelInfer; a list: the messages of one ModelStreamInfer
    note: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    front: str | None = None  # the front's documented class where it cannot be Triton's
    details: str = ""  # a string the front's status details must contain


def _feats(n: int = 2) -> np.ndarray:
    return make_transactions(n, seed=3)[0]


def _good(rid: str = "") -> pb.ModelInferRequest:
    return fraud_request(_feats(), rid=rid)


def _ld(field_no: int, payload: bytes) -> bytes:
    n, out = len(payload), bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes([field_no << 3 | 2]) + bytes(out) + payload


def _shape(shape: list[int], rows: int = 2) -> bytes:
    r = fraud_request(_feats(rows), rid="bad-shape")
    del r.inputs[0].shape[:]
    r.inputs[0].shape.extend(shape)
    return r.SerializeToString()


def _dtype(datatype: str) -> bytes:
    r = _good("bad-dtype")
    r.inputs[0].datatype = datatype
    return r.SerializeToString()


def _raw_field(field_no: int, value: bytes) -> bytes:
    """A good request with string field ``field_no`` (1 name, 2 version, 3 id) set to raw ``value``."""
    r = _good()
    r.ClearField({1: "model_name", 2: "model_version", 3: "id"}[field_no])
    return r.SerializeToString() + _ld(field_no, value)


def _bad_param_key() -> bytes:
    entry = _ld(1, b"k\xc3\x28") + _ld(2, b"\x08\x01")  # key: invalid UTF-8; value: bool_param true
    return _good("bad-key").SerializeToString() + _ld(4, entry)


def _oversized() -> bytes:
    rows = LIMIT_BYTES // 32 + 1024  # > 4 MiB of FP32 features, shape right (batch past max_batch_size)
    return fraud_request(np.zeros((rows, 8), np.float32), rid="big").SerializeToString()


def cases() -> list[Case]:
    good = _good("trunc").SerializeToString()
    cut = {"1 byte": 1, "a quarter": len(good) // 4, "half": len(good) // 2, "all but 1 byte": len(good) - 1}
    out = [
        Case("not protobuf (`ff ff ff ff`)", b"\xff\xff\xff\xff", "unreadable bytes: forwarded to Triton unchanged"),
        Case("wire type 7", b"\x0f\x00", "wire-level error: forwarded unchanged"),
        Case("field number 0", b"\x00\x01", "wire-level error: forwarded unchanged"),
        Case("length past the end", b"\x0a\x40fraud", "wire-level error: forwarded unchanged"),
        Case("unterminated group", good + b"\x43\x08\x01", "wire-level error: forwarded unchanged"),
        Case("known field, wrong wire type", _good("wt").SerializeToString() + b"\x28\x01", "protobuf keeps it as an unknown field; the scanner refuses it: forwarded unchanged"),
        Case("empty message", b"", "no model name: Triton's answer"),
    ]
    for what, n in cut.items():
        out.append(Case(f"truncated to {what}", good[:n], "a cut field is a wire-level error; a cut between fields a valid but incomplete request"))
    out += [
        Case("shape [2**62, 8]", _shape([2**62, 8]), "routed and mirrored; Triton refuses it"),
        Case("shape [-1, 8]", _shape([-1, 8]), "routed and mirrored; Triton refuses it"),
        Case("shape [2**63-1, 2**63-1]", _shape([2**63 - 1, 2**63 - 1]), "the element count overflows int64"),
        Case("shape [2, 8], 3 rows of bytes", _shape([2, 8], rows=3), "byte size does not match the shape"),
        Case("shape [] (scalar)", _shape([]), "rank does not match the model"),
        Case("datatype INT32 (model: FP32)", _dtype("INT32"), "wrong datatype"),
        Case("datatype BYTES (model: FP32)", _dtype("BYTES"), "wrong datatype"),
        Case("datatype `NOPE`", _dtype("NOPE"), "unknown datatype"),
        Case("unknown model", pb.ModelInferRequest(model_name="no_such_model", id="u").SerializeToString(), "not routed: forwarded to Triton"),
        Case("unknown version of a routed model", fraud_request(_feats(), version="9").SerializeToString(), "explicit other version: forwarded, not mirrored"),
        Case("model name: invalid UTF-8", _raw_field(1, b"fr\xffaud"), "the scanner refuses it: forwarded unchanged"),
        Case("model name: NUL inside", _raw_field(1, b"fr\x00aud"), "valid UTF-8, no such route: forwarded"),
        Case("request id: invalid UTF-8", _raw_field(3, b"id-\xc3\x28"), "the scanner refuses it: forwarded unchanged"),
        Case("parameter key: invalid UTF-8", _bad_param_key(), "routed (the scanner does not read keys); live and shadow refuse it"),
        Case(
            f"request over {FRONT_LIMIT_MB} MiB", _oversized(),
            f"front: its own `server.max_message_mb = {FRONT_LIMIT_MB}` (details: `Received message larger than max (N vs. {LIMIT_BYTES})`), "
            "before any handler; Triton's limit is 2 GiB - 1, the same gRPC check, so it reads the request (and refuses the batch size)",
            front="RESOURCE_EXHAUSTED", details=f"vs. {LIMIT_BYTES})",
        ),
        Case("metadata: 300 keys (23 KiB)", _good("md").SerializeToString(),
             "over gRPC's 16 KiB hard limit, before any handler (the front's gRPC drops its own over-long message: code only)", metadata=tuple((f"x-k{i:03d}", "v" * 40) for i in range(300))),
        Case("metadata: one 64 KiB value", _good("md").SerializeToString(), "over gRPC's 16 KiB hard limit, before any handler", metadata=(("x-huge", "v" * 65536),)),
        Case("metadata: one 6 KiB value", _good("md6").SerializeToString(), "under gRPC's 8 KiB soft limit: forwarded (8-16 KiB: both refuse at random)", metadata=(("x-big", "v" * 6144),)),
        Case("stream: not protobuf", [b"\xff\xff\xff\xff"], "stream: forwarded on the default stream; Triton drops it, answers nothing"),
        Case("stream: truncated request", [good[: len(good) // 2]], "stream: forwarded on the default stream; Triton drops it"),
        Case("stream: model name invalid UTF-8", [_raw_field(1, b"fr\xffaud")], "stream: forwarded on the default stream; Triton drops it"),
        Case("stream: 300 metadata keys", [good], "over gRPC's 16 KiB hard limit", metadata=tuple((f"x-k{i:03d}", "v" * 40) for i in range(300))),
        Case("stream: unknown model", [pb.ModelInferRequest(model_name="no_such_model").SerializeToString()], "stream: the error comes in a response"),
        Case("stream: shape [-1, 8]", [_shape([-1, 8])], "stream: the error comes in a response"),
        Case(
            f"stream: message over {FRONT_LIMIT_MB} MiB", [_oversized()],
            f"front: `server.max_message_mb = {FRONT_LIMIT_MB}` ends the stream",
            front="RESOURCE_EXHAUSTED, 0 responses", details=f"vs. {LIMIT_BYTES})",
        ),
    ]
    return out


# --- calling -----------------------------------------------------------------------------------

def _channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=[("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)])


def _call(ch: grpc.Channel, case: Case) -> tuple[str, str]:
    """(status class, details) of ``case`` on ``ch``; a stream's class adds how its responses ended."""
    md = case.metadata or None
    if isinstance(case.payload, bytes):
        infer = ch.unary_unary(SERVICE + "ModelInfer", request_serializer=None, response_deserializer=None)
        try:
            pb.ModelInferResponse.FromString(infer(case.payload, timeout=TIMEOUT, metadata=md))
            return "OK", ""
        except grpc.RpcError as e:
            return e.code().name, e.details() or ""
    stream = ch.stream_stream(SERVICE + "ModelStreamInfer", request_serializer=None, response_deserializer=None)
    answers = errors = 0
    try:
        for raw in stream(iter(case.payload), timeout=TIMEOUT, metadata=md):
            answers += 1
            errors += bool(pb.ModelStreamInferResponse.FromString(raw).error_message)
        code, details = "OK", ""
    except grpc.RpcError as e:
        code, details = e.code().name, e.details() or ""
    return f"{code}, {answers} response{'' if answers == 1 else 's'}" + (f" ({errors} error_message)" if errors else ""), details


def _quiet(front, timeout: float = 5.0) -> tuple[int, int]:
    """Wait (bounded) until the front holds no shadow task and no shadow bytes; what is left."""
    r = front.router
    stop = time.monotonic() + timeout
    while time.monotonic() < stop and (r._tasks or r._shadow_bytes):
        time.sleep(0.02)
    return len(r._tasks), r._shadow_bytes


@pytest.fixture(scope="module")
def small_front(triton):
    routes = [
        {"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]},
        {"model": "merchant_intent", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]},
    ]
    ft = front_for(triton.grpc_address, routes, max_message_mb=FRONT_LIMIT_MB)
    yield ft
    ft.stop()


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| input | Triton direct | front | note |", "|---|---|---|---|"]
    lines += [f"| {a} | `{b}` | `{c}` | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def _check_readme(table: str) -> None:
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"README.md has no {BEGIN} ... {END} block (the 'Bad input' section)"
    head, rest = text.split(BEGIN, 1)
    old, tail = rest.split(END, 1)
    new = f"\n{table}\n"
    if old == new:
        return
    if os.environ.get("SHADOWGRPC_UPDATE_README"):
        README.write_text(head + BEGIN + new + END + tail, encoding="utf-8")
        return
    diff = "\n".join(difflib.unified_diff(old.strip().splitlines(), table.splitlines(), "README.md", "generated", lineterm=""))
    pytest.fail(f"README.md's bad-input table differs from what Triton and the front answer:\n{diff}\n"
                "If the change is intended, rerun with SHADOWGRPC_UPDATE_README=1 to rewrite the block.", pytrace=False)


def test_bad_input_gets_tritons_status_class_and_leaks_nothing(triton, small_front):
    good = _good("after").SerializeToString()
    rows, problems = [], []
    with _channel(triton.grpc_address) as direct, _channel(small_front.address) as via:
        assert _call(direct, Case("good", good))[0] == "OK"
        for case in cases():
            d_code, d_details = _call(direct, case)
            f_code, f_details = _call(via, case)
            want = case.front or d_code
            if f_code != want:
                problems.append(f"{case.name}: Triton {d_code} ({d_details!r}), front {f_code} ({f_details!r}), expected {want}")
            if case.front is not None and case.front == d_code:
                problems.append(f"{case.name}: documented as a difference, but Triton gives the same {d_code}: drop front=")
            if case.details and case.details not in f_details:
                problems.append(f"{case.name}: the front's details {f_details!r} do not name the limit ({case.details!r})")
            after = _call(via, Case("good", good))
            if after[0] != "OK":
                problems.append(f"{case.name}: the front did not answer a good request afterwards: {after}")
            left = _quiet(small_front)
            if left != (0, 0):
                problems.append(f"{case.name}: the front still holds {left[0]} shadow tasks and {left[1]} shadow bytes after 5 s")
            rows.append((case.name, d_code, f_code, case.note))
    v2 = small_front.router.routes["fraud"].shadows[0].stats
    assert v2.sent >= 10 and v2.sent == v2.ok + sum(v2.errors.values()), "the bad input reached no shadow: the leak check checked nothing"
    assert v2.errors["INVALID_ARGUMENT"] >= 5, dict(v2.errors)  # the absurd shapes and datatypes were mirrored
    table = _table(rows)
    assert not problems, "\n".join(problems)
    _check_readme(table)
