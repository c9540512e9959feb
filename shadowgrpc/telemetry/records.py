"""Spans as compact records on the request path, turned into SDK spans and exported off it.

The request path (``telemetry.spans``) fills a ``SpanRecord`` (ids, name, kind, times, status, a
reference to the target's cached attribute dict and a small dict of per-request values) and hands
it to ``RecordProcessor.emit``: a length check and a deque append, no lock, no SDK object. The
processor's own thread (never the event loop) takes batches as the SDK's ``BatchSpanProcessor``
does (``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``),
builds public ``opentelemetry.sdk.trace.ReadableSpan`` objects (resource, instrumentation scope,
``SpanContext`` of the span and its parent, ``Status``, attributes) and passes them to the
configured exporter's public ``export(batch)``: OTLP/gRPC, OTLP/HTTP, console alike.

A record past the queue's bound is dropped and counted (``queue_full``); a failed export's spans
are counted by the ``CountingExporter`` (``export_failed``). ``shutdown`` exports what is queued
within its time bound, then shuts the exporter down with the time left: a hung collector holds it
no longer than that bound.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import os
import threading
import time
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.environment_variables import OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_SCHEDULE_DELAY
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ._sdk import suppress_instrumentation

log = logging.getLogger("shadowgrpc.telemetry")

# The OpenTelemetry specification's defaults, as the SDK's BatchSpanProcessor applies them.
_DEFAULTS = {OTEL_BSP_SCHEDULE_DELAY: 5000, OTEL_BSP_MAX_QUEUE_SIZE: 2048, OTEL_BSP_MAX_EXPORT_BATCH_SIZE: 512}
_UNSET = Status(StatusCode.UNSET)
_FLAGS = [TraceFlags(i) for i in range(256)]
# The SERVER span's record of the request being handled (set by telemetry.spans around a KServe
# handler; copied into the shadow tasks it creates): what the OTel current span was before.
CURRENT: contextvars.ContextVar[SpanRecord | None] = contextvars.ContextVar("shadowgrpc_span", default=None)


def _env_int(var: str) -> int:
    default = _DEFAULTS[var]
    try:
        return int(os.environ.get(var, default))
    except ValueError:
        log.warning("%s: not an integer, using %d", var, default)
        return default


def bsp_settings() -> tuple[int, int, int]:
    """(schedule delay ms, max queue size, max export batch size) read as the SDK's
    BatchSpanProcessor reads them, and refused as it refuses them (ValueError)."""
    delay, size, batch = _env_int(OTEL_BSP_SCHEDULE_DELAY), _env_int(OTEL_BSP_MAX_QUEUE_SIZE), _env_int(OTEL_BSP_MAX_EXPORT_BATCH_SIZE)
    if size <= 0:
        raise ValueError("max_queue_size must be a positive integer.")
    if delay <= 0:
        raise ValueError("schedule_delay_millis must be positive.")
    if batch <= 0:
        raise ValueError("max_export_batch_size must be a positive integer.")
    if batch > size:
        raise ValueError("max_export_batch_size must be less than or equal to max_queue_size.")
    return delay, size, batch


class SpanRecord:
    """What one span needs, filled on the event loop's thread and not touched after ``emit``.

    ``parent``: None (a root), the caller's ``SpanContext`` (remote), or the parent's SpanRecord.
    ``static``: a dict shared by every span of a target (never written); ``attrs``: this span's
    own values, written after ``static``'s (a key in both: this one). ``error``: None (status
    UNSET) or the ERROR status description (the gRPC code name)."""

    __slots__ = ("name", "kind", "trace_id", "span_id", "flags", "trace_state", "parent", "start", "end", "static", "attrs", "error", "ctx")

    def __init__(self, name: str, kind: SpanKind, trace_id: int, span_id: int, flags: int, trace_state: Any, parent: Any,
                 static: dict, attrs: dict) -> None:
        self.name, self.kind, self.trace_id, self.span_id = name, kind, trace_id, span_id
        self.flags, self.trace_state, self.parent = flags, trace_state, parent
        self.static, self.attrs = static, attrs
        self.error: str | None = None
        self.end = 0
        self.ctx: SpanContext | None = None  # built once, by the export thread
        self.start = time.time_ns()

    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"

    def span_context(self) -> SpanContext:
        c = self.ctx
        if c is None:
            c = self.ctx = SpanContext(self.trace_id, self.span_id, False, _FLAGS[self.flags], self.trace_state)
        return c


class RecordSpan(ReadableSpan):
    """A ``ReadableSpan`` made from ``record`` (whose attributes it has, unbounded): any exporter
    takes it as a ReadableSpan; ``telemetry.otlp`` encodes it from the record's cached parts."""

    def __init__(self, record: SpanRecord, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record = record


class _Converter:
    """Records to ReadableSpans (in the export thread): one resource and scope for all, one Status
    per error code, the SDK's attribute limits applied when they could change anything."""

    def __init__(self, resource: Any, scope: Any) -> None:
        self.resource, self.scope = resource, scope
        self._errors: dict[str, Status] = {}
        limits = SpanLimits()  # reads OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT / OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT as the SDK does
        self._maxlen, self._max_value_len = limits.max_span_attributes, limits.max_span_attribute_length
        self._bounded = self._max_value_len is not None

    def _status(self, error: str | None) -> Status:
        if error is None:
            return _UNSET
        s = self._errors.get(error)
        if s is None:
            s = self._errors[error] = Status(StatusCode.ERROR, error)
        return s

    def __call__(self, r: SpanRecord) -> ReadableSpan:
        attrs = {**r.static, **r.attrs} if r.attrs else r.static
        p = r.parent
        parent = p.span_context() if type(p) is SpanRecord else p
        if self._bounded or (self._maxlen is not None and len(attrs) > self._maxlen):
            return ReadableSpan(r.name, r.span_context(), parent, self.resource,
                                BoundedAttributes(self._maxlen, attrs, immutable=True, max_value_len=self._max_value_len), kind=r.kind,
                                status=self._status(r.error), start_time=r.start, end_time=r.end, instrumentation_scope=self.scope)
        return RecordSpan(r, r.name, r.span_context(), parent, self.resource, attrs, kind=r.kind, status=self._status(r.error),
                          start_time=r.start, end_time=r.end, instrumentation_scope=self.scope)


class RecordProcessor:
    """A bounded queue of SpanRecords and the thread that exports them in batches (see the module
    doc). ``exporter``: a ``telemetry.export.CountingExporter``."""

    def __init__(self, exporter: Any, resource: Any, scope: Any) -> None:
        self.exporter = exporter
        delay, self.max_queue_size, self.max_export_batch_size = bsp_settings()
        self.schedule_delay_s = delay / 1000
        self.shutdown_millis = 30_000
        self.queue_full = 0
        self.converted = 0
        self._convert = _Converter(resource, scope)
        self._queue: collections.deque = collections.deque()  # emit appends right, the worker pops left
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._shut = False
        self._give_up = False  # past the shutdown bound: export nothing more
        self.thread = threading.Thread(target=self._worker, name="shadowgrpc-span-export", daemon=True)
        self.thread.start()

    def queue_length(self) -> int:
        return len(self._queue)

    def emit(self, r: SpanRecord) -> None:
        """On the request path: queue ``r`` (ended), or drop and count it when the queue is full."""
        q = self._queue
        n = len(q)
        if n >= self.max_queue_size:
            if not self._shut:
                self.queue_full += 1
            return
        if self._shut:
            return
        q.append(r)
        if n + 1 >= self.max_export_batch_size and not self._wake.is_set():
            self._wake.set()

    def _worker(self) -> None:
        suppress_instrumentation()  # as the SDK's worker: an instrumented transport does not trace the export
        while not self._shut:
            woken = self._wake.wait(self.schedule_delay_s)
            if self._shut:
                break
            self._export(all_=False, at_least_one=not woken)
            self._wake.clear()
        self._export(all_=True, at_least_one=True)

    def _export(self, all_: bool, at_least_one: bool) -> None:
        q, size = self._queue, self.max_export_batch_size
        with self._export_lock:
            first = True
            while q and not self._give_up and (len(q) >= size or all_ or (at_least_one and first)):
                first = False
                batch = [q.popleft() for _ in range(min(size, len(q)))]
                convert = self._convert
                try:
                    spans = [convert(r) for r in batch]
                except Exception:  # a bug here must not kill the export thread: the batch is dropped, counted
                    log.exception("telemetry: %d spans could not be built, dropped", len(batch))
                    self.exporter.failed += len(batch)
                    continue
                self.converted += len(spans)
                self.exporter.export(spans)  # counts; never raises (CountingExporter)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if self._shut:
            return False
        self._export(all_=True, at_least_one=True)
        return True

    def shutdown(self) -> None:
        """Export what is queued, then shut the exporter down, within ``shutdown_millis``."""
        if self._shut:
            return
        end = time.monotonic() + self.shutdown_millis / 1000
        self._shut = True
        self._wake.set()
        self.thread.join(self.shutdown_millis / 1000)
        self._give_up = True
        left = self._queue
        if left:  # never exported: past the bound, the collector held the export
            self.exporter.failed += len(left)
            left.clear()
        self.exporter.shutdown(timeout_millis=max(0.0, (end - time.monotonic()) * 1000))
