"""The paired-prediction log's tables: Arrow schemas, the record the front hands the writer, and
the file layout. Documented for users in the README ("The paired-prediction log").

Two file sets under ``[log] path``, Hive-partitioned so DuckDB, Spark and Trino read each as one
table (``hive_partitioning``; the partition columns are in the path only, never in the files):

    PATH/pairs/route=<model>/date=YYYY-MM-DD/hour=HH/part-<writer>-<n>.parquet
    PATH/outcomes/date=YYYY-MM-DD/hour=HH/part-<writer>-<n>.parquet

A file is written as ``.<name>.tmp`` and renamed when complete: a reader never sees a torn file.
``<writer>`` names the process that wrote it (host, pid, worker), so several fronts or workers
write into the same table. Every file's key-value metadata holds ``shadowgrpc.schema_version``,
``shadowgrpc.table`` and (pairs) ``shadowgrpc.routes``: the routes' config (JSON, as snapshots
store it), so an analysis knows each output's kind, edges, slices and gates without the config.

pairs: one row per (request, shadow target) of a routed request whose route has shadows, whether
it was mirrored or not (``mirror`` says why not), so live figures and the sampled share can be
recomputed. Rows of a request share ``writer`` + ``request_seq``; its ``first_row`` (the row of
its lowest ``target_index``) is the row to count it by for route-level figures. ``target_index`` is
the target's position in the route's comparison windows (auto-shadow appends them, so a request's
rows may be e.g. index 2 alone); rows name the target, so windows not in ``shadowgrpc.routes`` are
known by their rows. Version 1 files have no ``first_row``: there it is ``target_index = 0``
(readers: ``coalesce(first_row, target_index = 0)``, analysis/sql.py ``FIRST_ROW``).
outcomes: one row per outcome message received by RecordOutcomes, with the online join's result.
"""

from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa

SCHEMA_VERSION = 2  # 2: first_row
META_VERSION = b"shadowgrpc.schema_version"
META_TABLE = b"shadowgrpc.table"
META_ROUTES = b"shadowgrpc.routes"

# How a request's row came to be (the ``mirror`` column).
SENT = "sent"
NOT_SAMPLED = "not_sampled"
SHED = "shed"
DOWN = "down"
SHM = "shared_memory"  # inputs in shared memory: never mirrored
EXPLICIT_VERSION = "explicit_version"  # the caller named another version than the pinned one
NOT_READY = "not_ready"  # the target was NOT_READY or INCOMPATIBLE (not checked, refused, gone)
EXCLUDED = "excluded"  # a [routes.mirror] rule kept it on live (rules.py): "excluded: <rule>", or "not included" / "unreadable"
TOO_LARGE = "too_large"  # over [routes.mirror] max_request_mb or the whole shadow buffer
BUDGET = "budget"  # the target's budget was spent (budget.py)
HELD_BACK = "held_back"  # identical_sample: another target of the route could not take it
MIRROR_VALUES = (SENT, NOT_SAMPLED, SHED, DOWN, SHM, EXPLICIT_VERSION, NOT_READY, EXCLUDED, TOO_LARGE, BUDGET, HELD_BACK)
# A sampled target not sent, by why: each value is also the name of its ShadowStats counter.
NOT_SENT = (NOT_READY, SHED, DOWN, BUDGET, HELD_BACK)

# What the pairing stage made of a sent row (the ``pair`` column; null when the shadow call failed).
COMPARED = "compared"
CONTRACT_MISMATCH = "contract_mismatch"  # names, datatypes or shapes differ: not compared
LIVE_FAILED = "live_failed"  # live failed: nothing to compare
INTERNAL_ERROR = "internal_error"  # the front's own failure after the shadow answered
NWAY_INCOMPLETE = "nway_incomplete"  # identical_sample: another shadow of the request failed: none compared (nway.py)
PAIR_VALUES = (COMPARED, CONTRACT_MISMATCH, LIVE_FAILED, INTERNAL_ERROR, NWAY_INCOMPLETE)

TS = pa.timestamp("us", tz="UTC")

# One output tensor of an answer. Exactly one payload field is set, by datatype:
# FP16/FP32 -> fp32 (FP16 widened exactly), FP64 -> fp64, BOOL/INT*/UINT8-32 -> ints,
# UINT64 -> ints (the same 64 bits, read back with a uint64 view), BYTES -> bytes (one per element).
# Values are flattened in C order; ``shape`` gives the dims.
TENSOR = pa.struct(
    [
        ("name", pa.string()),
        ("datatype", pa.string()),
        ("shape", pa.list_(pa.int64())),
        ("fp32", pa.list_(pa.float32())),
        ("fp64", pa.list_(pa.float64())),
        ("ints", pa.list_(pa.int64())),
        ("bytes", pa.list_(pa.binary())),
    ]
)

