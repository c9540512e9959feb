"""Every use of OpenTelemetry SDK internals (underscored names) in shadowgrpc, one small function each.

Kept where no public API exists or the public one costs measurably more (on the request path, or
in the export thread, which shares the front's cores):

- ``set_span_attributes``: writes into a live span's ``_attributes._dict`` (the public
  ``Span.set_attributes`` validates every value under two locks: ~15x the cost);
- ``span_attributes``: reads an ended span's ``_attributes._dict`` (the public read: ~20% more of
  the OTLP encoder's time);
- ``batch_span_queue``: the ``BatchSpanProcessor``'s ``_batch_processor._queue`` deque, read for its
  length (spans dropped because the queue was full, the queue-size metric): no public accessor;
- ``shutdown_batch_span_processor``: ``_batch_processor.shutdown(timeout_millis=...)``; the public
  ``BatchSpanProcessor.shutdown()`` waits up to 30 s on a hung collector;
- ``with_request_encoder``: overrides the OTLP/gRPC exporter's ``_translate_data`` (~4x cheaper
  encoding, ``telemetry.otlp``): the exporter has no public hook for its encoding.

The rest is public: the queue's bound is OTEL_BSP_MAX_QUEUE_SIZE read here and passed to the
processor, spans reach it through its public ``on_end`` (``telemetry.export``). Each internal is
probed (at import, or on each use where that is as cheap) and, where the SDK no longer looks as
verified, the public path is used instead: the same result, only slower (or, for the queue,
derived from counts); never an exception on the request path. Verified with opentelemetry-sdk ``VERIFIED_SDK_VERSIONS``;
``tests/unit/test_otel_sdk.py`` fails on any other installed version, checks each internal still exists
with the expected type, and that each fallback gives the fast path's result: after an SDK upgrade,
run it, then widen the range here.
"""

from __future__ import annotations

import collections
import inspect
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.attributes import BoundedAttributes

# Lowest, highest opentelemetry-sdk tested (inclusive); opentelemetry-exporter-otlp-proto-grpc,
# whose exporter ``with_request_encoder`` subclasses, is released with it under the same version.
VERIFIED_SDK_VERSIONS = ("1.45.2", "1.45.2")


def sdk_version() -> str:
    from opentelemetry.sdk.version import __version__

    return __version__


def otlp_grpc_exporter_version() -> str:
    from opentelemetry.exporter.otlp.proto.grpc.version import __version__

    return __version__


def _release(version: str) -> tuple[int, ...]:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)  # 1.46.0rc1, 1.46.0.dev0: as 1.46.0
    return tuple(int(g or 0) for g in m.groups()) if m else ()


def sdk_verified(version: str | None = None) -> bool:
    """Whether ``version`` (default: the installed opentelemetry-sdk) is in ``VERIFIED_SDK_VERSIONS``."""
    lo, hi = (_release(v) for v in VERIFIED_SDK_VERSIONS)
    return lo <= _release(version or sdk_version()) <= hi


# --- span attributes --------------------------------------------------------------------------


