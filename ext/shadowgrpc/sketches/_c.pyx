# cython: language_level=3
"""Streaming sketches, compiled twin of shadowgrpc/sketches/_py.py: the same counts, values and
bytes (``tests/test_sketches.py``, ``tests/test_paired.py``); that module states the rules.

Like the Python twin, this module re-exports the public names from its three parts:
``_core_c`` (``Histogram``, ``update_many``, ``LatencySketch``), ``_divergence_c``
(``divergences``) and ``_paired_c`` (``LabelAgreement``, ``BinaryAgreement``,
``RegressionAgreement``, ``CosineStats``). Their nogil kernels are inline functions in
``_kernels.pxd`` and ``_paired_kernels.pxd``.
"""

from shadowgrpc.sketches._core_c import Histogram, LatencySketch, update_many
from shadowgrpc.sketches._divergence_c import DEFAULT_EPS, divergences
from shadowgrpc.sketches._paired_c import (  # noqa: F401
    BinaryAgreement,
    CosineStats,
    LabelAgreement,
    RegressionAgreement,
    _cosine_exact,
    _cosines,
)

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
