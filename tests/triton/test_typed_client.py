"""TypedClient and AsyncTypedClient (shadowgrpc/client/typed.py) against the real embedded Triton:
the same answers as tritonclient.grpc for the same inputs (fraud: FP32 [n, 8] -> probability [n, 2];
merchant_intent: BYTES [n, 1] -> scores [n, 3]), and Triton's own status for an unknown model."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from shadowgrpc.client import AsyncTypedClient, TypedClient
from shadowgrpc.examples.data import make_transactions

pytestmark = pytest.mark.triton

TEXTS = np.array([[b"fresh produce market"], ["vols et h\u00f4tels"], [b"online casino poker"], [b""]], dtype=object)


def _tritonclient_infer(triton, model: str, version: str, name: str, data: np.ndarray, datatype: str,
                        output: str) -> np.ndarray:
    with triton.client() as client:
        infer_input = grpcclient.InferInput(name, list(data.shape), datatype)
        infer_input.set_data_from_numpy(data)
        result = client.infer(model, [infer_input], model_version=version,
                              outputs=[grpcclient.InferRequestedOutput(output)])
        return result.as_numpy(output)


@pytest.fixture(scope="module")
def expected(triton):
    """tritonclient's answers: (model, version) -> (inputs, output name, output array)."""
    feats, _ = make_transactions(64, seed=7)
    feats = feats.astype(np.float32)
    out = {}
    for version in ("1", "2"):
        out["fraud", version] = ({"features": feats}, "probability",
                                 _tritonclient_infer(triton, "fraud", version, "features", feats, "FP32", "probability"))
        out["merchant_intent", version] = ({"text": TEXTS}, "scores",
                                           _tritonclient_infer(triton, "merchant_intent", version, "text", TEXTS, "BYTES",
                                                               "scores"))
    return out


CASES = [("fraud", "1"), ("fraud", "2"), ("merchant_intent", "1"), ("merchant_intent", "2")]


@pytest.mark.parametrize(("model", "version"), CASES)
def test_sync_answers_equal_tritonclient(triton, expected, model: str, version: str) -> None:
    inputs, output, want = expected[model, version]
    assert want.size > 0  # a silent empty output (numpy 2 in the Python backend) would pass below
    with TypedClient(triton.grpc_address, model, version, timeout=30) as client:
        got = client.infer(inputs, outputs=[output], request_id="typed-1")
        everything = client.infer(inputs)  # no outputs named: Triton returns all of them
    assert list(got) == [output]
    assert got[output].dtype == want.dtype and got[output].shape == want.shape
    assert got[output].tobytes() == want.tobytes()
    assert everything[output].tobytes() == want.tobytes()


@pytest.mark.parametrize(("model", "version"), CASES)
def test_async_answers_equal_tritonclient(triton, expected, model: str, version: str) -> None:
    inputs, output, want = expected[model, version]

    async def run() -> list[dict[str, np.ndarray]]:
        async with AsyncTypedClient(triton.grpc_address, model, version, timeout=30) as client:
            return list(await asyncio.gather(*(client.infer(inputs, outputs=[output], request_id=f"a{i}")
                                               for i in range(4))))

    for got in asyncio.run(run()):
        assert got[output].dtype == want.dtype and got[output].shape == want.shape
        assert got[output].tobytes() == want.tobytes()


def test_non_contiguous_and_big_endian_inputs_are_sent_as_values(triton, expected) -> None:
    inputs, output, want = expected["fraud", "1"]
    feats = inputs["features"]
    wide = np.zeros((feats.shape[0], 16), np.float32)
    wide[:, ::2] = feats
    with TypedClient(triton.grpc_address, "fraud", "1", timeout=30) as client:
        assert client.infer({"features": wide[:, ::2]}, [output])[output].tobytes() == want.tobytes()
        assert client.infer({"features": feats.astype(">f4")}, [output])[output].tobytes() == want.tobytes()


def _tritonclient_error(triton, model: str) -> Exception:
    from tritonclient.utils import InferenceServerException

    feats = np.zeros((1, 8), np.float32)
    with pytest.raises(InferenceServerException) as info:
        _tritonclient_infer(triton, model, "", "features", feats, "FP32", "probability")
    return info.value


def test_unknown_model_is_not_found_as_triton_says(triton) -> None:
    feats = np.zeros((1, 8), np.float32)
    direct = _tritonclient_error(triton, "no_such_model")
    with TypedClient(triton.grpc_address, "no_such_model", timeout=30) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.infer({"features": feats})
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert direct.status() == "StatusCode.NOT_FOUND"
    assert info.value.details() == direct.message()

    async def run() -> grpc.aio.AioRpcError:
        async with AsyncTypedClient(triton.grpc_address, "no_such_model", timeout=30) as client:
            with pytest.raises(grpc.aio.AioRpcError) as ainfo:
                await client.infer({"features": feats})
            return ainfo.value

    aerr = asyncio.run(run())
    assert (aerr.code(), aerr.details()) == (grpc.StatusCode.NOT_FOUND, direct.message())


def test_wrong_input_types_are_named(triton) -> None:
    with TypedClient(triton.grpc_address, "fraud", "1") as client:
        with pytest.raises(TypeError, match="input 'features': expected a numpy array, got list"):
            client.infer({"features": [[0.0] * 8]})
        with pytest.raises(TypeError, match="input 'features': numpy dtype complex64 has no KServe v2 datatype"):
            client.infer({"features": np.zeros((1, 8), np.complex64)})
        with pytest.raises(TypeError, match="inputs must be a mapping"):
            client.infer([np.zeros((1, 8), np.float32)])  # type: ignore[arg-type]
        with pytest.raises(grpc.RpcError) as info:  # a wrong dtype is Triton's to refuse, as it words it
            client.infer({"features": np.zeros((1, 8), np.float64)})
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