def _attribute_dict_works() -> bool:
    """Probe: a new SDK ``Span`` keeps its attributes in a ``BoundedAttributes`` (with ``maxlen`` and
    ``max_value_len``) whose ``_dict``, a dict, is what ``span.attributes`` shows, writable until
    ``end()`` sets ``_immutable``."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import Span, TracerProvider
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource.get_empty(), shutdown_on_exit=False)
        span = provider.get_tracer("shadowgrpc-probe").start_span("probe")
        if not isinstance(span, Span):
            return False
        a = span._attributes
        if type(a) is not BoundedAttributes or type(a._dict) is not dict or a._immutable is not False:
            return False
        a._dict["k"] = 1
        seen = dict(span.attributes) == {"k": 1} and hasattr(a, "maxlen") and hasattr(a, "max_value_len")
        span.end()
        return seen and a._immutable is True
    except Exception:  # noqa: BLE001 - any surprise: the public path
        return False


FAST_ATTRIBUTES = _attribute_dict_works()


def set_span_attributes_fast(span: Any, attrs: Mapping[str, Any]) -> None:
    """``span.set_attributes(attrs)`` for attributes shadowgrpc builds itself (non-empty str keys;
    str, bool, int, float values), on the event loop's thread; used when ``FAST_ATTRIBUTES``.

    Reaches: ``Span._attributes`` (a ``BoundedAttributes``), its ``_dict`` (updated in place) and
    ``_immutable`` (set by ``end()``). Why: the public call cleans each value and takes the span's
    and the attributes' locks, ~15x the cost of the update (about a third of a traced request's
    span cost). The dict is written only while the span records and no SDK limit can apply (no
    value-length limit, room under the count limit); otherwise, and for a span that is not the
    SDK's (non-recording), the public call. Same attributes either way (a key set twice keeps its
    first position here; OTLP attributes are a map). If the SDK changes: the import probe fails
    (``FAST_ATTRIBUTES`` False) and ``set_span_attributes`` is ``set_span_attributes_public``."""
    try:
        a = span._attributes
        d = a._dict
        m = a.maxlen
        direct = not a._immutable and a.max_value_len is None and (m is None or len(d) + len(attrs) <= m)
    except AttributeError:  # not the SDK's recording span (INVALID_SPAN, NonRecordingSpan)
        direct = False
    if direct:
        d.update(attrs)
    else:
        span.set_attributes(attrs)


def set_span_attributes_public(span: Any, attrs: Mapping[str, Any]) -> None:
    """The public path: ``span.set_attributes(attrs)``."""
    span.set_attributes(attrs)


set_span_attributes = set_span_attributes_fast if FAST_ATTRIBUTES else set_span_attributes_public


def span_attributes(span: Any) -> Mapping[str, Any]:
    """The attributes of an ended span (a ``ReadableSpan``), to read.

    Reaches: ``ReadableSpan._attributes`` (the span's ``BoundedAttributes``, immutable once the
    span ended) and its ``_dict``. Why: the public ``span.attributes`` wraps it in a
    ``MappingProxyType`` whose items go through ``BoundedAttributes.__getitem__`` one by one:
    ~20% more of the OTLP encoder's time per span (``telemetry.otlp``, 14 attributes; its
    ``copy()``, three Python calls and a dict copy per span: ~2-3% more; this call: ~0.5%). If
    the SDK changes (no such dict): the public ``span.attributes``, the same items in the same
    order."""
    d = getattr(getattr(span, "_attributes", None), "_dict", None)
    return d if type(d) is dict else span.attributes


# --- batch span processor -----------------------------------------------------------------------


def batch_span_queue(processor: Any, capacity: int) -> collections.deque | None:
    """The deque a ``BatchSpanProcessor`` queues ended spans in, or None.

    Reaches: ``processor._batch_processor._queue`` (the SDK's ``BatchProcessor``, a
    ``collections.deque(maxlen=max_queue_size)``: ``emit`` appends left, evicting the oldest span
    when full; the worker pops right). Why: its length is the only way to tell a span about to be
    dropped (``queue_full``) and to report the queue size; the SDK counts its drops only in its own
    opt-in metrics (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``), not readable here. If the SDK
    changes (no such deque, or another bound than ``capacity``): None, and the caller derives the
    length from its own counts (spans queued - dropped - handed to the exporter)."""
    try:
        q = processor._batch_processor._queue
    except AttributeError:
        return None
    return q if isinstance(q, collections.deque) and q.maxlen == capacity else None


def _takes(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def shutdown_batch_span_processor(processor: Any, exporter: Any, timeout_millis: float) -> None:
    """``processor.shutdown()`` (export what is queued, then shut ``exporter``, the processor's
    exporter, down) returning within about ``timeout_millis`` even when an export hangs.

    Reaches: ``processor._batch_processor.shutdown(timeout_millis=...)``, the SDK's
    ``BatchProcessor``: it waits that long for its worker, then stops it exporting and passes the
    time left to ``exporter.shutdown``. Why: the public ``BatchSpanProcessor.shutdown()`` (what
    ``TracerProvider.shutdown()`` calls) has no timeout and waits 30 s. If the SDK changes (no such
    method or argument): the public ``BatchSpanProcessor.shutdown`` in a daemon thread, waited for
    ``timeout_millis``; if it is still running, ``exporter.shutdown(timeout_millis=0)`` aborts the
    hung export (the SDK exporters' shutdown ends their retries and closes the channel) and the
    thread finishes on its own; ``exporter.shutdown`` should ignore a second call."""
    bp = getattr(processor, "_batch_processor", None)
    shutdown = getattr(bp, "shutdown", None)
    if callable(shutdown) and _takes(shutdown, "timeout_millis"):
        shutdown(timeout_millis=timeout_millis)
        return
    _shutdown_public(processor, exporter, timeout_millis)


def _shutdown_public(processor: Any, exporter: Any, timeout_millis: float) -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    t = threading.Thread(target=BatchSpanProcessor.shutdown, args=(processor,), name="shadowgrpc-span-shutdown", daemon=True)
    t.start()
    t.join(timeout_millis / 1000)
    if t.is_alive():
        exporter.shutdown(timeout_millis=0)


# --- OTLP/gRPC span exporter --------------------------------------------------------------------


def otlp_encoding_hook_works(exporter_cls: type) -> bool:
    """Whether ``exporter_cls`` (the SDK's OTLP/gRPC ``OTLPSpanExporter``) still builds each export
    request by calling ``self._translate_data(data)``: ``export`` calls ``_export``, which names
    ``_translate_data``, a method of (self, data)."""
    try:
        translate = exporter_cls._translate_data  # type: ignore[attr-defined]
        return (list(inspect.signature(translate).parameters) == ["self", "data"]
                and "_export" in exporter_cls.export.__code__.co_names  # type: ignore[attr-defined]
                and "_translate_data" in exporter_cls._export.__code__.co_names)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - any surprise: the SDK's own encoding
        return False


def with_request_encoder(exporter_cls: type, encode: Callable[[Any], Any], name: str) -> type:
    """``exporter_cls`` (the SDK's OTLP/gRPC span exporter) with each export request built by
    ``encode(spans)`` (which must return what the SDK's ``encode_spans(spans)`` would, an
    ``ExportTraceServiceRequest``); transport, retries, timeouts and metrics stay the SDK's.

    Reaches: the exporter's ``_translate_data(data)``, overridden; ``OTLPExporterMixin._export``
    calls it once per attempt. Why: the exporter has no public hook for its encoding, and
    ``telemetry.otlp``'s is ~4x cheaper, in the front's own process. If the SDK changes
    (``otlp_encoding_hook_works`` is False: renamed, another signature, no longer called):
    ``exporter_cls`` itself, the SDK's encoder (the same request, slower); an override that would
    never be called, or be called with other arguments, is never installed."""
    if not otlp_encoding_hook_works(exporter_cls):
        return exporter_cls

    def _translate_data(self: Any, data: Any) -> Any:
        return encode(data)

    doc = f"The SDK's {exporter_cls.__name__} building its export requests with ``{encode.__qualname__}``."
    return type(name, (exporter_cls,), {"_translate_data": _translate_data, "__doc__": doc,
                                        "__module__": getattr(encode, "__module__", __name__)})


__all__ = [
    "FAST_ATTRIBUTES", "VERIFIED_SDK_VERSIONS", "batch_span_queue", "otlp_encoding_hook_works", "otlp_grpc_exporter_version",
    "sdk_verified", "sdk_version", "set_span_attributes", "set_span_attributes_fast", "set_span_attributes_public",
    "shutdown_batch_span_processor", "span_attributes", "with_request_encoder",
]
