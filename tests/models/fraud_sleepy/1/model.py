"""fraud_sleepy: a test-only model with the interface of ``fraud`` (input ``features`` FP32 [batch, 8],
output ``probability`` FP32 [batch, 2]).

Sleeps SHADOWGRPC_SLEEPY_SECONDS seconds (default 2.0) per request, then answers exactly like
fraud version 2: a slow shadow. Two instances, so two requests sleep concurrently.

The fraud arithmetic below is a verbatim copy of fraud version 2
(shadowgrpc/examples/model_repository/fraud/2/model.py); Triton loads this file alone.
"""

import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils

NAME = "fraud_sleepy"
N_FEATURES = 8
NIGHT_END = 0.25
HIGH_AMOUNT_LOG = 3.3
INTERCEPT = -6.3
WEIGHTS = np.array([0.35, 0.0, 3.3, 0.48, -0.23, 0.17, 0.85, 2.0], dtype=np.float64)
HIGH_AMOUNT_WEIGHT = 0.0
FOREIGN_NIGHT_WEIGHT = 5.7
IMPUTE = [1.7, 0.55, 0.25, 1.0, 3.0, 2.5, 0.14, 0.07]


class BadInput(ValueError):
    pass


def fraud_v2_probability(features):
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise BadInput(f"{NAME}: features must have shape [batch, {N_FEATURES}], got {list(x.shape)}")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        x = np.where(bad, np.asarray(IMPUTE, dtype=np.float64), x)
    night = (x[:, 1] < NIGHT_END).astype(np.float64)
    high = (x[:, 0] >= HIGH_AMOUNT_LOG).astype(np.float64)
    z = INTERCEPT + x @ WEIGHTS + HIGH_AMOUNT_WEIGHT * high + FOREIGN_NIGHT_WEIGHT * x[:, 6] * night
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
    return np.stack([1.0 - p, p], axis=1).astype(np.float32)


class TritonPythonModel:
    def initialize(self, args):
        self.sleep_s = float(os.environ.get("SHADOWGRPC_SLEEPY_SECONDS", "2.0"))

    def on_request(self, request, features):
        time.sleep(self.sleep_s)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, "features")
                if tensor is None:
                    raise BadInput(f"{NAME}: missing input 'features'")
                features = tensor.as_numpy()
                out = fraud_v2_probability(features)
                self.on_request(request, features)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probability", out)]))
            except BadInput as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
                )
            except Exception as exc:  # never let the stub die on one request
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"{NAME}: internal error: {type(exc).__name__}: {exc}")
                    )
                )
        return responses
