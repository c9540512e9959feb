"""Live vs shadow, before and beside the numbers: a typed view of a Triton model, the contract
check (can the shadow be sent live's requests and compared?) and the parity audit (does the
shadow run in live's environment?).

Input: what the front fetches from Triton over gRPC, converted with
``google.protobuf.json_format.MessageToDict(msg, preserving_proto_field_name=True)``: the
``ModelMetadataResponse`` and the ``config`` of the ``ModelConfigResponse`` (tritonclient's
``get_model_metadata(..., as_json=True)`` and ``get_model_config(..., as_json=True)["config"]``
give the same dicts; checked against Triton 2.51). That conversion writes int64/uint64 fields as
strings (metadata shapes, ``dims``, ``max_queue_delay_microseconds``,
``default_timeout_microseconds``) but int32 fields as numbers (``max_batch_size``, instance
``count``, ``preferred_batch_size``), omits fields at their default (``max_batch_size`` 0, empty
lists, ``optional: false``, an enum at its zero value: instance ``kind`` KIND_AUTO,
``timeout_action`` REJECT) and writes enums by name ("KIND_CPU"). :func:`model_view` accepts
both spellings of numbers and fills the defaults in. Metadata ``platform`` is the backend name for
backend models ("python"); the config has ``backend`` (or ``platform`` for TensorRT/ONNX/...
platform models). A malformed dict raises ``ValueError`` naming the field.

:func:`model_view` rules
    Tensors, shapes and datatypes come from the metadata (what Triton serves: the shape includes
    the batch dimension -1 when max_batch_size > 0); ``optional`` from the config input of the
    same name. ``version``: the metadata's only version ("" when it lists several: no version was
    asked for). Instance groups are summed per kind, sorted by kind; the count of a KIND_GPU group
    that lists ``gpus`` is per GPU, so it is multiplied by their number; no ``instance_group`` at
    all is Triton's default, one instance of KIND_AUTO (a served config always has it filled in).
    Dynamic batching is None when the config has no ``dynamic_batching`` (``{}`` means on, with
    defaults) and otherwise every setting below, defaults filled in, so equal settings compare
    equal however they were written: max_queue_delay_us, preferred_batch_size, max_queue_size,
    timeout_action, preserve_ordering, priority_levels. The queue timeout
    (``default_queue_policy.default_timeout_microseconds``) is ``queue_timeout_us``, not repeated
    there. Parameters: key -> ``string_value``, sorted.

:func:`contract_problems` rules (an empty list: compatible)
    - max batch size: live batches (> 0) and the shadow does not (0); the shadow's is below
      live's (live's larger batches would fail); live 0 and the shadow > 0 (the shadow expects a
      batch dimension that live's requests lack).
    - every input live declares exists in the shadow, with the same datatype and a compatible
      shape: same rank, each dimension equal or -1 on either side;
    - every required (non-optional) shadow input is declared by live;
    - every output live declares exists in the shadow, same datatype, compatible shape (extra
      shadow outputs are fine: they are not compared).
    One short sentence per problem, naming the tensor and both sides, in that order.

:func:`parity_mismatches` rules (an empty list: the environments match)
    One :class:`Mismatch` per item that differs, in this order: instance_group (kind and count),
    dynamic_batching (on/off, then the settings that differ), backend, max_batch_size,
    queue_timeout (model-level queue timeout), deadline_s (the front's effective deadline for
    each; None = the caller's), sequence_batching, decoupled. Values are short strings:
    "KIND_CPU x2", "off", "on (max_queue_delay_us=500)", "0.2 s", "none", "caller's".

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "SHADOW_PARAMETER",
    "Mismatch",
    "ModelView",
    "TensorSpec",
    "contract_problems",
    "honours_shadow",
    "model_view",
    "parity_mismatches",
]

SHADOW_PARAMETER = "shadowgrpc_honours_shadow"  # ModelConfig parameters key; "true": the model skips side effects for shadow requests

# dynamic_batching settings kept in ModelView.dynamic_batching, with Triton's defaults
_BATCHING_DEFAULTS = {
    "max_queue_delay_us": "0",
    "preferred_batch_size": "[]",
    "max_queue_size": "0",
    "timeout_action": "REJECT",
    "preserve_ordering": "false",
    "priority_levels": "0",
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str  # KServe name: "FP32", "BYTES", ... (metadata's datatype)
    shape: tuple[int, ...]  # metadata shape, -1 = any (includes the batch dim -1 when max_batch_size > 0)
    optional: bool = False  # config input `optional: true`


@dataclass(frozen=True, slots=True)
class ModelView:
    name: str
    version: str
    backend: str  # config backend, else platform
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    instance_groups: tuple[tuple[str, int], ...]  # (kind, count) summed per kind, e.g. (("KIND_CPU", 1),)
    dynamic_batching: tuple[tuple[str, str], ...] | None  # flattened settings that matter, None = off
    sequence_batching: bool
    decoupled: bool  # model_transaction_policy.decoupled
    queue_timeout_us: int  # dynamic_batching.default_queue_policy.default_timeout_microseconds (0 = none)
    parameters: tuple[tuple[str, str], ...]  # config parameters key -> string_value


@dataclass(frozen=True, slots=True)
class Mismatch:
    item: str  # instance_group, dynamic_batching, backend, max_batch_size, queue_timeout, deadline_s, sequence_batching, decoupled
    live: str
    shadow: str


def _int(value: object, field: str, default: int = 0) -> int:
    """An int32 (number) or int64 (string) field of MessageToDict output."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise ValueError(f"{field}: expected an integer, got {value!r}")
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ValueError(f"{field}: expected an integer, got {value!r}") from None


