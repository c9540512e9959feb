"""pack_request (shadowgrpc/_packing_build_py.py and its compiled twin): the twins give the same bytes
and the same errors, and the bytes are what tritonclient builds for the same tensors: the same
message parsed, field by field; the same bytes with at most one request parameter, or with the
parameters in upb's deterministic map order (upb's plain SerializeToString writes a map in its hash
table's order, so with two or more parameters only the parsed messages can be compared)."""

from __future__ import annotations

import math
import tracemalloc
from types import FunctionType, ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc._utils import TRITON_RESERVED_REQUEST_PARAMS, _get_inference_request

import shadowgrpc._packing_build_py as build_py
import shadowgrpc._packing_py as packing_py
from tests.wire import INT64, NAMES, SETTINGS

# Every fixed-size datatype but BF16 (tritonclient wants ml_dtypes for it): numpy dtype of each.
NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
PARAM_KEYS = NAMES.filter(lambda k: k not in TRITON_RESERVED_REQUEST_PARAMS and not k.startswith("triton_"))
PARAM_VALUES = st.one_of(st.booleans(), INT64, NAMES, st.floats(allow_nan=False))


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, str, tuple[int, ...], np.ndarray]:
    datatype = draw(st.sampled_from([*NUMPY, "BYTES"]))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    n = math.prod(shape)
    if datatype == "BYTES":
        data = np.empty(n, dtype=object)
        data[:] = draw(st.lists(st.one_of(st.binary(max_size=20), NAMES), min_size=n, max_size=n))
    else:
        dtype = np.dtype(NUMPY[datatype])
        data = np.frombuffer(draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize)), dtype)
    return draw(NAMES), datatype, shape, data.reshape(shape)


REQUESTS = st.fixed_dictionaries({
    "model_name": NAMES,
    "model_version": NAMES,
    "request_id": NAMES,
    "inputs": st.lists(tensors(), max_size=4),
    "outputs": st.lists(NAMES, max_size=3),
    "parameters": st.one_of(st.none(), st.dictionaries(PARAM_KEYS, PARAM_VALUES, max_size=3)),
})


def tritonclient_request(model_name, model_version, request_id, inputs, outputs, parameters) -> pb.ModelInferRequest:
    """The request tritonclient.grpc's InferenceServerClient.infer sends for these tensors."""
    infer_inputs = []
    for name, datatype, shape, data in inputs:
        infer_inputs.append(InferInput(name, list(shape), datatype).set_data_from_numpy(data))
    requested = [InferRequestedOutput(name) for name in outputs]
    return _get_inference_request(model_name, infer_inputs, model_version, request_id, requested, 0, False, False, 0,
                                  None, parameters)


def upb_order(parameters: dict) -> dict:
    """``parameters`` in the order upb's deterministic serialization writes map keys (byte-wise,
    a key after every longer key it is a prefix of)."""
    return dict(sorted(parameters.items(), key=lambda kv: (*kv[0].encode(), 256)))


# --- against tritonclient ------------------------------------------------------------------------

@SETTINGS
@given(req=REQUESTS)
def test_same_request_as_tritonclient(packing_impl: ModuleType, req: dict) -> None:
    raw = packing_impl.pack_request(**req)
    expected = tritonclient_request(**req)
    got = pb.ModelInferRequest.FromString(raw)
    assert got == expected
    # field by field, so that a failure says which
    assert (got.model_name, got.model_version, got.id) == (req["model_name"], req["model_version"], req["request_id"])
    assert [(t.name, t.datatype, tuple(t.shape)) for t in got.inputs] == [i[:3] for i in req["inputs"]]
    assert list(got.raw_input_contents) == [c for c in expected.raw_input_contents]
    assert [o.name for o in got.outputs] == req["outputs"]
    assert dict(got.parameters) == dict(expected.parameters)
    params = req["parameters"] or {}
    if len(params) <= 1:
        assert raw == expected.SerializeToString()
    ordered = packing_impl.pack_request(**{**req, "parameters": upb_order(params)})
    assert ordered == expected.SerializeToString(deterministic=True)


def test_known_bytes(packing_impl: ModuleType) -> None:
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    text = np.array([[b"abc"], ["d\u00e9f"]], dtype=object)
    raw = packing_impl.pack_request("fraud", "1", "r-1", [("features", "FP32", x.shape, x), ("text", "BYTES", (2, 1), text)],
                                    ["probability"], {"priority_hint": 3})
    expected = tritonclient_request("fraud", "1", "r-1", [("features", "FP32", x.shape, x), ("text", "BYTES", (2, 1), text)],
                                    ["probability"], {"priority_hint": 3})
    assert raw == expected.SerializeToString()
    msg = pb.ModelInferRequest.FromString(raw)
    assert msg.raw_input_contents[0] == x.tobytes()
    assert msg.raw_input_contents[1] == b"\x03\x00\x00\x00abc\x04\x00\x00\x00d\xc3\xa9f"


# --- the twins -----------------------------------------------------------------------------------

def _outcome(fn, *args, **kwargs) -> tuple:
    try:
        return ("ok", fn(*args, **kwargs))
    except (TypeError, ValueError) as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.c_extension
@SETTINGS
@given(req=REQUESTS, data=st.data())
def test_twins_agree(req: dict, data: st.DataObject) -> None:
    import shadowgrpc._packing_c as packing_c

    assert packing_c.pack_request(**req) == packing_py.pack_request(**req)
    # and on broken inputs: one field of one input replaced
    if req["inputs"]:
        k = data.draw(st.integers(0, len(req["inputs"]) - 1))
        field = data.draw(st.integers(0, 3))
        junk = data.draw(st.one_of(st.none(), st.integers(-3, 3), NAMES, st.lists(st.integers(-2, 3), max_size=3),
                                   st.binary(max_size=8)))
        broken = list(req["inputs"][k])
        broken[field] = junk
        req["inputs"][k] = tuple(broken)
    assert _outcome(packing_c.pack_request, **req) == _outcome(packing_py.pack_request, **req)


