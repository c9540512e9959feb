"""The packing twins against each other: the compiled and the pure-Python twin give the same results
and the same errors on the same inputs, malformed ones included; the compiled twin is really
loaded, and the selector falls back to the Python twin."""

from __future__ import annotations

import os
import subprocess
import sys
from types import FunctionType, ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

import shadowgrpc._packing_py as packing_py
from tests.wire import (
    NAMES,
    RESPONSE_CASES,
    SETTINGS,
    WIRE_CASES,
    infer_requests,
    infer_responses,
    mutations,
    outcome,
    unknown_fields,
)


# --- c vs py -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def twins() -> tuple[ModuleType, ModuleType]:
    import shadowgrpc._packing_c as packing_c

    return packing_c, packing_py


def _same(twins, name: str, *args) -> None:
    c, py = (getattr(m, name) for m in twins)
    assert outcome(c, *args) == outcome(py, *args)


@pytest.mark.c_extension
@SETTINGS
@given(
    data=st.data(),
    msg=infer_requests(),
    resp=infer_responses(),
    unknown=unknown_fields(),
    noise=st.binary(max_size=64),
)
def test_c_and_py_agree(
    twins, data: st.DataObject, msg: pb.ModelInferRequest, resp: pb.ModelInferResponse, unknown: bytes, noise: bytes
) -> None:
    raw = unknown + msg.SerializeToString()
    raw_resp = resp.SerializeToString()
    for candidate in (raw, data.draw(mutations(raw)), noise):
        _same(twins, "scan_request", candidate)
        _same(twins, "scan_response", candidate)
    for candidate in (raw_resp, data.draw(mutations(raw_resp))):
        _same(twins, "scan_response", candidate)
        _same(twins, "scan_request", candidate)
    name, version = data.draw(st.one_of(st.none(), NAMES)), data.draw(st.one_of(st.none(), NAMES))
    shadow = data.draw(st.booleans())
    _same(twins, "build_request", raw, name, version, shadow)
    _same(twins, "sample_key", msg.id)
    items = list(msg.raw_input_contents)
    encoded = twins[0].encode_bytes_tensor(items)
    assert encoded == twins[1].encode_bytes_tensor(items)
    for candidate in (encoded, data.draw(mutations(encoded)), noise):
        _same(twins, "decode_bytes_tensor", candidate)


@pytest.mark.c_extension
@pytest.mark.parametrize("raw", [case[0] for case in WIRE_CASES + RESPONSE_CASES])
def test_c_and_py_agree_on_wire_cases(twins, raw: bytes) -> None:
    _same(twins, "scan_request", raw)
    _same(twins, "scan_response", raw)


@pytest.mark.c_extension
def test_packing_c_loaded() -> None:
    import shadowgrpc._packing_c as packing_c
    import shadowgrpc.packing as packing

    assert packing.IMPLEMENTATION == "c"
    assert packing_c.__file__.endswith((".so", ".pyd"))
    for name in ("scan_request", "sample_key", "build_request", "scan_response", "decode_bytes_tensor",
                 "encode_bytes_tensor"):
        fn = getattr(packing, name)
        assert fn is getattr(packing_c, name)
        assert not isinstance(fn, FunctionType)  # compiled, not a Python function


@pytest.mark.parametrize(
    ("env", "prelude", "expected"),
    [
        ({"SHADOWGRPC_NO_EXTENSIONS": "1"}, "", "py"),
        # The extension missing (ImportError) falls back to the Python twin.
        ({"SHADOWGRPC_NO_EXTENSIONS": ""}, "import sys; sys.modules['shadowgrpc._packing_c'] = None; ", "py"),
    ],
)
def test_packing_selector_falls_back(env: dict[str, str], prelude: str, expected: str) -> None:
    code = prelude + "import shadowgrpc.packing as p; print(p.IMPLEMENTATION, p.scan_request.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),  # the repository root
    )
    assert out.stdout.split() == [expected, f"shadowgrpc._packing_{expected}"]
