"""KServe v2 requests as raw bytes for the tests against the real Triton: request builders and raw
(unserialised) gRPC channels, so that a test compares the exact bytes the front and Triton answer."""

from __future__ import annotations

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

INFER = "/inference.GRPCInferenceService/ModelInfer"
BIG = 200 * 1024 * 1024


def _raw(address: str, method: str = "ModelInfer"):
    """A channel to ``address`` (200 MiB message limits) and its raw bytes-in, bytes-out callable of
    ``inference.GRPCInferenceService/<method>``; close the channel (``with ch:``)."""
    ch = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)])
    return ch, ch.unary_unary(f"/inference.GRPCInferenceService/{method}", request_serializer=None, response_deserializer=None)


def fraud_request(rows: np.ndarray, rid: str = "", version: str = "1", model: str = "fraud") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, model_version=version, id=rid)
    req.inputs.add(name="features", datatype="FP32", shape=list(rows.shape))
    req.outputs.add(name="probability")
    req.raw_input_contents.append(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
    return req


def intent_request(texts: list[bytes], rid: str = "", version: str = "1") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="merchant_intent", model_version=version, id=rid)
    req.inputs.add(name="text", datatype="BYTES", shape=[len(texts), 1])
    req.raw_input_contents.append(b"".join(len(t).to_bytes(4, "little") + t for t in texts))
    return req
