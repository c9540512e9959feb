"""Which data plane carries ModelInfer calls to Triton (``server.data_plane``).

- ``nghttp2``: the compiled one, ``shadowgrpc._h2_c`` (libnghttp2's HTTP/2 session in C, driven
  by the event loop; shadowgrpc/h2.py): a unary call costs a fraction of grpc.aio's CPU
  (benchmarks/h2_spike.py).
- ``grpcio``: grpc.aio channels, the fallback, and what every other RPC (model metadata, the
  control plane, ModelStreamInfer) always uses.
- ``auto`` (the default): ``nghttp2`` when the extension is built and usable, else ``grpcio``.

The extension is missing when libnghttp2's header was not there at build time (Debian's
``libnghttp2-dev``, installed by ``make sysdeps``), on non-CPython, or when
``SHADOWGRPC_NO_EXTENSIONS`` is set (the pure-Python test pass). Upstream compression
(``server.upstream_compression`` other than "none") keeps grpc.aio: the compiled client sends
uncompressed messages only.

This module imports nothing heavy: config.py checks the key with it.
"""

from __future__ import annotations

import importlib.util
import os
import sys

CHOICES = ("auto", "nghttp2", "grpcio")
NO_EXTENSIONS = bool(os.environ.get("SHADOWGRPC_NO_EXTENSIONS")) or sys.implementation.name != "cpython"


def compiled_available() -> bool:
    """True when shadowgrpc._h2_c is built and allowed (not SHADOWGRPC_NO_EXTENSIONS)."""
    return not NO_EXTENSIONS and importlib.util.find_spec("shadowgrpc._h2_c") is not None


def resolve(asked: str, compression: str = "none") -> tuple[str, str]:
    """(the data plane that ``asked`` gives here, why). ValueError (the message names the
    reason) when "nghttp2" is asked and cannot be had."""
    if asked not in CHOICES:
        raise ValueError(f"must be one of {', '.join(CHOICES)}, got {asked!r}")
    if asked == "grpcio":
        return "grpcio", "asked"
    why = ""
    if not compiled_available():
        why = "shadowgrpc._h2_c is not built (libnghttp2-dev missing at build time)" if not NO_EXTENSIONS else "SHADOWGRPC_NO_EXTENSIONS is set"
    elif compression != "none":
        why = f"server.upstream_compression = {compression!r} (the compiled client sends uncompressed messages)"
    if not why:
        return "nghttp2", "asked" if asked == "nghttp2" else "auto: the compiled extension is built"
    if asked == "nghttp2":
        raise ValueError(f'"nghttp2" cannot be used: {why}')
    return "grpcio", f"auto: {why}"
