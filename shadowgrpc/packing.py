"""Wire-level packing of KServe v2 messages: picks the compiled twin or the pure-Python one.

The compiled ``shadowgrpc._packing_c`` is used unless ``SHADOWGRPC_NO_EXTENSIONS`` is set
(non-empty), the interpreter is not CPython, or the extension is not built. ``IMPLEMENTATION``
says which one ("c" or "py"). Both give identical results; ``shadowgrpc._packing_py`` documents
the wire-format rules and is the source of types. ``pack_request`` (a ModelInferRequest built from
tensors) lives in its own pair, ``_packing_build_py`` / ``_packing_build_c``, re-exported by each twin.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

__all__ = (
    "IMPLEMENTATION",
    "build_request",
    "decode_bytes_tensor",
    "encode_bytes_tensor",
    "pack_request",
    "sample_key",
    "scan_request",
    "scan_response",
)

NO_EXTENSIONS = bool(os.environ.get("SHADOWGRPC_NO_EXTENSIONS")) or sys.implementation.name != "cpython"

if TYPE_CHECKING:
    from ._packing_py import (
        build_request,
        decode_bytes_tensor,
        encode_bytes_tensor,
        pack_request,
        sample_key,
        scan_request,
        scan_response,
    )

    IMPLEMENTATION: str
elif NO_EXTENSIONS:
    from ._packing_py import (
        build_request,
        decode_bytes_tensor,
        encode_bytes_tensor,
        pack_request,
        sample_key,
        scan_request,
        scan_response,
    )

    IMPLEMENTATION = "py"
else:
    try:
        from ._packing_c import (
            build_request,
            decode_bytes_tensor,
            encode_bytes_tensor,
            pack_request,
            sample_key,
            scan_request,
            scan_response,
        )

        IMPLEMENTATION = "c"
    except ImportError:  # pragma: no cover - extension not built
        from ._packing_py import (
            build_request,
            decode_bytes_tensor,
            encode_bytes_tensor,
            pack_request,
            sample_key,
            scan_request,
            scan_response,
        )

        IMPLEMENTATION = "py"
