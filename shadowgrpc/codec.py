"""KServe v2 names and tensors, defined once: the service and its methods, the shadow marks,
datatypes, and the one decode of a request that the after-both-answers stage shares.

Imports nothing from the rest of the package. The shadow request parameter itself ("shadow":
true) is appended as fixed wire bytes by packing.build_request (both twins).
"""

from __future__ import annotations

import numpy as np

SERVICE = "inference.GRPCInferenceService"

UNARY_METHODS = (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
)
STREAM_METHODS = ("ModelStreamInfer",)
# Requests whose field 1 is the model name (and field 2 the version): routed like ModelInfer.
MODEL_SCOPED = frozenset({"ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics"})

# The shadow mark in call metadata (beside the request parameter), so that models and downstream
# systems can skip side effects.
SHADOW_METADATA = (("x-shadow-request", "1"),)

# KServe v2 datatype -> numpy dtype (little-endian, as Triton's raw contents are).
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})


def as_array(datatype: str, shape: tuple[int, ...], contents: memoryview | bytes | None) -> np.ndarray | None:
    """A read-only numpy view on raw tensor contents; None for BYTES/unknown types or a size
    mismatch."""
    dt = NUMPY_DTYPES.get(datatype)
    if dt is None or contents is None:
        return None
    count = 1
    for d in shape:
        count *= d
    if count < 0 or count * dt.itemsize != len(contents):
        return None
    return np.frombuffer(contents, dtype=dt, count=count).reshape(shape)


def decode_request(raw: bytes):
    """The full ModelInferRequest (protobuf), or None when the bytes do not parse. Called once per
    mirrored request, by the pairing stage, off the live path (see pairing.MirroredRequest.prepare)."""
    from tritonclient.grpc import service_pb2 as kserve

    try:
        return kserve.ModelInferRequest.FromString(raw)
    except Exception:  # malformed: Triton answers the caller; nothing to decode
        return None
