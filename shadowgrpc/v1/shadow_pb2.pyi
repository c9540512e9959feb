from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReloadRequest(_message.Message):
    __slots__ = ("config_path", "config_toml")
    CONFIG_PATH_FIELD_NUMBER: _ClassVar[int]
    CONFIG_TOML_FIELD_NUMBER: _ClassVar[int]
    config_path: str
    config_toml: str
    def __init__(self, config_path: _Optional[str] = ..., config_toml: _Optional[str] = ...) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("applied", "changes")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    changes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, applied: _Optional[bool] = ..., changes: _Optional[_Iterable[str]] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("request_id", "labels", "values")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    labels: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, request_id: _Optional[str] = ..., labels: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class RecordOutcomesResponse(_message.Message):
    __slots__ = ("received", "accepted", "unknown", "duplicate", "mismatch", "reused", "rejected", "rejected_reasons")
    class RejectedReasonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REASONS_FIELD_NUMBER: _ClassVar[int]
    received: int
    accepted: int
    unknown: int
    duplicate: int
    mismatch: int
    reused: int
    rejected: int
    rejected_reasons: _containers.ScalarMap[str, int]
    def __init__(self, received: _Optional[int] = ..., accepted: _Optional[int] = ..., unknown: _Optional[int] = ..., duplicate: _Optional[int] = ..., mismatch: _Optional[int] = ..., reused: _Optional[int] = ..., rejected: _Optional[int] = ..., rejected_reasons: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetReportRequest(_message.Message):
    __slots__ = ("model", "snapshot")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    model: str
    snapshot: bool
    def __init__(self, model: _Optional[str] = ..., snapshot: _Optional[bool] = ...) -> None: ...

class ListRoutesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Target(_message.Message):
    __slots__ = ("name", "address", "model", "version", "sample_rate", "deadline_s", "max_in_flight", "noise_floor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    NOISE_FLOOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    model: str
    version: str
    sample_rate: float
    deadline_s: float
    max_in_flight: int
    noise_floor: bool
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., sample_rate: _Optional[float] = ..., deadline_s: _Optional[float] = ..., max_in_flight: _Optional[int] = ..., noise_floor: _Optional[bool] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("model", "live", "shadows")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    SHADOWS_FIELD_NUMBER: _ClassVar[int]
    model: str
    live: Target
    shadows: _containers.RepeatedCompositeFieldContainer[Target]
    def __init__(self, model: _Optional[str] = ..., live: _Optional[_Union[Target, _Mapping]] = ..., shadows: _Optional[_Iterable[_Union[Target, _Mapping]]] = ...) -> None: ...

class ListRoutesResponse(_message.Message):
    __slots__ = ("default_live", "routes")
    DEFAULT_LIVE_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    default_live: str
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, default_live: _Optional[str] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...

class LatencySummary(_message.Message):
    __slots__ = ("count", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms", "p90_ms", "p999_ms")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MS_FIELD_NUMBER: _ClassVar[int]
    P90_MS_FIELD_NUMBER: _ClassVar[int]
    P999_MS_FIELD_NUMBER: _ClassVar[int]
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    p90_ms: float
    p999_ms: float
    def __init__(self, count: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., mean_ms: _Optional[float] = ..., max_ms: _Optional[float] = ..., p90_ms: _Optional[float] = ..., p999_ms: _Optional[float] = ...) -> None: ...

class Divergence(_message.Message):
    __slots__ = ("kl_live_shadow", "kl_shadow_live", "js", "psi", "tv", "w1", "binned", "edges")
    KL_LIVE_SHADOW_FIELD_NUMBER: _ClassVar[int]
    KL_SHADOW_LIVE_FIELD_NUMBER: _ClassVar[int]
    JS_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    TV_FIELD_NUMBER: _ClassVar[int]
    W1_FIELD_NUMBER: _ClassVar[int]
    BINNED_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    kl_live_shadow: float
    kl_shadow_live: float
    js: float
    psi: float
    tv: float
    w1: float
    binned: int
    edges: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, kl_live_shadow: _Optional[float] = ..., kl_shadow_live: _Optional[float] = ..., js: _Optional[float] = ..., psi: _Optional[float] = ..., tv: _Optional[float] = ..., w1: _Optional[float] = ..., binned: _Optional[int] = ..., edges: _Optional[_Iterable[float]] = ...) -> None: ...

class SliceComparison(_message.Message):
    __slots__ = ("slice", "bucket", "rows", "agreement")
    SLICE_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    slice: str
    bucket: str
    rows: int
    agreement: float
    def __init__(self, slice: _Optional[str] = ..., bucket: _Optional[str] = ..., rows: _Optional[int] = ..., agreement: _Optional[float] = ...) -> None: ...

class OutputComparison(_message.Message):
    __slots__ = ("name", "kind", "rows", "agreed_rows", "agreement", "mean_abs_diff", "max_abs_diff", "drift", "n_classes", "confusion", "invalid_rows", "error_p50", "error_p90", "error_p99", "cosine_min", "threshold", "slices", "slice_rows_dropped", "shadow_invalid_rows", "live_invalid_rows", "probabilities", "text", "text_positions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    AGREED_ROWS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    N_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_FIELD_NUMBER: _ClassVar[int]
    INVALID_ROWS_FIELD_NUMBER: _ClassVar[int]
    ERROR_P50_FIELD_NUMBER: _ClassVar[int]
    ERROR_P90_FIELD_NUMBER: _ClassVar[int]
    ERROR_P99_FIELD_NUMBER: _ClassVar[int]
    COSINE_MIN_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    SLICE_ROWS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_INVALID_ROWS_FIELD_NUMBER: _ClassVar[int]
    LIVE_INVALID_ROWS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXT_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    rows: int
    agreed_rows: int
    agreement: float
    mean_abs_diff: float
    max_abs_diff: float
    drift: Divergence
    n_classes: int
    confusion: _containers.RepeatedScalarFieldContainer[int]
    invalid_rows: int
    error_p50: float
    error_p90: float
    error_p99: float
    cosine_min: float
    threshold: float
    slices: _containers.RepeatedCompositeFieldContainer[SliceComparison]
    slice_rows_dropped: int
    shadow_invalid_rows: int
    live_invalid_rows: int
    probabilities: bool
    text: TextComparison
    text_positions: _containers.RepeatedCompositeFieldContainer[TextPosition]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., rows: _Optional[int] = ..., agreed_rows: _Optional[int] = ..., agreement: _Optional[float] = ..., mean_abs_diff: _Optional[float] = ..., max_abs_diff: _Optional[float] = ..., drift: _Optional[_Union[Divergence, _Mapping]] = ..., n_classes: _Optional[int] = ..., confusion: _Optional[_Iterable[int]] = ..., invalid_rows: _Optional[int] = ..., error_p50: _Optional[float] = ..., error_p90: _Optional[float] = ..., error_p99: _Optional[float] = ..., cosine_min: _Optional[float] = ..., threshold: _Optional[float] = ..., slices: _Optional[_Iterable[_Union[SliceComparison, _Mapping]]] = ..., slice_rows_dropped: _Optional[int] = ..., shadow_invalid_rows: _Optional[int] = ..., live_invalid_rows: _Optional[int] = ..., probabilities: _Optional[bool] = ..., text: _Optional[_Union[TextComparison, _Mapping]] = ..., text_positions: _Optional[_Iterable[_Union[TextPosition, _Mapping]]] = ...) -> None: ...

class TextComparison(_message.Message):
    __slots__ = ("rows", "exact_matches", "exact_match_rate", "edit_distance_mean", "edit_distance_p50", "edit_distance_p90", "edit_distance_p99", "edit_distance_max", "edit_units_mean", "live_length_mean", "shadow_length_mean", "live_length_p50", "live_length_p90", "live_length_p99", "live_length_max", "shadow_length_p50", "shadow_length_p90", "shadow_length_p99", "shadow_length_max", "length_ratio_mean", "length_ratio_rows", "live_empty", "shadow_empty", "live_invalid_utf8", "shadow_invalid_utf8", "byte_rows", "truncated_rows", "edit_histogram")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    EXACT_MATCHES_FIELD_NUMBER: _ClassVar[int]
    EXACT_MATCH_RATE_FIELD_NUMBER: _ClassVar[int]
    EDIT_DISTANCE_MEAN_FIELD_NUMBER: _ClassVar[int]
    EDIT_DISTANCE_P50_FIELD_NUMBER: _ClassVar[int]
    EDIT_DISTANCE_P90_FIELD_NUMBER: _ClassVar[int]
    EDIT_DISTANCE_P99_FIELD_NUMBER: _ClassVar[int]
    EDIT_DISTANCE_MAX_FIELD_NUMBER: _ClassVar[int]
    EDIT_UNITS_MEAN_FIELD_NUMBER: _ClassVar[int]
    LIVE_LENGTH_MEAN_FIELD_NUMBER: _ClassVar[int]
    SHADOW_LENGTH_MEAN_FIELD_NUMBER: _ClassVar[int]
    LIVE_LENGTH_P50_FIELD_NUMBER: _ClassVar[int]
    LIVE_LENGTH_P90_FIELD_NUMBER: _ClassVar[int]
    LIVE_LENGTH_P99_FIELD_NUMBER: _ClassVar[int]
    LIVE_LENGTH_MAX_FIELD_NUMBER: _ClassVar[int]
    SHADOW_LENGTH_P50_FIELD_NUMBER: _ClassVar[int]
    SHADOW_LENGTH_P90_FIELD_NUMBER: _ClassVar[int]
    SHADOW_LENGTH_P99_FIELD_NUMBER: _ClassVar[int]
    SHADOW_LENGTH_MAX_FIELD_NUMBER: _ClassVar[int]
    LENGTH_RATIO_MEAN_FIELD_NUMBER: _ClassVar[int]
    LENGTH_RATIO_ROWS_FIELD_NUMBER: _ClassVar[int]
    LIVE_EMPTY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_EMPTY_FIELD_NUMBER: _ClassVar[int]
    LIVE_INVALID_UTF8_FIELD_NUMBER: _ClassVar[int]
    SHADOW_INVALID_UTF8_FIELD_NUMBER: _ClassVar[int]
    BYTE_ROWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_ROWS_FIELD_NUMBER: _ClassVar[int]
    EDIT_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    rows: int
    exact_matches: int
    exact_match_rate: float
    edit_distance_mean: float
    edit_distance_p50: float
    edit_distance_p90: float
    edit_distance_p99: float
    edit_distance_max: float
    edit_units_mean: float
    live_length_mean: float
    shadow_length_mean: float
    live_length_p50: int
    live_length_p90: int
    live_length_p99: int
    live_length_max: int
    shadow_length_p50: int
    shadow_length_p90: int
    shadow_length_p99: int
    shadow_length_max: int
    length_ratio_mean: float
    length_ratio_rows: int
    live_empty: int
    shadow_empty: int
    live_invalid_utf8: int
    shadow_invalid_utf8: int
    byte_rows: int
    truncated_rows: int
    edit_histogram: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, rows: _Optional[int] = ..., exact_matches: _Optional[int] = ..., exact_match_rate: _Optional[float] = ..., edit_distance_mean: _Optional[float] = ..., edit_distance_p50: _Optional[float] = ..., edit_distance_p90: _Optional[float] = ..., edit_distance_p99: _Optional[float] = ..., edit_distance_max: _Optional[float] = ..., edit_units_mean: _Optional[float] = ..., live_length_mean: _Optional[float] = ..., shadow_length_mean: _Optional[float] = ..., live_length_p50: _Optional[int] = ..., live_length_p90: _Optional[int] = ..., live_length_p99: _Optional[int] = ..., live_length_max: _Optional[int] = ..., shadow_length_p50: _Optional[int] = ..., shadow_length_p90: _Optional[int] = ..., shadow_length_p99: _Optional[int] = ..., shadow_length_max: _Optional[int] = ..., length_ratio_mean: _Optional[float] = ..., length_ratio_rows: _Optional[int] = ..., live_empty: _Optional[int] = ..., shadow_empty: _Optional[int] = ..., live_invalid_utf8: _Optional[int] = ..., shadow_invalid_utf8: _Optional[int] = ..., byte_rows: _Optional[int] = ..., truncated_rows: _Optional[int] = ..., edit_histogram: _Optional[_Iterable[int]] = ...) -> None: ...

class TextPosition(_message.Message):
    __slots__ = ("position", "and_later", "text")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    AND_LATER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    position: int
    and_later: bool
    text: TextComparison
    def __init__(self, position: _Optional[int] = ..., and_later: _Optional[bool] = ..., text: _Optional[_Union[TextComparison, _Mapping]] = ...) -> None: ...

class ComputeCost(_message.Message):
    __slots__ = ("available", "reason", "live_inferences", "shadow_inferences", "live_compute_ms", "shadow_compute_ms", "live_queue_ms", "shadow_queue_ms", "extra_compute_fraction", "window_s", "metrics")
    class Metrics(_message.Message):
        __slots__ = ("available", "reason", "live_inferences", "shadow_inferences", "live_compute_ms", "shadow_compute_ms", "live_queue_ms", "shadow_queue_ms", "extra_compute_fraction", "window_s", "hosts")
        AVAILABLE_FIELD_NUMBER: _ClassVar[int]
        REASON_FIELD_NUMBER: _ClassVar[int]
        LIVE_INFERENCES_FIELD_NUMBER: _ClassVar[int]
        SHADOW_INFERENCES_FIELD_NUMBER: _ClassVar[int]
        LIVE_COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
        SHADOW_COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
        LIVE_QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
        SHADOW_QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
        EXTRA_COMPUTE_FRACTION_FIELD_NUMBER: _ClassVar[int]
        WINDOW_S_FIELD_NUMBER: _ClassVar[int]
        HOSTS_FIELD_NUMBER: _ClassVar[int]
        available: bool
        reason: str
        live_inferences: int
        shadow_inferences: int
        live_compute_ms: float
        shadow_compute_ms: float
        live_queue_ms: float
        shadow_queue_ms: float
        extra_compute_fraction: float
        window_s: float
        hosts: _containers.RepeatedCompositeFieldContainer[ComputeCost.Host]
        def __init__(self, available: _Optional[bool] = ..., reason: _Optional[str] = ..., live_inferences: _Optional[int] = ..., shadow_inferences: _Optional[int] = ..., live_compute_ms: _Optional[float] = ..., shadow_compute_ms: _Optional[float] = ..., live_queue_ms: _Optional[float] = ..., shadow_queue_ms: _Optional[float] = ..., extra_compute_fraction: _Optional[float] = ..., window_s: _Optional[float] = ..., hosts: _Optional[_Iterable[_Union[ComputeCost.Host, _Mapping]]] = ...) -> None: ...
    class Host(_message.Message):
        __slots__ = ("metrics_url", "serves", "reason", "cpu_utilization", "cpu_memory_used_bytes", "gpus", "window_s")
        METRICS_URL_FIELD_NUMBER: _ClassVar[int]
        SERVES_FIELD_NUMBER: _ClassVar[int]
        REASON_FIELD_NUMBER: _ClassVar[int]
        CPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
        CPU_MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
        GPUS_FIELD_NUMBER: _ClassVar[int]
        WINDOW_S_FIELD_NUMBER: _ClassVar[int]
        metrics_url: str
        serves: str
        reason: str
        cpu_utilization: float
        cpu_memory_used_bytes: float
        gpus: _containers.RepeatedCompositeFieldContainer[ComputeCost.Gpu]
        window_s: float
        def __init__(self, metrics_url: _Optional[str] = ..., serves: _Optional[str] = ..., reason: _Optional[str] = ..., cpu_utilization: _Optional[float] = ..., cpu_memory_used_bytes: _Optional[float] = ..., gpus: _Optional[_Iterable[_Union[ComputeCost.Gpu, _Mapping]]] = ..., window_s: _Optional[float] = ...) -> None: ...
    class Gpu(_message.Message):
        __slots__ = ("uuid", "utilization", "energy_j", "mean_power_w", "memory_used_bytes")
        UUID_FIELD_NUMBER: _ClassVar[int]
        UTILIZATION_FIELD_NUMBER: _ClassVar[int]
        ENERGY_J_FIELD_NUMBER: _ClassVar[int]
        MEAN_POWER_W_FIELD_NUMBER: _ClassVar[int]
        MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
        uuid: str
        utilization: float
        energy_j: float
        mean_power_w: float
        memory_used_bytes: float
        def __init__(self, uuid: _Optional[str] = ..., utilization: _Optional[float] = ..., energy_j: _Optional[float] = ..., mean_power_w: _Optional[float] = ..., memory_used_bytes: _Optional[float] = ...) -> None: ...
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LIVE_INFERENCES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_INFERENCES_FIELD_NUMBER: _ClassVar[int]
    LIVE_COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    LIVE_QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_COMPUTE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    available: bool
    reason: str
    live_inferences: int
    shadow_inferences: int
    live_compute_ms: float
    shadow_compute_ms: float
    live_queue_ms: float
    shadow_queue_ms: float
    extra_compute_fraction: float
    window_s: float
    metrics: ComputeCost.Metrics
    def __init__(self, available: _Optional[bool] = ..., reason: _Optional[str] = ..., live_inferences: _Optional[int] = ..., shadow_inferences: _Optional[int] = ..., live_compute_ms: _Optional[float] = ..., shadow_compute_ms: _Optional[float] = ..., live_queue_ms: _Optional[float] = ..., shadow_queue_ms: _Optional[float] = ..., extra_compute_fraction: _Optional[float] = ..., window_s: _Optional[float] = ..., metrics: _Optional[_Union[ComputeCost.Metrics, _Mapping]] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("lo", "hi")
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    lo: float
    hi: float
    def __init__(self, lo: _Optional[float] = ..., hi: _Optional[float] = ...) -> None: ...

class ModelScore(_message.Message):
    __slots__ = ("rows", "accuracy", "accuracy_ci", "brier", "ece", "mae", "reliability", "invalid_rows")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_CI_FIELD_NUMBER: _ClassVar[int]
    BRIER_FIELD_NUMBER: _ClassVar[int]
    ECE_FIELD_NUMBER: _ClassVar[int]
    MAE_FIELD_NUMBER: _ClassVar[int]
    RELIABILITY_FIELD_NUMBER: _ClassVar[int]
    INVALID_ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    accuracy: float
    accuracy_ci: Interval
    brier: float
    ece: float
    mae: float
    reliability: _containers.RepeatedCompositeFieldContainer[ReliabilityBin]
    invalid_rows: int
    def __init__(self, rows: _Optional[int] = ..., accuracy: _Optional[float] = ..., accuracy_ci: _Optional[_Union[Interval, _Mapping]] = ..., brier: _Optional[float] = ..., ece: _Optional[float] = ..., mae: _Optional[float] = ..., reliability: _Optional[_Iterable[_Union[ReliabilityBin, _Mapping]]] = ..., invalid_rows: _Optional[int] = ...) -> None: ...

class ReliabilityBin(_message.Message):
    __slots__ = ("lo", "hi", "rows", "confidence", "accuracy")
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    lo: float
    hi: float
    rows: int
    confidence: float
    accuracy: float
    def __init__(self, lo: _Optional[float] = ..., hi: _Optional[float] = ..., rows: _Optional[int] = ..., confidence: _Optional[float] = ..., accuracy: _Optional[float] = ...) -> None: ...

class GroundTruth(_message.Message):
    __slots__ = ("kind", "rows", "live", "shadow", "improvements", "regressions", "both_right", "both_wrong", "improvement_rate", "regression_rate", "accuracy_delta", "shape_mismatch", "slices")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    IMPROVEMENTS_FIELD_NUMBER: _ClassVar[int]
    REGRESSIONS_FIELD_NUMBER: _ClassVar[int]
    BOTH_RIGHT_FIELD_NUMBER: _ClassVar[int]
    BOTH_WRONG_FIELD_NUMBER: _ClassVar[int]
    IMPROVEMENT_RATE_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_RATE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_DELTA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    kind: str
    rows: int
    live: ModelScore
    shadow: ModelScore
    improvements: int
    regressions: int
    both_right: int
    both_wrong: int
    improvement_rate: Interval
    regression_rate: Interval
    accuracy_delta: float
    shape_mismatch: int
    slices: _containers.RepeatedCompositeFieldContainer[SliceGroundTruth]
    def __init__(self, kind: _Optional[str] = ..., rows: _Optional[int] = ..., live: _Optional[_Union[ModelScore, _Mapping]] = ..., shadow: _Optional[_Union[ModelScore, _Mapping]] = ..., improvements: _Optional[int] = ..., regressions: _Optional[int] = ..., both_right: _Optional[int] = ..., both_wrong: _Optional[int] = ..., improvement_rate: _Optional[_Union[Interval, _Mapping]] = ..., regression_rate: _Optional[_Union[Interval, _Mapping]] = ..., accuracy_delta: _Optional[float] = ..., shape_mismatch: _Optional[int] = ..., slices: _Optional[_Iterable[_Union[SliceGroundTruth, _Mapping]]] = ...) -> None: ...

class SliceGroundTruth(_message.Message):
    __slots__ = ("slice", "bucket", "truth")
    SLICE_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    TRUTH_FIELD_NUMBER: _ClassVar[int]
    slice: str
    bucket: str
    truth: GroundTruth
    def __init__(self, slice: _Optional[str] = ..., bucket: _Optional[str] = ..., truth: _Optional[_Union[GroundTruth, _Mapping]] = ...) -> None: ...

class OutcomeStore(_message.Message):
    __slots__ = ("waiting", "stored", "evicted_full", "evicted_expired", "unknown", "duplicate", "mismatch", "max_pairs", "ttl_s", "evicted_bytes", "bytes", "max_bytes", "reused_ids", "reused", "rejected", "rejected_reasons")
    class RejectedReasonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    WAITING_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FULL_FIELD_NUMBER: _ClassVar[int]
    EVICTED_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_PAIRS_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    EVICTED_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    REUSED_IDS_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REASONS_FIELD_NUMBER: _ClassVar[int]
    waiting: int
    stored: int
    evicted_full: int
    evicted_expired: int
    unknown: int
    duplicate: int
    mismatch: int
    max_pairs: int
    ttl_s: float
    evicted_bytes: int
    bytes: int
    max_bytes: int
    reused_ids: int
    reused: int
    rejected: int
    rejected_reasons: _containers.ScalarMap[str, int]
    def __init__(self, waiting: _Optional[int] = ..., stored: _Optional[int] = ..., evicted_full: _Optional[int] = ..., evicted_expired: _Optional[int] = ..., unknown: _Optional[int] = ..., duplicate: _Optional[int] = ..., mismatch: _Optional[int] = ..., max_pairs: _Optional[int] = ..., ttl_s: _Optional[float] = ..., evicted_bytes: _Optional[int] = ..., bytes: _Optional[int] = ..., max_bytes: _Optional[int] = ..., reused_ids: _Optional[int] = ..., reused: _Optional[int] = ..., rejected: _Optional[int] = ..., rejected_reasons: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Gate(_message.Message):
    __slots__ = ("name", "status", "reason", "value", "threshold")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: str
    reason: str
    value: float
    threshold: float
    def __init__(self, name: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("decision", "gates", "checklist", "reason", "paused_until")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    CHECKLIST_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAUSED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    decision: str
    gates: _containers.RepeatedCompositeFieldContainer[Gate]
    checklist: _containers.RepeatedCompositeFieldContainer[ChecklistItem]
    reason: str
    paused_until: float
    def __init__(self, decision: _Optional[str] = ..., gates: _Optional[_Iterable[_Union[Gate, _Mapping]]] = ..., checklist: _Optional[_Iterable[_Union[ChecklistItem, _Mapping]]] = ..., reason: _Optional[str] = ..., paused_until: _Optional[float] = ...) -> None: ...

class ShadowBudget(_message.Message):
    __slots__ = ("per", "requests_limit", "bytes_limit", "compute_s_limit", "requests_used", "bytes_used", "compute_s_used", "period_start", "period_end", "paused", "paused_reason", "paused_at", "paused_until", "refused", "replicas", "replicas_paused", "total_requests", "total_bytes", "total_compute_s", "estimate")
    PER_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    BYTES_LIMIT_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_USED_FIELD_NUMBER: _ClassVar[int]
    BYTES_USED_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_USED_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_REASON_FIELD_NUMBER: _ClassVar[int]
    PAUSED_AT_FIELD_NUMBER: _ClassVar[int]
    PAUSED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_PAUSED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    per: str
    requests_limit: int
    bytes_limit: int
    compute_s_limit: float
    requests_used: int
    bytes_used: int
    compute_s_used: float
    period_start: float
    period_end: float
    paused: bool
    paused_reason: str
    paused_at: float
    paused_until: float
    refused: int
    replicas: int
    replicas_paused: int
    total_requests: int
    total_bytes: int
    total_compute_s: float
    estimate: BudgetEstimate
    def __init__(self, per: _Optional[str] = ..., requests_limit: _Optional[int] = ..., bytes_limit: _Optional[int] = ..., compute_s_limit: _Optional[float] = ..., requests_used: _Optional[int] = ..., bytes_used: _Optional[int] = ..., compute_s_used: _Optional[float] = ..., period_start: _Optional[float] = ..., period_end: _Optional[float] = ..., paused: _Optional[bool] = ..., paused_reason: _Optional[str] = ..., paused_at: _Optional[float] = ..., paused_until: _Optional[float] = ..., refused: _Optional[int] = ..., replicas: _Optional[int] = ..., replicas_paused: _Optional[int] = ..., total_requests: _Optional[int] = ..., total_bytes: _Optional[int] = ..., total_compute_s: _Optional[float] = ..., estimate: _Optional[_Union[BudgetEstimate, _Mapping]] = ...) -> None: ...

class BudgetEstimate(_message.Message):
    __slots__ = ("known", "calls_per_s", "bytes_per_s", "compute_s_per_s", "pairs_per_s", "outcomes_per_s", "spent_in_s", "active_fraction", "enough_data_in_s", "text", "warning")
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    CALLS_PER_S_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_PER_S_FIELD_NUMBER: _ClassVar[int]
    PAIRS_PER_S_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_PER_S_FIELD_NUMBER: _ClassVar[int]
    SPENT_IN_S_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    ENOUGH_DATA_IN_S_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    known: bool
    calls_per_s: float
    bytes_per_s: float
    compute_s_per_s: float
    pairs_per_s: float
    outcomes_per_s: float
    spent_in_s: float
    active_fraction: float
    enough_data_in_s: float
    text: str
    warning: str
    def __init__(self, known: _Optional[bool] = ..., calls_per_s: _Optional[float] = ..., bytes_per_s: _Optional[float] = ..., compute_s_per_s: _Optional[float] = ..., pairs_per_s: _Optional[float] = ..., outcomes_per_s: _Optional[float] = ..., spent_in_s: _Optional[float] = ..., active_fraction: _Optional[float] = ..., enough_data_in_s: _Optional[float] = ..., text: _Optional[str] = ..., warning: _Optional[str] = ...) -> None: ...

class ChecklistItem(_message.Message):
    __slots__ = ("name", "status", "evidence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: str
    evidence: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[str] = ..., evidence: _Optional[str] = ...) -> None: ...

class ParityMismatch(_message.Message):
    __slots__ = ("item", "live", "shadow")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    item: str
    live: str
    shadow: str
    def __init__(self, item: _Optional[str] = ..., live: _Optional[str] = ..., shadow: _Optional[str] = ...) -> None: ...

class Window(_message.Message):
    __slots__ = ("opened", "closed", "closed_reason", "auto")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    CLOSED_REASON_FIELD_NUMBER: _ClassVar[int]
    AUTO_FIELD_NUMBER: _ClassVar[int]
    opened: float
    closed: float
    closed_reason: str
    auto: bool
    def __init__(self, opened: _Optional[float] = ..., closed: _Optional[float] = ..., closed_reason: _Optional[str] = ..., auto: _Optional[bool] = ...) -> None: ...

class ShadowReport(_message.Message):
    __slots__ = ("target", "sampled", "sent", "ok", "shed", "errors", "compared", "contract_mismatch", "outputs", "latency", "live_failed", "in_flight", "down", "cost", "ground_truth", "verdict", "drift_edges_differ", "internal_errors", "status", "status_reason", "not_ready", "window", "contract_problems", "parity", "sequences_mirrored", "sequences_shed_midway", "sequence_requests_excluded", "stream_requests", "stream_responses_paired", "stream_response_count_mismatch", "sequences_seen_midway", "sequences_evicted", "sequences_over_bound", "budget", "capacity")
    class ErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    SHED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    LIVE_FAILED_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DOWN_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    GROUND_TRUTH_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    DRIFT_EDGES_DIFFER_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_ERRORS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    NOT_READY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    PARITY_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_MIRRORED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_SHED_MIDWAY_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_REQUESTS_EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    STREAM_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    STREAM_RESPONSES_PAIRED_FIELD_NUMBER: _ClassVar[int]
    STREAM_RESPONSE_COUNT_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_SEEN_MIDWAY_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_EVICTED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_OVER_BOUND_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    target: Target
    sampled: int
    sent: int
    ok: int
    shed: int
    errors: _containers.ScalarMap[str, int]
    compared: int
    contract_mismatch: int
    outputs: _containers.RepeatedCompositeFieldContainer[OutputComparison]
    latency: LatencySummary
    live_failed: int
    in_flight: int
    down: int
    cost: ComputeCost
    ground_truth: GroundTruth
    verdict: Verdict
    drift_edges_differ: int
    internal_errors: int
    status: str
    status_reason: str
    not_ready: int
    window: Window
    contract_problems: _containers.RepeatedScalarFieldContainer[str]
    parity: _containers.RepeatedCompositeFieldContainer[ParityMismatch]
    sequences_mirrored: int
    sequences_shed_midway: int
    sequence_requests_excluded: int
    stream_requests: int
    stream_responses_paired: int
    stream_response_count_mismatch: int
    sequences_seen_midway: int
    sequences_evicted: int
    sequences_over_bound: int
    budget: ShadowBudget
    capacity: Capacity
    def __init__(self, target: _Optional[_Union[Target, _Mapping]] = ..., sampled: _Optional[int] = ..., sent: _Optional[int] = ..., ok: _Optional[int] = ..., shed: _Optional[int] = ..., errors: _Optional[_Mapping[str, int]] = ..., compared: _Optional[int] = ..., contract_mismatch: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[OutputComparison, _Mapping]]] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., live_failed: _Optional[int] = ..., in_flight: _Optional[int] = ..., down: _Optional[int] = ..., cost: _Optional[_Union[ComputeCost, _Mapping]] = ..., ground_truth: _Optional[_Union[GroundTruth, _Mapping]] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ..., drift_edges_differ: _Optional[int] = ..., internal_errors: _Optional[int] = ..., status: _Optional[str] = ..., status_reason: _Optional[str] = ..., not_ready: _Optional[int] = ..., window: _Optional[_Union[Window, _Mapping]] = ..., contract_problems: _Optional[_Iterable[str]] = ..., parity: _Optional[_Iterable[_Union[ParityMismatch, _Mapping]]] = ..., sequences_mirrored: _Optional[int] = ..., sequences_shed_midway: _Optional[int] = ..., sequence_requests_excluded: _Optional[int] = ..., stream_requests: _Optional[int] = ..., stream_responses_paired: _Optional[int] = ..., stream_response_count_mismatch: _Optional[int] = ..., sequences_seen_midway: _Optional[int] = ..., sequences_evicted: _Optional[int] = ..., sequences_over_bound: _Optional[int] = ..., budget: _Optional[_Union[ShadowBudget, _Mapping]] = ..., capacity: _Optional[_Union[Capacity, _Mapping]] = ...) -> None: ...

class Capacity(_message.Message):
    __slots__ = ("amplify", "constant_qps", "window_s", "levels", "headroom", "headroom_multiple", "latency_limit_ms", "latency_limit_source", "min_answers", "copies_sent", "copies_ok", "copies_errors", "copies_shed", "copies_down", "qps_queued", "qps_released", "qps_dropped", "qps_filled", "qps_not_started", "qps_ticks_skipped", "qps_waiting", "compute_ms_per_inference")
    class CopiesErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    AMPLIFY_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_QPS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_LIMIT_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_LIMIT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    MIN_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    COPIES_SENT_FIELD_NUMBER: _ClassVar[int]
    COPIES_OK_FIELD_NUMBER: _ClassVar[int]
    COPIES_ERRORS_FIELD_NUMBER: _ClassVar[int]
    COPIES_SHED_FIELD_NUMBER: _ClassVar[int]
    COPIES_DOWN_FIELD_NUMBER: _ClassVar[int]
    QPS_QUEUED_FIELD_NUMBER: _ClassVar[int]
    QPS_RELEASED_FIELD_NUMBER: _ClassVar[int]
    QPS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    QPS_FILLED_FIELD_NUMBER: _ClassVar[int]
    QPS_NOT_STARTED_FIELD_NUMBER: _ClassVar[int]
    QPS_TICKS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    QPS_WAITING_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_PER_INFERENCE_FIELD_NUMBER: _ClassVar[int]
    amplify: int
    constant_qps: float
    window_s: float
    levels: _containers.RepeatedCompositeFieldContainer[CapacityLevel]
    headroom: str
    headroom_multiple: float
    latency_limit_ms: float
    latency_limit_source: str
    min_answers: int
    copies_sent: int
    copies_ok: int
    copies_errors: _containers.ScalarMap[str, int]
    copies_shed: int
    copies_down: int
    qps_queued: int
    qps_released: int
    qps_dropped: int
    qps_filled: int
    qps_not_started: int
    qps_ticks_skipped: int
    qps_waiting: int
    compute_ms_per_inference: float
    def __init__(self, amplify: _Optional[int] = ..., constant_qps: _Optional[float] = ..., window_s: _Optional[float] = ..., levels: _Optional[_Iterable[_Union[CapacityLevel, _Mapping]]] = ..., headroom: _Optional[str] = ..., headroom_multiple: _Optional[float] = ..., latency_limit_ms: _Optional[float] = ..., latency_limit_source: _Optional[str] = ..., min_answers: _Optional[int] = ..., copies_sent: _Optional[int] = ..., copies_ok: _Optional[int] = ..., copies_errors: _Optional[_Mapping[str, int]] = ..., copies_shed: _Optional[int] = ..., copies_down: _Optional[int] = ..., qps_queued: _Optional[int] = ..., qps_released: _Optional[int] = ..., qps_dropped: _Optional[int] = ..., qps_filled: _Optional[int] = ..., qps_not_started: _Optional[int] = ..., qps_ticks_skipped: _Optional[int] = ..., qps_waiting: _Optional[int] = ..., compute_ms_per_inference: _Optional[float] = ...) -> None: ...

class CapacityLevel(_message.Message):
    __slots__ = ("label", "multiple", "measured_multiple", "offered_rps", "live_rps", "time_share", "windows", "calls", "answered", "errors", "latency", "enough_data", "holds")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    MEASURED_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    OFFERED_RPS_FIELD_NUMBER: _ClassVar[int]
    LIVE_RPS_FIELD_NUMBER: _ClassVar[int]
    TIME_SHARE_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    ENOUGH_DATA_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    label: str
    multiple: float
    measured_multiple: float
    offered_rps: float
    live_rps: float
    time_share: float
    windows: int
    calls: int
    answered: int
    errors: int
    latency: LatencySummary
    enough_data: bool
    holds: bool
    def __init__(self, label: _Optional[str] = ..., multiple: _Optional[float] = ..., measured_multiple: _Optional[float] = ..., offered_rps: _Optional[float] = ..., live_rps: _Optional[float] = ..., time_share: _Optional[float] = ..., windows: _Optional[int] = ..., calls: _Optional[int] = ..., answered: _Optional[int] = ..., errors: _Optional[int] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., enough_data: _Optional[bool] = ..., holds: _Optional[bool] = ...) -> None: ...

class AutoShadow(_message.Message):
    __slots__ = ("policy", "poll_s", "load", "last_poll", "last_error", "swaps", "candidates", "last_load_s")
    class Candidate(_message.Message):
        __slots__ = ("version", "state", "decision", "reason", "seen", "decided")
        VERSION_FIELD_NUMBER: _ClassVar[int]
        STATE_FIELD_NUMBER: _ClassVar[int]
        DECISION_FIELD_NUMBER: _ClassVar[int]
        REASON_FIELD_NUMBER: _ClassVar[int]
        SEEN_FIELD_NUMBER: _ClassVar[int]
        DECIDED_FIELD_NUMBER: _ClassVar[int]
        version: str
        state: str
        decision: str
        reason: str
        seen: float
        decided: float
        def __init__(self, version: _Optional[str] = ..., state: _Optional[str] = ..., decision: _Optional[str] = ..., reason: _Optional[str] = ..., seen: _Optional[float] = ..., decided: _Optional[float] = ...) -> None: ...
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLL_S_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LAST_POLL_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    SWAPS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    LAST_LOAD_S_FIELD_NUMBER: _ClassVar[int]
    policy: str
    poll_s: float
    load: bool
    last_poll: float
    last_error: str
    swaps: int
    candidates: _containers.RepeatedCompositeFieldContainer[AutoShadow.Candidate]
    last_load_s: float
    def __init__(self, policy: _Optional[str] = ..., poll_s: _Optional[float] = ..., load: _Optional[bool] = ..., last_poll: _Optional[float] = ..., last_error: _Optional[str] = ..., swaps: _Optional[int] = ..., candidates: _Optional[_Iterable[_Union[AutoShadow.Candidate, _Mapping]]] = ..., last_load_s: _Optional[float] = ...) -> None: ...

class Coverage(_message.Message):
    __slots__ = ("slice", "bucket", "requests", "mirrored")
    SLICE_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MIRRORED_FIELD_NUMBER: _ClassVar[int]
    slice: str
    bucket: str
    requests: int
    mirrored: int
    def __init__(self, slice: _Optional[str] = ..., bucket: _Optional[str] = ..., requests: _Optional[int] = ..., mirrored: _Optional[int] = ...) -> None: ...

class InputCompleteness(_message.Message):
    __slots__ = ("name", "requests", "values", "nan", "inf", "empty_strings", "dtype_mismatch", "shape_mismatch", "missing", "undeclared")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    NAN_FIELD_NUMBER: _ClassVar[int]
    INF_FIELD_NUMBER: _ClassVar[int]
    EMPTY_STRINGS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    SHAPE_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    UNDECLARED_FIELD_NUMBER: _ClassVar[int]
    name: str
    requests: int
    values: int
    nan: int
    inf: int
    empty_strings: int
    dtype_mismatch: int
    shape_mismatch: int
    missing: int
    undeclared: int
    def __init__(self, name: _Optional[str] = ..., requests: _Optional[int] = ..., values: _Optional[int] = ..., nan: _Optional[int] = ..., inf: _Optional[int] = ..., empty_strings: _Optional[int] = ..., dtype_mismatch: _Optional[int] = ..., shape_mismatch: _Optional[int] = ..., missing: _Optional[int] = ..., undeclared: _Optional[int] = ...) -> None: ...

class RouteReport(_message.Message):
    __slots__ = ("model", "live", "requests", "live_ok", "live_errors", "shm_not_mirrored", "live_latency", "shadows", "inputs", "inputs_not_checked", "inputs_metadata_error", "front_added", "sketch_bytes", "explicit_version_not_mirrored", "auto", "coverage", "sequences", "stream_requests", "stream_unpairable", "ledger", "too_large", "excluded", "nway")
    class LiveErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ExcludedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LIVE_OK_FIELD_NUMBER: _ClassVar[int]
    LIVE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    SHM_NOT_MIRRORED_FIELD_NUMBER: _ClassVar[int]
    LIVE_LATENCY_FIELD_NUMBER: _ClassVar[int]
    SHADOWS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_NOT_CHECKED_FIELD_NUMBER: _ClassVar[int]
    INPUTS_METADATA_ERROR_FIELD_NUMBER: _ClassVar[int]
    FRONT_ADDED_FIELD_NUMBER: _ClassVar[int]
    SKETCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPLICIT_VERSION_NOT_MIRRORED_FIELD_NUMBER: _ClassVar[int]
    AUTO_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    STREAM_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    STREAM_UNPAIRABLE_FIELD_NUMBER: _ClassVar[int]
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    TOO_LARGE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    NWAY_FIELD_NUMBER: _ClassVar[int]
    model: str
    live: Target
    requests: int
    live_ok: int
    live_errors: _containers.ScalarMap[str, int]
    shm_not_mirrored: int
    live_latency: LatencySummary
    shadows: _containers.RepeatedCompositeFieldContainer[ShadowReport]
    inputs: _containers.RepeatedCompositeFieldContainer[InputCompleteness]
    inputs_not_checked: int
    inputs_metadata_error: str
    front_added: LatencySummary
    sketch_bytes: int
    explicit_version_not_mirrored: int
    auto: AutoShadow
    coverage: _containers.RepeatedCompositeFieldContainer[Coverage]
    sequences: int
    stream_requests: int
    stream_unpairable: int
    ledger: _containers.RepeatedCompositeFieldContainer[LedgerRow]
    too_large: int
    excluded: _containers.ScalarMap[str, int]
    nway: NWay
    def __init__(self, model: _Optional[str] = ..., live: _Optional[_Union[Target, _Mapping]] = ..., requests: _Optional[int] = ..., live_ok: _Optional[int] = ..., live_errors: _Optional[_Mapping[str, int]] = ..., shm_not_mirrored: _Optional[int] = ..., live_latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., shadows: _Optional[_Iterable[_Union[ShadowReport, _Mapping]]] = ..., inputs: _Optional[_Iterable[_Union[InputCompleteness, _Mapping]]] = ..., inputs_not_checked: _Optional[int] = ..., inputs_metadata_error: _Optional[str] = ..., front_added: _Optional[_Union[LatencySummary, _Mapping]] = ..., sketch_bytes: _Optional[int] = ..., explicit_version_not_mirrored: _Optional[int] = ..., auto: _Optional[_Union[AutoShadow, _Mapping]] = ..., coverage: _Optional[_Iterable[_Union[Coverage, _Mapping]]] = ..., sequences: _Optional[int] = ..., stream_requests: _Optional[int] = ..., stream_unpairable: _Optional[int] = ..., ledger: _Optional[_Iterable[_Union[LedgerRow, _Mapping]]] = ..., too_large: _Optional[int] = ..., excluded: _Optional[_Mapping[str, int]] = ..., nway: _Optional[_Union[NWay, _Mapping]] = ...) -> None: ...

class NWay(_message.Message):
    __slots__ = ("targets", "requests", "rows", "incomplete", "truth_rows", "ranked_by", "ranking", "pairs")
    class IncompleteEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    INCOMPLETE_FIELD_NUMBER: _ClassVar[int]
    TRUTH_ROWS_FIELD_NUMBER: _ClassVar[int]
    RANKED_BY_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedScalarFieldContainer[str]
    requests: int
    rows: int
    incomplete: _containers.ScalarMap[str, int]
    truth_rows: int
    ranked_by: str
    ranking: _containers.RepeatedCompositeFieldContainer[NWayModel]
    pairs: _containers.RepeatedCompositeFieldContainer[NWayPair]
    def __init__(self, targets: _Optional[_Iterable[str]] = ..., requests: _Optional[int] = ..., rows: _Optional[int] = ..., incomplete: _Optional[_Mapping[str, int]] = ..., truth_rows: _Optional[int] = ..., ranked_by: _Optional[str] = ..., ranking: _Optional[_Iterable[_Union[NWayModel, _Mapping]]] = ..., pairs: _Optional[_Iterable[_Union[NWayPair, _Mapping]]] = ...) -> None: ...

class NWayModel(_message.Message):
    __slots__ = ("name", "rank", "agree_rows", "agreement", "agreement_ci", "correct", "accuracy", "accuracy_ci", "ahead_of_next", "latency_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    AGREE_ROWS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_CI_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_CI_FIELD_NUMBER: _ClassVar[int]
    AHEAD_OF_NEXT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    rank: int
    agree_rows: int
    agreement: float
    agreement_ci: Interval
    correct: int
    accuracy: float
    accuracy_ci: Interval
    ahead_of_next: bool
    latency_s: float
    def __init__(self, name: _Optional[str] = ..., rank: _Optional[int] = ..., agree_rows: _Optional[int] = ..., agreement: _Optional[float] = ..., agreement_ci: _Optional[_Union[Interval, _Mapping]] = ..., correct: _Optional[int] = ..., accuracy: _Optional[float] = ..., accuracy_ci: _Optional[_Union[Interval, _Mapping]] = ..., ahead_of_next: _Optional[bool] = ..., latency_s: _Optional[float] = ...) -> None: ...

class NWayPair(_message.Message):
    __slots__ = ("a", "b", "metric", "a_only", "b_only", "delta", "ci", "n")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    A_ONLY_FIELD_NUMBER: _ClassVar[int]
    B_ONLY_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CI_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    a: str
    b: str
    metric: str
    a_only: int
    b_only: int
    delta: float
    ci: Interval
    n: int
    def __init__(self, a: _Optional[str] = ..., b: _Optional[str] = ..., metric: _Optional[str] = ..., a_only: _Optional[int] = ..., b_only: _Optional[int] = ..., delta: _Optional[float] = ..., ci: _Optional[_Union[Interval, _Mapping]] = ..., n: _Optional[int] = ...) -> None: ...

class LedgerRow(_message.Message):
    __slots__ = ("target", "reason", "requests")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    target: str
    reason: str
    requests: int
    def __init__(self, target: _Optional[str] = ..., reason: _Optional[str] = ..., requests: _Optional[int] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("version", "uptime_s", "unrouted_requests", "unparsed_requests", "routes", "stream_messages", "outcomes", "replicas", "snapshot", "log", "source")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    UNROUTED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    UNPARSED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    STREAM_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    version: str
    uptime_s: float
    unrouted_requests: int
    unparsed_requests: int
    routes: _containers.RepeatedCompositeFieldContainer[RouteReport]
    stream_messages: int
    outcomes: OutcomeStore
    replicas: int
    snapshot: bytes
    log: PairLog
    source: str
    def __init__(self, version: _Optional[str] = ..., uptime_s: _Optional[float] = ..., unrouted_requests: _Optional[int] = ..., unparsed_requests: _Optional[int] = ..., routes: _Optional[_Iterable[_Union[RouteReport, _Mapping]]] = ..., stream_messages: _Optional[int] = ..., outcomes: _Optional[_Union[OutcomeStore, _Mapping]] = ..., replicas: _Optional[int] = ..., snapshot: _Optional[bytes] = ..., log: _Optional[_Union[PairLog, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class PairLog(_message.Message):
    __slots__ = ("path", "rows_written", "rows_shed", "rows_dropped", "outcomes_written", "files_written", "files_deleted", "bytes_deleted", "bytes_on_disk", "write_errors", "last_error", "stopped", "sample_rate")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ROWS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    ROWS_SHED_FIELD_NUMBER: _ClassVar[int]
    ROWS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    FILES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    FILES_DELETED_FIELD_NUMBER: _ClassVar[int]
    BYTES_DELETED_FIELD_NUMBER: _ClassVar[int]
    BYTES_ON_DISK_FIELD_NUMBER: _ClassVar[int]
    WRITE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    path: str
    rows_written: int
    rows_shed: int
    rows_dropped: int
    outcomes_written: int
    files_written: int
    files_deleted: int
    bytes_deleted: int
    bytes_on_disk: int
    write_errors: int
    last_error: str
    stopped: bool
    sample_rate: float
    def __init__(self, path: _Optional[str] = ..., rows_written: _Optional[int] = ..., rows_shed: _Optional[int] = ..., rows_dropped: _Optional[int] = ..., outcomes_written: _Optional[int] = ..., files_written: _Optional[int] = ..., files_deleted: _Optional[int] = ..., bytes_deleted: _Optional[int] = ..., bytes_on_disk: _Optional[int] = ..., write_errors: _Optional[int] = ..., last_error: _Optional[str] = ..., stopped: _Optional[bool] = ..., sample_rate: _Optional[float] = ...) -> None: ...

class ObservedPair(_message.Message):
    __slots__ = ("route", "target", "request", "live_response", "live_status", "live_latency_s", "shadow_response", "shadow_status", "shadow_latency_s")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    LIVE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    LIVE_STATUS_FIELD_NUMBER: _ClassVar[int]
    LIVE_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    SHADOW_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_STATUS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    route: str
    target: str
    request: bytes
    live_response: bytes
    live_status: str
    live_latency_s: float
    shadow_response: bytes
    shadow_status: str
    shadow_latency_s: float
    def __init__(self, route: _Optional[str] = ..., target: _Optional[str] = ..., request: _Optional[bytes] = ..., live_response: _Optional[bytes] = ..., live_status: _Optional[str] = ..., live_latency_s: _Optional[float] = ..., shadow_response: _Optional[bytes] = ..., shadow_status: _Optional[str] = ..., shadow_latency_s: _Optional[float] = ...) -> None: ...

class ObservedPairs(_message.Message):
    __slots__ = ("pairs",)
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[ObservedPair]
    def __init__(self, pairs: _Optional[_Iterable[_Union[ObservedPair, _Mapping]]] = ...) -> None: ...

class ReportPairsResponse(_message.Message):
    __slots__ = ("received", "accepted", "rejected", "rejected_reasons")
    class RejectedReasonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REASONS_FIELD_NUMBER: _ClassVar[int]
    received: int
    accepted: int
    rejected: int
    rejected_reasons: _containers.ScalarMap[str, int]
    def __init__(self, received: _Optional[int] = ..., accepted: _Optional[int] = ..., rejected: _Optional[int] = ..., rejected_reasons: _Optional[_Mapping[str, int]] = ...) -> None: ...
