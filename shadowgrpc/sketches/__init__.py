"""Streaming sketches (histograms, latency, divergences, paired statistics): picks the compiled
twin or the pure-numpy one.

The compiled ``shadowgrpc.sketches._c`` is used unless ``SHADOWGRPC_NO_EXTENSIONS`` is set
(non-empty), the interpreter is not CPython, or the extension is not built. ``IMPLEMENTATION``
says which one ("c" or "py"). Both give identical counts, values and bytes;
``shadowgrpc.sketches._py`` documents the rules and is the source of types. Each twin re-exports
its three parts: the compiled ones are the extensions ``_core_c`` (Histogram, update_many,
LatencySketch), ``_divergence_c`` and ``_paired_c`` (the paired statistics), built from
``ext/shadowgrpc/sketches/``, so a partial build (one part missing) selects the Python twin as a
whole.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

__all__ = (
    "DEFAULT_EPS",
    "IMPLEMENTATION",
    "LAT_BOUNDS",
    "BinaryAgreement",
    "CosineStats",
    "Histogram",
    "LabelAgreement",
    "LatencySketch",
    "RegressionAgreement",
    "divergences",
    "update_many",
)

from ._core_py import LAT_BOUNDS  # the latency sketches' bucket edges, shared by both twins

NO_EXTENSIONS = bool(os.environ.get("SHADOWGRPC_NO_EXTENSIONS")) or sys.implementation.name != "cpython"

if TYPE_CHECKING:
    from ._py import (
        DEFAULT_EPS,
        BinaryAgreement,
        CosineStats,
        Histogram,
        LabelAgreement,
        LatencySketch,
        RegressionAgreement,
        divergences,
        update_many,
    )

    IMPLEMENTATION: str
elif NO_EXTENSIONS:
    from ._py import (
        DEFAULT_EPS,
        BinaryAgreement,
        CosineStats,
        Histogram,
        LabelAgreement,
        LatencySketch,
        RegressionAgreement,
        divergences,
        update_many,
    )

    IMPLEMENTATION = "py"
else:
    try:
        from ._c import (
            DEFAULT_EPS,
            BinaryAgreement,
            CosineStats,
            Histogram,
            LabelAgreement,
            LatencySketch,
            RegressionAgreement,
            divergences,
            update_many,
        )

        IMPLEMENTATION = "c"
    except ImportError:  # pragma: no cover - extension not built
        from ._py import (
            DEFAULT_EPS,
            BinaryAgreement,
            CosineStats,
            Histogram,
            LabelAgreement,
            LatencySketch,
            RegressionAgreement,
            divergences,
            update_many,
        )

        IMPLEMENTATION = "py"