PAIRS = pa.schema(
    [
        ("request_id", pa.string()),  # the caller's id ("" when it set none)
        ("writer", pa.string()),  # the process that logged the row
        ("request_seq", pa.int64()),  # per writer, one per request (with writer: the request's key)
        ("arrival", TS),  # the request reached the front
        ("live_answered", TS),  # live's answer (or error) came back; null if never
        ("shadow_answered", TS),  # the shadow's answer (or error) came back; null when not sent
        ("target_index", pa.int16()),  # the shadow target's position in the route (its windows)
        ("first_row", pa.bool_()),  # the request's first row (lowest target_index): count requests by it
        ("target", pa.string()),  # the shadow target's name
        ("live_model", pa.string()),
        ("live_version", pa.string()),
        ("shadow_model", pa.string()),
        ("shadow_version", pa.string()),
        ("mirror", pa.string()),  # MIRROR_VALUES
        ("sampled", pa.bool_()),  # chosen by the target's sample_rate
        ("shed", pa.bool_()),  # chosen, but past max_in_flight or shadow_buffer_mb
        ("down", pa.bool_()),  # chosen, but the target's connection was down
        ("sample_rate", pa.float64()),  # the target's sample_rate
        ("log_sample_rate", pa.float64()),  # [log] sample_rate: weight rows by 1 / this
        ("live_status", pa.string()),  # gRPC code name of live's answer
        ("shadow_status", pa.string()),  # of the shadow's; null when not sent
        ("pair", pa.string()),  # PAIR_VALUES; null when not sent or the shadow failed
        ("live_latency_s", pa.float64()),  # the live call, as the latency sketch saw it
        ("shadow_latency_s", pa.float64()),  # the shadow call (OK answers only, as the sketch)
        ("front_added_s", pa.float64()),  # the handler's own time on the live path
        ("trace_id", pa.string()),  # 32 hex digits when tracing was on
        ("slice_buckets", pa.list_(pa.list_(pa.int16()))),  # per configured slice, per row: bucket
        ("live_outputs", pa.list_(TENSOR)),  # null unless sent and live answered
        ("shadow_outputs", pa.list_(TENSOR)),  # null unless the shadow answered OK
        ("request", pa.binary()),  # the ModelInferRequest bytes ([log] keep_inputs), for replay
    ]
)

OUTCOMES = pa.schema(
    [
        ("request_id", pa.string()),
        ("writer", pa.string()),
        ("received", TS),
        ("true_labels", pa.list_(pa.int64())),  # classifier: the true class per row
        ("true_values", pa.list_(pa.float64())),  # regression: the true value per row
        ("status", pa.string()),  # the online join: accepted, unknown, duplicate, reused, mismatch, rejected
        ("reason", pa.string()),  # why rejected (RecordOutcomes' rejected_reasons), else null
    ]
)


class PairRow(NamedTuple):
    """What the front hands the writer for one (request, target): cheap to build on the event loop
    (no decoding, no copies: the answers are the bytes already held). The writer thread turns a
    batch of these into a RecordBatch of ``PAIRS`` (decoding outputs there, off the loop)."""

    route: str
    target_index: int
    request_id: str
    request_seq: int
    arrival: float  # time.time()
    live_answered: float | None
    shadow_answered: float | None
    mirror: str
    sampled: bool
    live_status: str
    shadow_status: str | None
    pair: str | None
    live_latency_s: float | None
    shadow_latency_s: float | None
    front_added_s: float | None
    trace_id: str | None
    slice_buckets: list | None  # per slice: np.ndarray of int16 per row, or None
    live: bytes | None  # live's ModelInferResponse bytes (sent rows that were compared)
    shadow: bytes | None  # the shadow's
    request: bytes | None  # the ModelInferRequest (keep_inputs only)
    first_row: bool | None = None  # the request's first row; None: target_index == 0


class OutcomeRow(NamedTuple):
    request_id: str
    received: float  # time.time()
    labels: object  # np.ndarray of int64 or None (the true_labels column)
    values: object  # np.ndarray of float64 or None (the true_values column)
    status: str
    reason: str | None
