"""shadowgrpc.parity against the real Triton's ModelMetadata and ModelConfig: the dicts of
tritonclient (as_json=True) and of MessageToDict on the raw protobuf give the same ModelView, and
the contract check and parity audit say exactly this for fraud v1 (live) vs v2, fraud_garbage
and fraud_batched (tests/models/fraud_batched: fraud's contract under another environment)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import service_pb2, service_pb2_grpc

from shadowgrpc.examples.data import make_transactions
from shadowgrpc.parity import Mismatch, ModelView, TensorSpec, contract_problems, honours_shadow, model_view, parity_mismatches

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def views(triton):
    """(name, version) -> ModelView, read both ways; asserts that both ways agree."""
    wanted = [("fraud", "1"), ("fraud", "2"), ("fraud_garbage", ""), ("fraud_batched", "")]
    out: dict[tuple[str, str], ModelView] = {}
    with triton.client() as client, grpc.insecure_channel(triton.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for name, version in wanted:
            metadata = client.get_model_metadata(name, version, as_json=True)
            config = client.get_model_config(name, version, as_json=True)["config"]
            raw_metadata = MessageToDict(stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=name, version=version)), preserving_proto_field_name=True)
            raw_config = MessageToDict(stub.ModelConfig(service_pb2.ModelConfigRequest(name=name, version=version)), preserving_proto_field_name=True)
            assert (metadata, config) == (raw_metadata, raw_config["config"])
            # The quirks model_view relies on, as Triton 2.51 serves them.
            assert metadata["inputs"][0]["shape"] == ["-1", "8"]
            assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == ["8"]
            out[name, version] = view = model_view(metadata, config)
            assert model_view(raw_metadata, raw_config) == view  # the whole ModelConfigResponse dict too
    return out


def test_fraud_view(views):
    assert views["fraud", "1"] == ModelView(
        name="fraud",
        version="1",
        backend="python",
        max_batch_size=64,
        inputs=(TensorSpec("features", "FP32", (-1, 8)),),
        outputs=(TensorSpec("probability", "FP32", (-1, 2)),),
        instance_groups=(("KIND_CPU", 1),),
        dynamic_batching=None,
        sequence_batching=False,
        decoupled=False,
        queue_timeout_us=0,
        parameters=(
            ("feature_names", "amount_log,hour_of_day,merchant_risk,distance_from_home,card_age_years,tx_count_24h,is_foreign,new_device"),
            ("output_labels", "legit,fraud"),
            ("shadowgrpc_honours_shadow", "true"),
        ),
    )


def test_fraud_v1_vs_v2_compatible_and_same_environment(views):
    live, shadow = views["fraud", "1"], views["fraud", "2"]
    assert shadow.version == "2"
    assert contract_problems(live, shadow) == []
    assert parity_mismatches(live, shadow, None, None) == []
    # the front's deadline is part of the environment: a generous shadow deadline is a mismatch
    assert parity_mismatches(live, shadow, None, 30.0) == [Mismatch("deadline_s", "caller's", "30 s")]
    assert honours_shadow(shadow)  # the example models declare it (no side effects, or skipped for shadows)


def test_fraud_vs_garbage_incompatible(views):
    live, garbage = views["fraud", "1"], views["fraud_garbage", ""]
    assert garbage.outputs == (TensorSpec("probability", "INT32", (-1, 3)),)
    assert contract_problems(live, garbage) == [
        "output 'probability': datatype INT32 in the shadow, FP32 in live",
        "output 'probability': shape [-1, 3] in the shadow, [-1, 2] in live",
    ]
    assert parity_mismatches(live, garbage, 1.0, 1.0) == []
    assert not honours_shadow(garbage)  # declares nothing


def test_fraud_vs_batched_compatible_with_exact_mismatches(views):
    live, batched = views["fraud", "1"], views["fraud_batched", ""]
    assert batched.instance_groups == (("KIND_CPU", 2),)
    assert batched.queue_timeout_us == 200_000
    assert dict(batched.dynamic_batching)["max_queue_delay_us"] == "500"
    assert contract_problems(live, batched) == []
    assert parity_mismatches(live, batched, 0.5, 0.5) == [
        Mismatch("instance_group", "KIND_CPU x1", "KIND_CPU x2"),
        Mismatch("dynamic_batching", "off", "on (max_queue_delay_us=500, preferred_batch_size=[8, 16])"),
        Mismatch("queue_timeout", "none", "0.2 s"),
    ]
    assert honours_shadow(batched) and honours_shadow(live)


def test_fraud_batched_answers_like_fraud_v2(triton):
    feats, _ = make_transactions(4, seed=7)
    answers = {}
    with triton.client() as client:
        for name, version in [("fraud", "2"), ("fraud_batched", "")]:
            inp = tg.InferInput("features", list(feats.shape), "FP32")
            inp.set_data_from_numpy(feats.astype(np.float32))
            answers[name] = client.infer(name, [inp], model_version=version).as_numpy("probability")
    assert answers["fraud_batched"].shape == (4, 2)  # not a silent empty output
    np.testing.assert_array_equal(answers["fraud_batched"], answers["fraud"])
