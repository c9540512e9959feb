"""Property tests of the wire code, deterministic for CI (derandomized, no example database, a fixed
number of examples): on arbitrary bytes and on mutated valid messages the compiled twin and the
pure-Python one give the same result or the same ValueError, nothing else (no other exception, no
crash), whichever buffer type carries the bytes; valid messages round-trip through the scanners,
the builder and the packer, checked against protobuf. The coverage-guided fuzzer of the same code
is ``make fuzz`` (tests/fuzz/fuzz_wire.py)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

import shadowgrpc._packing_py as packing_py
from tests.wire import (
    SHM,
    expected_outputs,
    expected_scan,
    infer_requests,
    infer_responses,
    materialize,
    mutations,
    outcome,
    unknown_fields,
)

CI = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
MESSAGES = settings(CI, max_examples=40)  # whole protobuf messages are slow to draw: fewer of them
TEXT = st.text(max_size=12)
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=8)  # lone surrogates too
SCANNERS = ("scan_request", "scan_response", "decode_bytes_tensor")
# Seeds that reach the deep paths: groups, nested maps, packed shapes, BYTES elements.
SEEDS = [
    b"\x43" * 100 + b"\x44" * 100 + b"\x0a\x01x",
    b"\x2a\x0c\x1a\x0a" + b"\xff" * 9 + b"\x01\x32\x01z",
    b"\x2a\x1a\x22\x18\x0a\x14shared_memory_region\x12\x00",
    b"\x03\x00\x00\x00abc\x00\x00\x00\x00",
]


def _twins() -> tuple[ModuleType, ModuleType]:
    import shadowgrpc._packing_c as packing_c

    return packing_c, packing_py


def _buffers(raw: bytes) -> list[object]:
    """``raw`` as each kind of buffer the scanners take: bytes (the fast path), and through the
    buffer protocol a bytearray, a memoryview slice and a numpy uint8 array."""
    padded = b"!" + raw + b"!"
    return [raw, bytearray(raw), memoryview(padded)[1:-1], np.frombuffer(raw, np.uint8) if raw else np.zeros(0, np.uint8)]


def _agree(raw: bytes) -> None:
    c, py = _twins()
    for name in SCANNERS:
        want = outcome(getattr(py, name), raw)
        for buf in _buffers(raw):
            assert outcome(getattr(c, name), buf) == want, (name, type(buf).__name__, raw)
            assert outcome(getattr(py, name), buf) == want, (name, type(buf).__name__, raw)


# --- compiled vs pure Python ----------------------------------------------------------------------

@pytest.mark.c_extension
@CI
@given(raw=st.one_of(st.binary(max_size=300), st.lists(st.sampled_from(list(range(256))), max_size=64).map(bytes)))
def test_arbitrary_bytes_same_outcome(raw: bytes) -> None:
    _agree(raw)


@pytest.mark.c_extension
@MESSAGES
@given(data=st.data(), msg=infer_requests(), resp=infer_responses(), unknown=unknown_fields(), seed=st.sampled_from(SEEDS))
def test_mutated_messages_same_outcome(data: st.DataObject, msg: pb.ModelInferRequest, resp: pb.ModelInferResponse, unknown: bytes, seed: bytes) -> None:
    for base in (unknown + msg.SerializeToString(), resp.SerializeToString(), seed, seed + unknown):
        _agree(base)
        _agree(data.draw(mutations(base)))


@pytest.mark.c_extension
@CI
@given(raw=st.binary(max_size=200), name=st.one_of(st.none(), ANY_TEXT), version=st.one_of(st.none(), ANY_TEXT), shadow=st.booleans(), rid=ANY_TEXT)
def test_builder_and_key_same_outcome(raw: bytes, name: str | None, version: str | None, shadow: bool, rid: str) -> None:
    c, py = _twins()
    want = outcome(py.build_request, raw, name, version, shadow)
    for buf in _buffers(raw)[:3]:
        got = outcome(c.build_request, buf, name, version, shadow)
        assert got == (want if want[0] != "ok" or buf is raw or want[1] is not raw else ("ok", buf)), (type(buf).__name__, got, want)
    assert outcome(c.sample_key, rid) == outcome(py.sample_key, rid)


# --- valid messages round-trip, in each twin --------------------------------------------------------

@MESSAGES
@given(msg=infer_requests(), unknown=unknown_fields(), name=st.one_of(st.none(), TEXT), version=st.one_of(st.none(), TEXT), shadow=st.booleans())
def test_valid_requests_round_trip(packing_impl: ModuleType, msg: pb.ModelInferRequest, unknown: bytes, name: str | None, version: str | None, shadow: bool) -> None:
    raw = unknown + msg.SerializeToString()
    assert packing_impl.scan_request(raw) == expected_scan(msg)
    built = packing_impl.build_request(raw, name, version, shadow)
    parsed = pb.ModelInferRequest.FromString(built)
    want_name = msg.model_name if name is None else name
    want_version = msg.model_version if version is None else version
    assert (parsed.model_name, parsed.model_version, parsed.id) == (want_name, want_version, msg.id)
    if shadow:
        assert parsed.parameters["shadow"].bool_param is True
    else:
        assert built is raw if name is None and version is None else dict(parsed.parameters) == dict(msg.parameters)
    assert packing_impl.scan_request(built) == (want_name, want_version, msg.id, expected_scan(msg)[3])
    assert list(parsed.raw_input_contents) == list(msg.raw_input_contents)


@MESSAGES
@given(resp=infer_responses())
def test_valid_responses_round_trip(packing_impl: ModuleType, resp: pb.ModelInferResponse) -> None:
    raw = resp.SerializeToString()
    assert materialize(packing_impl.scan_response(raw)) == expected_outputs(resp)


@CI
@given(items=st.lists(st.binary(max_size=40), max_size=8))
def test_bytes_tensors_round_trip(packing_impl: ModuleType, items: list[bytes]) -> None:
    assert packing_impl.decode_bytes_tensor(packing_impl.encode_bytes_tensor(items)) == items


@CI
@given(
    model=TEXT, version=TEXT, rid=TEXT,
    shape=st.lists(st.integers(0, 3), max_size=3),
    datatype=st.sampled_from(["FP32", "INT64", "UINT8", "BYTES"]),
    outputs=st.lists(TEXT, max_size=2),
    shm=st.booleans(),
    data=st.data(),
)
def test_packed_requests_scan_and_parse(packing_impl: ModuleType, model, version, rid, shape, datatype, outputs, shm, data) -> None:
    n = int(np.prod(shape)) if shape else 1
    if datatype == "BYTES":
        tensor = data.draw(st.lists(st.binary(max_size=8), min_size=n, max_size=n))
        raw_bytes = packing_py.encode_bytes_tensor(tensor)
    else:
        tensor = np.arange(n).astype({"FP32": np.float32, "INT64": np.int64, "UINT8": np.uint8}[datatype]).reshape(shape)
        raw_bytes = tensor.tobytes()
    params = {SHM: "region"} if shm else None
    packed = packing_impl.pack_request(model, version, rid, [("x", datatype, tuple(shape), tensor)], outputs, params)
    assert packed == packing_py.pack_request(model, version, rid, [("x", datatype, tuple(shape), tensor)], outputs, params)
    msg = pb.ModelInferRequest.FromString(packed)
    assert (msg.model_name, msg.model_version, msg.id) == (model, version, rid)
    assert list(msg.inputs[0].shape) == shape and msg.inputs[0].datatype == datatype
    assert [o.name for o in msg.outputs] == outputs
    assert list(msg.raw_input_contents) == [raw_bytes]
    # a request-level parameter is not a tensor's: the scanner's shared-memory flag stays False
    assert packing_impl.scan_request(packed) == (model, version, rid, False)
