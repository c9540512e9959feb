"""The example and test model repository, served by the session Triton (fixture ``triton``):
every model answers non-empty outputs of its configured shape, the example models match their
numpy references, the test models misbehave as documented, and the repository load/unload RPCs
work; the example models are self-contained. The launcher itself: test_launcher.py.
"""

from __future__ import annotations

import ast
import base64
import concurrent.futures
import os
import sys
import time
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from shadowgrpc.examples import data
from shadowgrpc.local import example_repository
from tests.fixtures_triton import EXAMPLE_MODELS, TritonFixture, read_jsonl

pytestmark = [pytest.mark.triton, pytest.mark.once]  # once: the launcher and models, no shadowgrpc twin code


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _fp32_input(name: str, array: np.ndarray) -> grpcclient.InferInput:
    array = np.ascontiguousarray(array, dtype=np.float32)
    inp = grpcclient.InferInput(name, list(array.shape), "FP32")
    inp.set_data_from_numpy(array)
    return inp


def _bytes_input(name: str, texts: list[bytes] | list[str]) -> grpcclient.InferInput:
    array = np.array([[t if isinstance(t, bytes) else t.encode()] for t in texts], dtype=object)
    inp = grpcclient.InferInput(name, list(array.shape), "BYTES")
    inp.set_data_from_numpy(array)
    return inp


def _infer_fraud(client: grpcclient.InferenceServerClient, model: str, x: np.ndarray, version: str = "", **kw):
    result = client.infer(model, [_fp32_input("features", x)], model_version=version, **kw)
    return result.as_numpy("probability")


