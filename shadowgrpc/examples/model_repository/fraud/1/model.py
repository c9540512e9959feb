"""fraud, version 1 (live): a logistic card-fraud model, numpy only.

Input  ``features``    FP32 [batch, 8]: amount_log, hour_of_day, merchant_risk, distance_from_home,
                       card_age_years, tx_count_24h, is_foreign, new_device
                       (see shadowgrpc/examples/data.py).
Output ``probability`` FP32 [batch, 2]: (P(legit), P(fraud)).

Version 1 learned the high-amount step (amount >= $2,000) but not the foreign-at-night
interaction; it rejects requests with non-finite features (INVALID_ARGUMENT).

This file is self-contained (Triton loads it alone); the same coefficients are in
shadowgrpc.examples.data.reference_fraud_probability, and the tests check that both agree.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

NAME = "fraud"
VERSION = "1"
N_FEATURES = 8
NIGHT_END = 0.25  # hour_of_day < 6/24
HIGH_AMOUNT_LOG = 3.3  # amount >= ~$2,000
INTERCEPT = -5.9
WEIGHTS = np.array([0.55, 0.0, 3.0, 0.4, -0.2, 0.15, 1.1, 1.7], dtype=np.float64)
HIGH_AMOUNT_WEIGHT = 5.6
FOREIGN_NIGHT_WEIGHT = 0.0
# None: reject non-finite features (INVALID_ARGUMENT); else the per-feature replacement values
IMPUTE = None


class BadInput(ValueError):
    pass


def fraud_probability(features):
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise BadInput(f"{NAME} v{VERSION}: features must have shape [batch, {N_FEATURES}], got {list(x.shape)}")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        if IMPUTE is None:
            rows = sorted({int(r) for r in np.nonzero(bad)[0]})[:10]
            raise BadInput(f"{NAME} v{VERSION}: non-finite feature values in batch rows {rows}")
        x = np.where(bad, np.asarray(IMPUTE, dtype=np.float64), x)
    night = (x[:, 1] < NIGHT_END).astype(np.float64)
    high = (x[:, 0] >= HIGH_AMOUNT_LOG).astype(np.float64)
    z = INTERCEPT + x @ WEIGHTS + HIGH_AMOUNT_WEIGHT * high + FOREIGN_NIGHT_WEIGHT * x[:, 6] * night
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
    return np.stack([1.0 - p, p], axis=1).astype(np.float32)


class TritonPythonModel:
    def initialize(self, args):
        self.model_version = str(args.get("model_version", VERSION))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, "features")
                if tensor is None:
                    raise BadInput(f"{NAME} v{VERSION}: missing input 'features'")
                out = fraud_probability(tensor.as_numpy())
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probability", out)]))
            except BadInput as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
                )
            except Exception as exc:  # never let the stub die on one request
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"{NAME} v{VERSION}: internal error: {type(exc).__name__}: {exc}")
                    )
                )
        return responses
