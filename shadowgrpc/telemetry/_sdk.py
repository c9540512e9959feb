"""Every use of OpenTelemetry SDK internals (underscored names) in shadowgrpc, one small function each.

Kept where no public API exists or the public one costs measurably more (in the export thread,
which shares the front's cores; the request path itself uses no SDK object, ``telemetry.records``):

- ``span_attributes``: reads an ended span's ``_attributes._dict`` (the public read: ~20% more of
  the OTLP encoder's time), for SDK spans; a ``ReadableSpan`` built from a plain dict is read
  through the public ``attributes``;
- ``suppress_instrumentation``: marks the export thread's context with the API's
  ``_SUPPRESS_INSTRUMENTATION_KEY``, as the SDK's batch worker does (no public setter);
- ``with_request_encoder``: overrides the OTLP/gRPC exporter's ``_translate_data`` (~4x cheaper
  encoding, ``telemetry.otlp``): the exporter has no public hook for its encoding.

The rest is public: spans are built as ``ReadableSpan`` (its constructor) and handed to the
exporter's ``export``; the sampler's ``should_sample``, the id generator, ``SpanLimits`` and the
OTEL_BSP_* settings are read through public names. Each internal is probed and, where the SDK no
longer looks as verified, the public path is used instead: the same result, only slower; never an
exception on the request path. Verified with opentelemetry-sdk ``VERIFIED_SDK_VERSIONS``;
``tests/unit/test_otel_sdk.py`` fails on any other installed version, checks each internal still exists
with the expected type, and that each fallback gives the fast path's result: after an SDK upgrade,
run it, then widen the range here.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

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


# --- export thread ------------------------------------------------------------------------------


def suppress_instrumentation() -> None:
    """In the span export thread: mark its OTel context so that an instrumented transport (an
    auto-instrumented gRPC or HTTP client) does not trace the export itself, as the SDK's own
    batch worker does.

    Reaches: ``opentelemetry.context._SUPPRESS_INSTRUMENTATION_KEY``, the key instrumentations
    check (the API has no public setter). If the API changes (no such key): nothing is marked,
    which only matters with such an instrumentation installed."""
    try:
        from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, set_value
    except ImportError:
        return
    attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))


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
    "VERIFIED_SDK_VERSIONS", "otlp_encoding_hook_works", "otlp_grpc_exporter_version", "sdk_verified", "sdk_version",
    "span_attributes", "suppress_instrumentation", "with_request_encoder",
]
