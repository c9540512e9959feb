"""Streaming sketches, pure-numpy reference: the test oracle and the source of types.

``ext/shadowgrpc/sketches/_c.pyx`` is the compiled twin (re-exporting ``_core_c``,
``_divergence_c`` and ``_paired_c``) of everything here: ``Histogram``,
``update_many``, ``LatencySketch``, ``divergences`` and the paired statistics (``LabelAgreement``,
``BinaryAgreement``, ``RegressionAgreement``, ``CosineStats``); both give identical counts and
identical bytes (``tests/unit/test_sketches_*.py``, ``tests/unit/test_paired_*.py``).

This module states the rules and re-exports the public names from its three parts:
``_core_py`` (``Histogram``, ``update_many``, ``LatencySketch``, the byte format),
``_divergence_py`` (``divergences``) and ``_paired_py`` (paired statistics).

Rules shared by both twins:

- ``Histogram(edges, n_classes)``: ``edges`` float64, finite, strictly increasing, at least 2.
  Column 0 is underflow (x < edges[0]), column i+1 is bin i (edges[i] <= x < edges[i+1]), the last
  column is overflow (x >= edges[-1], +inf included); i.e. the column is
  ``searchsorted(edges, x, side="right")``. NaN is counted in ``nan`` (per class), never binned.
  float32 values are widened to float64 (exactly) before comparing. Memory: 8 * n_classes *
  (len(edges) + 2) bytes of counts plus 8 * len(edges) of edges (1024 bins, one class: ~16 KiB).
- ``LatencySketch``: bucket i holds [1e-6 * 1.01**i, 1e-6 * 1.01**(i+1)) seconds, 1801 buckets up to
  60 s (14.4 KiB). Values below 1 us go to bucket 0 and values >= 60 s to the last bucket, counted in
  ``clamped_low`` / ``clamped_high``; NaN is counted in ``nan`` and ignored. ``quantile(q)`` is the
  bucket of the k-th smallest recorded value with k = max(1, ceil(q * count)) (numpy's
  ``inverted_cdf``), reported as the bucket's geometric midpoint: relative error <= sqrt(1.01) - 1
  (0.499%) inside the range. ``mean`` is of the clamped values, summed exactly as integer
  nanoseconds (``rint(v * 1e9)``), so merges are exact; ``max`` is the largest raw value.
- ``divergences``: see its docstring.
- Serialisation: ``MAGIC`` (4 bytes) + uint16 version + uint16 kind, then a kind-specific
  little-endian header and payload; ``from_bytes`` raises ValueError on a wrong magic, version or
  kind, and on truncated or trailing bytes.
"""

from __future__ import annotations

# Beyond __all__: the helpers and constants this module held before it was split, so that code
# written against it (the compiled twin built from an older tree, for one) still finds them here.
from ._core_py import (  # noqa: F401
    KIND_BINARY,
    KIND_COSINE,
    KIND_HISTOGRAM,
    KIND_LABELS,
    KIND_LATENCY,
    KIND_REGRESSION,
    LAT_BOUNDS,
    LAT_GROWTH,
    LAT_MAX_S,
    LAT_MID,
    LAT_MIN_S,
    LAT_NBUCKETS,
    MAGIC,
    VERSION,
    Histogram,
    LatencySketch,
    as_values,
    check_end,
    check_preamble,
    pack_histogram,
    pack_latency,
    preamble,
    take,
    unpack_histogram,
    unpack_latency,
    update_many,
    validate_edges,
)
from ._divergence_py import DEFAULT_EPS, divergences, divergences_ref, positions  # noqa: F401
from ._paired_py import BinaryAgreement, CosineStats, LabelAgreement, RegressionAgreement

__all__ = (
    "DEFAULT_EPS",
    "BinaryAgreement",
    "CosineStats",
    "Histogram",
    "LabelAgreement",
    "LatencySketch",
    "RegressionAgreement",
    "divergences",
    "update_many",
)