def _mapping(value: object, field: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{field}: expected an object, got {type(value).__name__}")
    return value


def _list(value: object, field: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ValueError(f"{field}: expected a list, got {type(value).__name__}")
    return list(value)


def _tensors(metadata: Mapping, key: str, optional: frozenset[str]) -> tuple[TensorSpec, ...]:
    out = []
    for i, t in enumerate(_list(metadata.get(key), f"metadata {key}")):
        t = _mapping(t, f"metadata {key}[{i}]")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"metadata {key}[{i}].name: missing")
        shape = tuple(_int(d, f"metadata {key}[{i}].shape") for d in _list(t.get("shape"), f"metadata {key}[{i}].shape"))
        out.append(TensorSpec(name, str(t.get("datatype", "")), shape, name in optional))
    return tuple(out)


def _instance_groups(config: Mapping) -> tuple[tuple[str, int], ...]:
    groups = _list(config.get("instance_group"), "config instance_group")
    if not groups:
        return (("KIND_AUTO", 1),)
    total: dict[str, int] = {}
    for i, g in enumerate(groups):
        g = _mapping(g, f"config instance_group[{i}]")
        kind = str(g.get("kind", "KIND_AUTO"))
        count = _int(g.get("count"), f"config instance_group[{i}].count", 1) or 1
        gpus = _list(g.get("gpus"), f"config instance_group[{i}].gpus")
        if kind == "KIND_GPU" and gpus:
            count *= len(gpus)
        total[kind] = total.get(kind, 0) + count
    return tuple(sorted(total.items()))


def _dynamic_batching(config: Mapping) -> tuple[tuple[tuple[str, str], ...] | None, int]:
    """(flattened settings or None when off, queue timeout in microseconds)."""
    if "dynamic_batching" not in config:
        return None, 0
    db = _mapping(config["dynamic_batching"], "config dynamic_batching")
    policy = _mapping(db.get("default_queue_policy"), "config dynamic_batching.default_queue_policy")
    sizes = [_int(s, "config dynamic_batching.preferred_batch_size") for s in _list(db.get("preferred_batch_size"), "config dynamic_batching.preferred_batch_size")]
    settings = {
        "max_queue_delay_us": str(_int(db.get("max_queue_delay_microseconds"), "config dynamic_batching.max_queue_delay_microseconds")),
        "preferred_batch_size": "[" + ", ".join(str(s) for s in sorted(sizes)) + "]",
        "max_queue_size": str(_int(policy.get("max_queue_size"), "config dynamic_batching.default_queue_policy.max_queue_size")),
        "timeout_action": str(policy.get("timeout_action", "REJECT")),
        "preserve_ordering": "true" if db.get("preserve_ordering") else "false",
        "priority_levels": str(_int(db.get("priority_levels"), "config dynamic_batching.priority_levels")),
    }
    timeout = _int(policy.get("default_timeout_microseconds"), "config dynamic_batching.default_queue_policy.default_timeout_microseconds")
    return tuple(settings.items()), timeout


def _parameters(config: Mapping) -> tuple[tuple[str, str], ...]:
    params = _mapping(config.get("parameters"), "config parameters")
    out = []
    for key, value in params.items():
        value = _mapping(value, f"config parameters[{key!r}]")
        out.append((str(key), str(value.get("string_value", ""))))
    return tuple(sorted(out))


def model_view(metadata: Mapping, config: Mapping) -> ModelView:
    """The :class:`ModelView` of one model version from its metadata and config dicts (the
    config may also be the whole ``ModelConfigResponse`` dict, ``{"config": {...}}``)."""
    metadata = _mapping(metadata, "metadata")
    config = _mapping(config, "config")
    if "config" in config and isinstance(config["config"], Mapping) and "name" not in config:
        config = config["config"]
    name = metadata.get("name") or config.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("metadata name: missing")
    versions = _list(metadata.get("versions"), "metadata versions")
    optional = frozenset(
        str(_mapping(t, f"config input[{i}]").get("name", ""))
        for i, t in enumerate(_list(config.get("input"), "config input"))
        if _mapping(t, f"config input[{i}]").get("optional")
    )
    batching, queue_timeout = _dynamic_batching(config)
    policy = _mapping(config.get("model_transaction_policy"), "config model_transaction_policy")
    return ModelView(
        name=name,
        version=str(versions[0]) if len(versions) == 1 else "",
        backend=str(config.get("backend") or config.get("platform") or metadata.get("platform") or ""),
        max_batch_size=_int(config.get("max_batch_size"), "config max_batch_size"),
        inputs=_tensors(metadata, "inputs", optional),
        outputs=_tensors(metadata, "outputs", frozenset()),
        instance_groups=_instance_groups(config),
        dynamic_batching=batching,
        sequence_batching="sequence_batching" in config,
        decoupled=bool(policy.get("decoupled", False)),
        queue_timeout_us=queue_timeout,
        parameters=_parameters(config),
    )


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _shapes_compatible(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def _tensor_problems(kind: str, live: TensorSpec, shadow: TensorSpec) -> list[str]:
    out = []
    if live.datatype != shadow.datatype:
        out.append(f"{kind} {live.name!r}: datatype {shadow.datatype} in the shadow, {live.datatype} in live")
    if not _shapes_compatible(live.shape, shadow.shape):
        out.append(f"{kind} {live.name!r}: shape {_shape(shadow.shape)} in the shadow, {_shape(live.shape)} in live")
    return out


def contract_problems(live: ModelView, shadow: ModelView) -> list[str]:
    """Why ``shadow`` cannot be sent live's requests and compared with live (module docstring
    for the rules); an empty list when it can."""
    out: list[str] = []
    lb, sb = live.max_batch_size, shadow.max_batch_size
    if lb > 0 and sb == 0:
        out.append(f"max_batch_size: 0 in the shadow (no batching), {lb} in live: live's batched requests do not fit")
    elif lb > 0 and sb < lb:
        out.append(f"max_batch_size: {sb} in the shadow, {lb} in live: live's batches above {sb} would fail")
    elif lb == 0 and sb > 0:
        out.append(f"max_batch_size: {sb} in the shadow, 0 in live (no batching): the batch dimension differs")
    shadow_inputs = {t.name: t for t in shadow.inputs}
    live_inputs = {t.name for t in live.inputs}
    for t in live.inputs:
        s = shadow_inputs.get(t.name)
        if s is None:
            out.append(f"input {t.name!r}: missing in the shadow, {t.datatype} {_shape(t.shape)} in live")
        else:
            out.extend(_tensor_problems("input", t, s))
    for s in shadow.inputs:
        if not s.optional and s.name not in live_inputs:
            out.append(f"input {s.name!r}: required by the shadow ({s.datatype} {_shape(s.shape)}), not declared by live")
    shadow_outputs = {t.name: t for t in shadow.outputs}
    for t in live.outputs:
        s = shadow_outputs.get(t.name)
        if s is None:
            out.append(f"output {t.name!r}: missing in the shadow, {t.datatype} {_shape(t.shape)} in live")
        else:
            out.extend(_tensor_problems("output", t, s))
    return out


def _groups(groups: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{kind} x{count}" for kind, count in groups) or "none"


def _seconds(s: float) -> str:
    return f"{s:g} s"


def _batching(live: tuple[tuple[str, str], ...] | None, shadow: tuple[tuple[str, str], ...] | None) -> Mismatch | None:
    if live == shadow:
        return None
    if live is None or shadow is None:
        on = dict(shadow if live is None else live)  # type: ignore[arg-type]
        changed = ", ".join(f"{k}={v}" for k, v in on.items() if _BATCHING_DEFAULTS.get(k) != v)
        rendered = f"on ({changed})" if changed else "on"
        return Mismatch("dynamic_batching", "off", rendered) if live is None else Mismatch("dynamic_batching", rendered, "off")
    lv, sv = dict(live), dict(shadow)
    keys = [k for k in lv if lv[k] != sv.get(k)] + [k for k in sv if k not in lv]
    return Mismatch(
        "dynamic_batching",
        ", ".join(f"{k}={lv.get(k, '')}" for k in keys),
        ", ".join(f"{k}={sv.get(k, '')}" for k in keys),
    )


def parity_mismatches(
    live: ModelView,
    shadow: ModelView,
    live_deadline_s: float | None,
    shadow_deadline_s: float | None,
) -> list[Mismatch]:
    """The environment differences between live and ``shadow`` (module docstring for the items
    and their order); the deadlines are the front's effective ones for each (None: the caller's
    deadline, unchanged). An empty list when they match."""
    out: list[Mismatch] = []
    if live.instance_groups != shadow.instance_groups:
        out.append(Mismatch("instance_group", _groups(live.instance_groups), _groups(shadow.instance_groups)))
    batching = _batching(live.dynamic_batching, shadow.dynamic_batching)
    if batching is not None:
        out.append(batching)
    if live.backend != shadow.backend:
        out.append(Mismatch("backend", live.backend or "unknown", shadow.backend or "unknown"))
    if live.max_batch_size != shadow.max_batch_size:
        out.append(Mismatch("max_batch_size", str(live.max_batch_size), str(shadow.max_batch_size)))
    if live.queue_timeout_us != shadow.queue_timeout_us:
        out.append(
            Mismatch(
                "queue_timeout",
                _seconds(live.queue_timeout_us / 1e6) if live.queue_timeout_us else "none",
                _seconds(shadow.queue_timeout_us / 1e6) if shadow.queue_timeout_us else "none",
            )
        )
    if live_deadline_s != shadow_deadline_s:
        out.append(
            Mismatch(
                "deadline_s",
                "caller's" if live_deadline_s is None else _seconds(live_deadline_s),
                "caller's" if shadow_deadline_s is None else _seconds(shadow_deadline_s),
            )
        )
    if live.sequence_batching != shadow.sequence_batching:
        out.append(Mismatch("sequence_batching", "on" if live.sequence_batching else "off", "on" if shadow.sequence_batching else "off"))
    if live.decoupled != shadow.decoupled:
        out.append(Mismatch("decoupled", str(live.decoupled).lower(), str(shadow.decoupled).lower()))
    return out


def honours_shadow(view: ModelView) -> bool:
    """Whether the model's config declares that it skips side effects for shadow requests:
    parameter ``shadowgrpc_honours_shadow`` with string_value "true" (any case, spaces ignored)."""
    return dict(view.parameters).get(SHADOW_PARAMETER, "").strip().lower() == "true"
