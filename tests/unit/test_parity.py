"""shadowgrpc.parity: ModelView from MessageToDict-shaped dicts (int64 as strings, defaults
omitted, enums by name), the contract check and the parity audit."""

from __future__ import annotations

import copy
import re

import pytest

from shadowgrpc.parity import (
    SHADOW_PARAMETER,
    Mismatch,
    ModelView,
    TensorSpec,
    contract_problems,
    honours_shadow,
    model_view,
    parity_mismatches,
)

# Exactly what Triton 2.51 serves for the example fraud v1 (tests/triton/test_parity_configs.py
# checks the real ones): int64 shapes/dims are strings, max_batch_size and count are numbers.
FRAUD_METADATA = {
    "name": "fraud",
    "versions": ["1"],
    "platform": "python",
    "inputs": [{"name": "features", "datatype": "FP32", "shape": ["-1", "8"]}],
    "outputs": [{"name": "probability", "datatype": "FP32", "shape": ["-1", "2"]}],
}
FRAUD_CONFIG = {
    "name": "fraud",
    "version_policy": {"all": {}},
    "max_batch_size": 64,
    "input": [{"name": "features", "data_type": "TYPE_FP32", "dims": ["8"]}],
    "output": [{"name": "probability", "data_type": "TYPE_FP32", "dims": ["2"]}],
    "instance_group": [{"name": "fraud_0", "count": 1, "kind": "KIND_CPU"}],
    "default_model_filename": "model.py",
    "optimization": {"input_pinned_memory": {"enable": True}, "output_pinned_memory": {"enable": True}},
    "parameters": {"output_labels": {"string_value": "legit,fraud"}},
    "backend": "python",
}


def view(metadata_changes: dict | None = None, **config_changes) -> ModelView:
    metadata = copy.deepcopy(FRAUD_METADATA)
    metadata.update(metadata_changes or {})
    config = copy.deepcopy(FRAUD_CONFIG)
    for key, value in config_changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return model_view(metadata, config)


FRAUD = view()


def test_model_view_of_the_served_fraud_dicts():
    assert FRAUD == ModelView(
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
        parameters=(("output_labels", "legit,fraud"),),
    )
    assert not honours_shadow(FRAUD)