@pytest.mark.c_extension
def test_compiled_twin_is_selected() -> None:
    import shadowgrpc._packing_build_c as build_c
    import shadowgrpc._packing_c as packing_c
    import shadowgrpc.packing as packing

    assert packing.pack_request is packing_c.pack_request is build_c.pack_request
    assert not isinstance(packing.pack_request, FunctionType)
    assert build_c.ELEMENT_SIZES == build_py.ELEMENT_SIZES


# --- errors --------------------------------------------------------------------------------------

X = np.zeros((4, 8), np.float32)
ERRORS = [
    ([("x", "FP33", (4, 8), X)], ValueError, "input 'x': unknown datatype 'FP33'"),
    ([("x", "FP32", (-4, 8), X)], ValueError, "input 'x': negative dimension -4 in shape [-4, 8]"),
    ([("x", "FP32", (2**63, 1), X)], ValueError, f"input 'x': dimension {2**63} in shape [{2**63}, 1] is out of int64 range"),
    ([("x", "FP32", (4, 9), X)], ValueError, "input 'x': 128 bytes of data for shape [4, 9] of FP32 (144 bytes expected)"),
    ([("x", "FP64", (4, 8), X)], ValueError, "input 'x': 128 bytes of data for shape [4, 8] of FP64 (256 bytes expected)"),
    ([("x", "FP32", (2**62, 2**62), X)], ValueError,
     f"input 'x': 128 bytes of data for shape [{2**62}, {2**62}] of FP32 ({2**126} bytes expected)"),
    ([("x", "FP32", (8, 4), X.T)], ValueError,
     "input 'x': data is not C-contiguous (np.ascontiguousarray(data) is a contiguous copy)"),
    ([("x", "FP32", (4,), X[:, 0])], ValueError,
     "input 'x': data is not C-contiguous (np.ascontiguousarray(data) is a contiguous copy)"),
    ([("x", "FP32", (1,), [1.0])], TypeError, "input 'x': FP32 data must be a buffer (a numeric numpy array), not list"),
    ([("x", "FP32", (1,), np.array([b"a"], dtype=object))], TypeError,
     "input 'x': FP32 data must be a buffer (a numeric numpy array), not ndarray of dtype object"),
    ([("x", "FP32", 4, X)], TypeError, "input 'x': shape must be a sequence of ints, not int"),
    ([("x", "FP32", (4.0, 8), X)], TypeError, "input 'x': shape must be a sequence of ints, not tuple"),
    ([("x", "BYTES", (3,), [b"a", b"b"])], ValueError, "input 'x': 2 BYTES elements for shape [3] (3 expected)"),
    ([("x", "BYTES", (2,), [b"a", 7])], TypeError, "input 'x': BYTES element 1 must be bytes or str, not int"),
    ([("x", "BYTES", (1,), [np.array([b"a"], dtype=object)])], TypeError,
     "input 'x': BYTES element 0 must be bytes or str, not ndarray of dtype object"),
    ([("x", "FP32", (4, 8))], ValueError, "input 0: expected (name, datatype, shape, data), got 3 items"),
    ([(1, "FP32", (4, 8), X)], TypeError, "input 0: name must be str, not int"),
    ([("x", None, (4, 8), X)], TypeError, "input 'x': datatype must be str, not NoneType"),
]


@pytest.mark.parametrize(("inputs", "exc", "message"), ERRORS)
def test_errors_name_the_problem(packing_impl: ModuleType, inputs: list, exc: type, message: str) -> None:
    with pytest.raises(exc) as info:
        packing_impl.pack_request("m", "", "", inputs, ["y"])
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"model_name": 1}, TypeError, "model_name must be str, not int"),
        ({"outputs": ["y", 2]}, TypeError, "output 1: name must be str, not int"),
        ({"parameters": {"k": 2**63}}, ValueError, f"parameter 'k': {2**63} is out of int64 range"),
        ({"parameters": {"k": None}}, TypeError, "parameter 'k': value must be bool, int, str or float, not NoneType"),
        ({"parameters": {1: True}}, TypeError, "parameter names must be str, not int"),
        ({"request_id": "\ud800"}, UnicodeEncodeError, None),
    ],
)
def test_argument_errors(packing_impl: ModuleType, kwargs: dict, exc: type, message: str | None) -> None:
    args = {"model_name": "m", "model_version": "", "request_id": "", "inputs": [("x", "FP32", (4, 8), X)], **kwargs}
    with pytest.raises(exc) as info:
        packing_impl.pack_request(**args)
    if message is not None:
        assert str(info.value) == message


# --- one copy ------------------------------------------------------------------------------------

@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
def test_one_copy_of_the_tensor(packing_impl: ModuleType, datatype: str) -> None:
    """The peak memory allocated while packing an 8 MiB tensor is the result, not two copies."""
    size = 8 << 20
    if datatype == "FP32":
        data = np.ones(size // 4, np.float32)
        shape = data.shape
    else:
        data = np.array([b"x" * (size // 4 - 4)] * 4, dtype=object)  # bytes elements: no UTF-8 copies
        shape = (4,)
    packing_impl.pack_request("m", "", "", [("x", datatype, shape, data)])  # warm up
    tracemalloc.start()
    try:
        raw = packing_impl.pack_request("m", "", "", [("x", datatype, shape, data)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size <= len(raw) < size + 100
    assert peak < size + (64 << 10)