def _infer_batched(client, model: str, version: str, x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([_infer_fraud(client, model, x[i : i + batch], version) for i in range(0, len(x), batch)])


# ----------------------------------------------------------------------------------------------
# the session server's models
# ----------------------------------------------------------------------------------------------


def _example_inputs(name: str, n: int) -> list[grpcclient.InferInput]:
    if name == "fraud":
        return [_fp32_input("features", data.make_transactions(n, seed=3)[0])]
    if name == "basket_value":
        return [_fp32_input("features", data.make_baskets(n, seed=3)[0])]
    if name == "merchant_intent":
        return [_bytes_input("text", data.make_merchant_texts(n, seed=3)[0])]
    raise AssertionError(name)


_NP_DTYPES = {"TYPE_FP32": np.float32, "TYPE_INT32": np.int32}


@pytest.mark.parametrize(("name", "version"), [*EXAMPLE_MODELS, ("fraud_recorder", "1"), ("fraud_garbage", "1")])
def test_model_answers_non_empty_outputs_of_configured_shape(triton: TritonFixture, name: str, version: str) -> None:
    # Guards the numpy-2 trap: a python-backend model then answered with empty outputs, no error.
    n = 5
    with triton.client() as client:
        config = client.get_model_config(name, version, as_json=True)["config"]
        inputs = _example_inputs("fraud" if name.startswith("fraud") else name, n)
        result = client.infer(name, inputs, model_version=version)
    assert config["output"], config
    for output in config["output"]:
        array = result.as_numpy(output["name"])
        assert array is not None, output["name"]
        assert array.shape == (n, *[int(d) for d in output["dims"]]), (output, array.shape)
        assert array.size > 0 and array.nbytes > 0
        assert array.dtype == _NP_DTYPES[output["data_type"]]
        if array.dtype.kind == "f":
            assert np.isfinite(array).all()


def test_fraud_versions_match_numpy_reference_and_differ(triton: TritonFixture) -> None:
    x, _ = data.make_transactions(512, seed=7)
    with triton.client() as client:
        v1 = _infer_batched(client, "fraud", "1", x)
        v2 = _infer_batched(client, "fraud", "2", x)
        latest = _infer_fraud(client, "fraud", x[:8])  # no version: Triton picks the highest
    np.testing.assert_allclose(v1, data.reference_fraud_probability(x, 1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(v2, data.reference_fraud_probability(x, 2), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(latest, v2[:8], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(v1.sum(axis=1), 1.0, atol=1e-6)
    assert v1.shape == v2.shape == (512, 2)
    assert np.abs(v1 - v2).max() > 0.5  # the slices where they disagree
    assert not np.array_equal(v1, v2)


def test_fraud_v2_improves_one_slice_and_regresses_another(triton: TritonFixture) -> None:
    x, y = data.make_transactions(20_000, seed=0)
    masks = data.slice_masks(x)
    sliced = masks["foreign_night"] | masks["high_amount"]
    with triton.client() as client:  # Triton's own answers on the interesting rows
        served = {v: _infer_batched(client, "fraud", v, x[sliced]) for v in ("1", "2")}
    for v in ("1", "2"):
        np.testing.assert_allclose(served[v], data.reference_fraud_probability(x[sliced], v), rtol=1e-6, atol=1e-7)
    p1 = data.reference_fraud_probability(x, 1)[:, 1]
    p2 = data.reference_fraud_probability(x, 2)[:, 1]
    right1 = (p1 >= 0.5) == (y == 1)
    right2 = (p2 >= 0.5) == (y == 1)
    report = {}
    for name, mask in masks.items():
        report[name] = {
            "n": int(mask.sum()),
            "acc_v1": float(right1[mask].mean()),
            "acc_v2": float(right2[mask].mean()),
            "improved": int((right2 & ~right1)[mask].sum()),  # shadow right, live wrong
            "regressed": int((right1 & ~right2)[mask].sum()),  # live right, shadow wrong
        }
    fn, hi, rest = report["foreign_night"], report["high_amount"], report["rest"]
    assert fn["n"] >= 100 and hi["n"] >= 100, report
    assert fn["acc_v2"] > fn["acc_v1"] + 0.3 and fn["improved"] > 5 * fn["regressed"], report
    assert hi["acc_v1"] > hi["acc_v2"] + 0.3 and hi["regressed"] > 5 * hi["improved"], report
    assert abs(rest["acc_v1"] - rest["acc_v2"]) < 0.01, report


def test_fraud_missing_features_v1_rejects_v2_imputes(triton: TritonFixture) -> None:
    x, _ = data.make_transactions(4, seed=11)
    x[1, 3] = np.nan
    with triton.client() as client:
        with pytest.raises(InferenceServerException) as excinfo:
            _infer_fraud(client, "fraud", x, "1")
        assert excinfo.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "non-finite feature values in batch rows [1]" in excinfo.value.message()
        v2 = _infer_fraud(client, "fraud", x, "2")
    np.testing.assert_allclose(v2, data.reference_fraud_probability(x, 2), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="non-finite"):
        data.reference_fraud_probability(x, 1)


def test_fraud_wrong_input_shape_is_refused_by_triton(triton: TritonFixture) -> None:
    with triton.client() as client, pytest.raises(InferenceServerException) as excinfo:
        client.infer("fraud", [_fp32_input("features", np.zeros((2, 7), np.float32))], model_version="1")
    assert excinfo.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_basket_value_matches_numpy_reference(triton: TritonFixture) -> None:
    x, truth = data.make_baskets(200, seed=5)
    with triton.client() as client:
        out = {
            v: np.concatenate(
                [
                    client.infer("basket_value", [_fp32_input("features", x[i : i + 64])], model_version=v).as_numpy(
                        "value"
                    )
                    for i in range(0, len(x), 64)
                ]
            )
            for v in ("1", "2")
        }
    for v in ("1", "2"):
        np.testing.assert_allclose(out[v], data.reference_basket_value(x, v), rtol=1e-6, atol=1e-4)
    mae = {v: float(np.abs(out[v][:, 0] - truth).mean()) for v in out}
    assert mae["2"] < mae["1"]


def test_merchant_intent_writes_preference_cache_unless_shadow(triton: TritonFixture) -> None:
    texts = ["Lucky Casino #7", "Harbor Hotel downtown", "Fresh Market"]
    tag = uuid.uuid4().hex
    live_id, shadow_id, shadow_str_id, bad_id = (f"{kind}-{tag}" for kind in ("live", "shadow", "shadow-str", "bad"))
    with triton.client() as client:
        live = client.infer(
            "merchant_intent", [_bytes_input("text", texts)], model_version="1", request_id=live_id
        ).as_numpy("scores")
        shadow = client.infer(
            "merchant_intent",
            [_bytes_input("text", texts)],
            model_version="2",
            request_id=shadow_id,
            parameters={"shadow": True},
        ).as_numpy("scores")
        client.infer(
            "merchant_intent",
            [_bytes_input("text", texts[:1])],
            model_version="1",
            request_id=shadow_str_id,
            parameters={"shadow": "true"},
        )
        with pytest.raises(InferenceServerException) as excinfo:
            client.infer("merchant_intent", [_bytes_input("text", [b"\xff\xfe bad"])], request_id=bad_id)
        assert excinfo.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "not valid UTF-8" in excinfo.value.message()
    np.testing.assert_allclose(live, data.reference_merchant_intent(texts, 1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(shadow, data.reference_merchant_intent(texts, 2), rtol=1e-6, atol=1e-7)
    assert list(live.argmax(axis=1)) == [2, 1, 0]  # gambling, travel, grocery

    lines = [line for line in read_jsonl(triton.preference_cache) if line["request_id"].endswith(tag)]
    assert [line["request_id"] for line in lines] == [live_id]  # one line for the unmarked request only
    assert lines[0]["texts"] == texts
    assert lines[0]["model"] == "merchant_intent" and lines[0]["model_version"] == "1"


def test_fraud_faulty_always_fails(triton: TritonFixture) -> None:
    x, _ = data.make_transactions(3, seed=1)
    with triton.client() as client:
        for _ in range(2):
            with pytest.raises(InferenceServerException) as excinfo:
                _infer_fraud(client, "fraud_faulty", x)
            assert "fraud_faulty: simulated failure" in excinfo.value.message()
            assert excinfo.value.status() == "StatusCode.INTERNAL"
        assert client.is_model_ready("fraud_faulty")  # failing requests don't take the model down


def test_fraud_sleepy_is_slow_and_then_answers_like_v2(triton: TritonFixture) -> None:
    x, _ = data.make_transactions(4, seed=2)
    with triton.client() as client:
        # Two instances: two requests sleep concurrently.
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: _infer_fraud(client, "fraud_sleepy", x), range(2)))
        elapsed = time.monotonic() - t0
        with pytest.raises(InferenceServerException) as excinfo:
            _infer_fraud(client, "fraud_sleepy", x, client_timeout=0.5)
        assert excinfo.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        config = client.get_model_config("fraud_sleepy", as_json=True)["config"]
    assert triton.sleepy_seconds <= elapsed < 2 * triton.sleepy_seconds + 1.0
    assert sum(int(g["count"]) for g in config["instance_group"]) == 2
    for answer in answers:
        np.testing.assert_allclose(answer, data.reference_fraud_probability(x, 2), rtol=1e-6, atol=1e-7)


def test_fraud_garbage_answers_ok_with_a_different_contract(triton: TritonFixture) -> None:
    x, _ = data.make_transactions(4, seed=4)
    with triton.client() as client:
        out = _infer_fraud(client, "fraud_garbage", x)
        garbage_cfg = client.get_model_config("fraud_garbage", as_json=True)["config"]["output"][0]
        fraud_cfg = client.get_model_config("fraud", as_json=True)["config"]["output"][0]
    assert out.dtype == np.int32 and out.shape == (4, 3)
    assert out.tolist() == [[-1, i, 2**31 - 1] for i in range(4)]
    assert garbage_cfg["name"] == fraud_cfg["name"] == "probability"
    assert (garbage_cfg["data_type"], garbage_cfg["dims"]) == ("TYPE_INT32", ["3"])
    assert (fraud_cfg["data_type"], fraud_cfg["dims"]) == ("TYPE_FP32", ["2"])


def test_fraud_recorder_records_inputs_and_shadow_mark(triton: TritonFixture) -> None:
    x, _ = data.make_transactions(6, seed=9)
    tag = uuid.uuid4().hex
    with triton.client() as client:
        live = _infer_fraud(client, "fraud_recorder", x, request_id=f"live-{tag}")
        shadow = _infer_fraud(client, "fraud_recorder", x, request_id=f"shadow-{tag}", parameters={"shadow": True})
    np.testing.assert_allclose(live, data.reference_fraud_probability(x, 2), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(live, shadow)
    records = {r["request_id"]: r for r in read_jsonl(triton.recorder_path) if r["request_id"].endswith(tag)}
    assert set(records) == {f"live-{tag}", f"shadow-{tag}"}
    assert records[f"live-{tag}"]["parameters"] == {}
    assert records[f"shadow-{tag}"]["parameters"] == {"shadow": True}
    for record in records.values():
        assert record["shape"] == [6, 8] and record["dtype"] == "float32"
        assert base64.b64decode(record["data_b64"]) == x.tobytes()


def test_repository_unload_and_load_rpcs(triton: TritonFixture) -> None:
    x, _ = data.make_baskets(3, seed=1)
    with triton.client() as client:
        client.unload_model("basket_value")  # RepositoryModelUnload
        deadline = time.monotonic() + 30
        while client.is_model_ready("basket_value", "1") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not client.is_model_ready("basket_value", "1")
        assert not client.is_model_ready("basket_value", "2")
        with pytest.raises(InferenceServerException):
            client.infer("basket_value", [_fp32_input("features", x)], model_version="1")
        # Unload is asynchronous (UNLOADING, then UNAVAILABLE): wait until the stubs are gone.
        while time.monotonic() < deadline:
            states = {
                (m["name"], m.get("version")): m["state"]
                for m in client.get_model_repository_index(as_json=True)["models"]
            }
            if states.get(("basket_value", "1")) == states.get(("basket_value", "2")) == "UNAVAILABLE":
                break
            time.sleep(0.1)
        assert states[("basket_value", "1")] == states[("basket_value", "2")] == "UNAVAILABLE", states
        assert states[("fraud", "1")] == "READY"

        client.load_model("basket_value")  # RepositoryModelLoad
        assert client.is_model_ready("basket_value", "1") and client.is_model_ready("basket_value", "2")
        out = client.infer("basket_value", [_fp32_input("features", x)], model_version="2").as_numpy("value")
        assert client.is_model_ready("fraud", "1")  # the others were never touched
    np.testing.assert_allclose(out, data.reference_basket_value(x, 2), rtol=1e-6, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# the example repository itself (no server)
# ----------------------------------------------------------------------------------------------


def test_example_models_are_self_contained_one_file_per_model() -> None:
    # The example repository can be copied into any Triton with numpy: its models import only numpy,
    # triton_python_backend_utils and the standard library. Each model has one model.py; the other
    # version directories hold relative symlinks to it, which stay valid wherever the model is copied.
    repo = example_repository()
    allowed = {"numpy", "triton_python_backend_utils", *sys.stdlib_module_names}
    for model in sorted(p for p in repo.iterdir() if p.is_dir()):
        files = sorted(model.glob("*/model.py"))
        assert len(files) >= 2, files
        assert len({f.resolve() for f in files}) == 1, files
        for path in files:
            if path.is_symlink():
                assert not os.path.isabs(os.readlink(path)), path
                assert path.resolve().is_relative_to(model.resolve()), path
            tree = ast.parse(path.read_text(encoding="utf-8"))
            imported = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    imported.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    assert node.level == 0, (path, node.module)
                    imported.add(str(node.module).split(".")[0])
            assert imported <= allowed, (path, imported - allowed)