def test_model_view_accepts_the_whole_config_response_and_int_shapes():
    metadata = {**FRAUD_METADATA, "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 8]}]}
    assert model_view(metadata, {"config": FRAUD_CONFIG}) == FRAUD


def test_omitted_defaults_fill_in():
    # max_batch_size 0, no instance_group, no parameters, no dynamic batching: all omitted.
    metadata = {"name": "m", "versions": ["3"], "platform": "onnxruntime_onnx", "inputs": [{"name": "x", "datatype": "INT64", "shape": ["4"]}]}
    v = model_view(metadata, {"name": "m", "platform": "onnxruntime_onnx", "input": [{"name": "x", "data_type": "TYPE_INT64", "dims": ["4"]}]})
    assert v == ModelView("m", "3", "onnxruntime_onnx", 0, (TensorSpec("x", "INT64", (4,)),), (), (("KIND_AUTO", 1),), None, False, False, 0, ())


def test_version_is_empty_when_metadata_lists_several():
    assert view({"versions": ["1", "2"]}).version == ""


def test_optional_inputs_come_from_the_config():
    v = view(
        {"inputs": FRAUD_METADATA["inputs"] + [{"name": "mask", "datatype": "BOOL", "shape": ["-1", "8"]}]},
        input=FRAUD_CONFIG["input"] + [{"name": "mask", "data_type": "TYPE_BOOL", "dims": ["8"], "optional": True}],
    )
    assert v.inputs == (TensorSpec("features", "FP32", (-1, 8)), TensorSpec("mask", "BOOL", (-1, 8), optional=True))


def test_instance_groups_sum_per_kind_and_count_gpus():
    v = view(
        instance_group=[
            {"name": "a", "count": 2, "kind": "KIND_GPU", "gpus": [0, 1]},
            {"name": "b", "count": 1, "kind": "KIND_CPU"},
            {"name": "c", "kind": "KIND_CPU"},  # count omitted: Triton's default 1
            {"name": "d", "count": 1},  # kind omitted: KIND_AUTO (enum zero)
        ]
    )
    assert v.instance_groups == (("KIND_AUTO", 1), ("KIND_CPU", 2), ("KIND_GPU", 4))


def test_dynamic_batching_flattened_with_defaults_and_queue_timeout():
    assert view(dynamic_batching={}).dynamic_batching == (
        ("max_queue_delay_us", "0"),
        ("preferred_batch_size", "[]"),
        ("max_queue_size", "0"),
        ("timeout_action", "REJECT"),
        ("preserve_ordering", "false"),
        ("priority_levels", "0"),
    )
    written = {"max_queue_delay_microseconds": "0", "default_queue_policy": {"timeout_action": "REJECT"}}
    assert view(dynamic_batching=written) == view(dynamic_batching={})
    v = view(
        dynamic_batching={
            "preferred_batch_size": [16, 8],
            "max_queue_delay_microseconds": "500",
            "default_queue_policy": {"default_timeout_microseconds": "200000", "allow_timeout_override": True, "max_queue_size": 32, "timeout_action": "DELAY"},
        }
    )
    assert dict(v.dynamic_batching) == {
        "max_queue_delay_us": "500",
        "preferred_batch_size": "[8, 16]",
        "max_queue_size": "32",
        "timeout_action": "DELAY",
        "preserve_ordering": "false",
        "priority_levels": "0",
    }
    assert v.queue_timeout_us == 200000


def test_sequence_batching_decoupled_parameters():
    v = view(
        sequence_batching={},
        model_transaction_policy={"decoupled": True},
        parameters={SHADOW_PARAMETER: {"string_value": " True "}, "a": {"string_value": "1"}, "empty": {}},
    )
    assert v.sequence_batching and v.decoupled
    assert v.parameters == (("a", "1"), ("empty", ""), (SHADOW_PARAMETER, " True "))
    assert honours_shadow(v)
    assert not honours_shadow(view(parameters={SHADOW_PARAMETER: {"string_value": "false"}}))


@pytest.mark.parametrize(
    ("metadata", "config", "field"),
    [
        ({"versions": ["1"]}, {}, "metadata name"),
        ({**FRAUD_METADATA, "inputs": [{"name": "x", "datatype": "FP32", "shape": ["a"]}]}, FRAUD_CONFIG, "metadata inputs[0].shape"),
        ({**FRAUD_METADATA, "inputs": [{"datatype": "FP32"}]}, FRAUD_CONFIG, "metadata inputs[0].name"),
        (FRAUD_METADATA, {**FRAUD_CONFIG, "max_batch_size": "many"}, "config max_batch_size"),
        (FRAUD_METADATA, {**FRAUD_CONFIG, "instance_group": {"count": 1}}, "config instance_group"),
        (FRAUD_METADATA, {**FRAUD_CONFIG, "dynamic_batching": {"max_queue_delay_microseconds": True}}, "max_queue_delay_microseconds"),
    ],
)
def test_malformed_dicts_raise_value_error_naming_the_field(metadata, config, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        model_view(metadata, config)


# -- contract ---------------------------------------------------------------------------------


def test_same_contract_is_compatible():
    assert contract_problems(FRAUD, view({"versions": ["2"]})) == []


def test_garbage_output_datatype_and_shape():
    garbage = view({"outputs": [{"name": "probability", "datatype": "INT32", "shape": ["-1", "3"]}]})
    assert contract_problems(FRAUD, garbage) == [
        "output 'probability': datatype INT32 in the shadow, FP32 in live",
        "output 'probability': shape [-1, 3] in the shadow, [-1, 2] in live",
    ]


def test_inputs_missing_wrong_type_wrong_rank_and_extra_required():
    live = view({"inputs": [{"name": "features", "datatype": "FP32", "shape": ["-1", "8"]}, {"name": "ids", "datatype": "INT64", "shape": ["-1", "1"]}]})
    shadow = view(
        {
            "inputs": [
                {"name": "features", "datatype": "FP16", "shape": ["-1", "8", "1"]},
                {"name": "country", "datatype": "BYTES", "shape": ["-1", "1"]},
                {"name": "hint", "datatype": "FP32", "shape": ["-1", "1"]},
            ]
        },
        input=[{"name": "hint", "data_type": "TYPE_FP32", "dims": ["1"], "optional": True}],
    )
    assert contract_problems(live, shadow) == [
        "input 'features': datatype FP16 in the shadow, FP32 in live",
        "input 'features': shape [-1, 8, 1] in the shadow, [-1, 8] in live",
        "input 'ids': missing in the shadow, INT64 [-1, 1] in live",
        "input 'country': required by the shadow (BYTES [-1, 1]), not declared by live",
    ]


def test_wildcard_dims_match_anything_of_the_same_rank():
    live = view({"inputs": [{"name": "features", "datatype": "FP32", "shape": ["-1", "-1"]}]})
    assert contract_problems(live, FRAUD) == []
    assert contract_problems(FRAUD, live) == []
    narrower = view({"inputs": [{"name": "features", "datatype": "FP32", "shape": ["-1", "4"]}]})
    assert contract_problems(FRAUD, narrower) == ["input 'features': shape [-1, 4] in the shadow, [-1, 8] in live"]


def test_outputs_missing_and_extra():
    extra = view({"outputs": FRAUD_METADATA["outputs"] + [{"name": "logits", "datatype": "FP32", "shape": ["-1", "2"]}]})
    assert contract_problems(FRAUD, extra) == []
    assert contract_problems(extra, FRAUD) == ["output 'logits': missing in the shadow, FP32 [-1, 2] in live"]


def test_max_batch_size_rules():
    assert contract_problems(FRAUD, view(max_batch_size=128)) == []
    assert contract_problems(FRAUD, view(max_batch_size=32)) == [
        "max_batch_size: 32 in the shadow, 64 in live: live's batches above 32 would fail"
    ]
    # MessageToDict omits max_batch_size 0: a non-batching model's shapes lack the -1 batch dim.
    unbatched = view({"inputs": [{"name": "features", "datatype": "FP32", "shape": ["8"]}], "outputs": [{"name": "probability", "datatype": "FP32", "shape": ["2"]}]}, max_batch_size=None)
    assert unbatched.max_batch_size == 0
    assert contract_problems(FRAUD, unbatched) == [
        "max_batch_size: 0 in the shadow (no batching), 64 in live: live's batched requests do not fit",
        "input 'features': shape [8] in the shadow, [-1, 8] in live",
        "output 'probability': shape [2] in the shadow, [-1, 2] in live",
    ]
    assert contract_problems(unbatched, FRAUD) == [
        "max_batch_size: 64 in the shadow, 0 in live (no batching): the batch dimension differs",
        "input 'features': shape [-1, 8] in the shadow, [8] in live",
        "output 'probability': shape [-1, 2] in the shadow, [2] in live",
    ]
    assert contract_problems(unbatched, unbatched) == []


# -- parity -----------------------------------------------------------------------------------


def test_identical_environments_have_no_mismatches():
    assert parity_mismatches(FRAUD, view({"versions": ["2"]}), None, None) == []
    assert parity_mismatches(FRAUD, FRAUD, 0.5, 0.5) == []


def test_gpu_live_cpu_shadow():
    gpu = view(instance_group=[{"name": "fraud_0", "count": 1, "kind": "KIND_GPU", "gpus": [0]}], backend="onnxruntime")
    cpu = view(instance_group=[{"name": "fraud_0", "count": 2, "kind": "KIND_CPU"}])
    assert parity_mismatches(gpu, cpu, None, None) == [
        Mismatch("instance_group", "KIND_GPU x1", "KIND_CPU x2"),
        Mismatch("backend", "onnxruntime", "python"),
    ]


def test_dynamic_batching_on_off_and_limits():
    on = view(dynamic_batching={"max_queue_delay_microseconds": "500", "preferred_batch_size": [8, 16]})
    assert parity_mismatches(FRAUD, on, None, None) == [
        Mismatch("dynamic_batching", "off", "on (max_queue_delay_us=500, preferred_batch_size=[8, 16])")
    ]
    assert parity_mismatches(view(dynamic_batching={}), FRAUD, None, None) == [Mismatch("dynamic_batching", "on", "off")]
    slower = view(dynamic_batching={"max_queue_delay_microseconds": "5000", "preferred_batch_size": [8, 16]})
    assert parity_mismatches(on, slower, None, None) == [Mismatch("dynamic_batching", "max_queue_delay_us=500", "max_queue_delay_us=5000")]


def test_queue_timeout_deadlines_max_batch_sequence_decoupled():
    shadow = view(
        dynamic_batching={"default_queue_policy": {"default_timeout_microseconds": "200000"}},
        max_batch_size=128,
        sequence_batching={"max_sequence_idle_microseconds": "1000000"},
        model_transaction_policy={"decoupled": True},
    )
    assert parity_mismatches(FRAUD, shadow, None, 2.5) == [
        Mismatch("dynamic_batching", "off", "on"),
        Mismatch("max_batch_size", "64", "128"),
        Mismatch("queue_timeout", "none", "0.2 s"),
        Mismatch("deadline_s", "caller's", "2.5 s"),
        Mismatch("sequence_batching", "off", "on"),
        Mismatch("decoupled", "false", "true"),
    ]
    assert parity_mismatches(FRAUD, FRAUD, 0.25, None) == [Mismatch("deadline_s", "0.25 s", "caller's")]
