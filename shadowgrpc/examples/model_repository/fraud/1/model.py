"""fraud: a logistic card-fraud model, numpy only, one file for both versions.

Input  ``features``    FP32 [batch, 8]: amount_log, hour_of_day, merchant_risk, distance_from_home,
                       card_age_years, tx_count_24h, is_foreign, new_device
                       (see shadowgrpc/examples/data.py).
Output ``probability`` FP32 [batch, 2]: (P(legit), P(fraud)).

``fraud/2/model.py`` is a relative symlink to this file; ``initialize`` picks the version's
coefficients from ``args["model_version"]``:

* version 1 (live) learned the high-amount step (amount >= $2,000) but not the foreign-at-night
  interaction; it rejects requests with non-finite features (INVALID_ARGUMENT).
* version 2 (retrained, the shadow candidate) added the is_foreign x night interaction, but was
  retrained on a sample capped at $1,000 and lost the high-amount step; it imputes non-finite
  features with training means.

Self-contained (numpy only: the repository runs in any Triton with the Python backend); the same
coefficients are in shadowgrpc.examples.data.reference_fraud_probability, and the tests check
that both agree.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

NAME = "fraud"
N_FEATURES = 8
NIGHT_END = 0.25  # hour_of_day < 6/24
HIGH_AMOUNT_LOG = 3.3  # amount >= ~$2,000
VERSIONS = {
    "1": {
        "intercept": -5.9,
        "weights": (0.55, 0.0, 3.0, 0.4, -0.2, 0.15, 1.1, 1.7),
        "high_amount": 5.6,
        "foreign_night": 0.0,
        "impute": None,  # reject non-finite features (INVALID_ARGUMENT)
    },
    "2": {
        "intercept": -6.3,
        "weights": (0.35, 0.0, 3.3, 0.48, -0.23, 0.17, 0.85, 2.0),
        "high_amount": 0.0,
        "foreign_night": 5.7,
        "impute": (1.7, 0.55, 0.25, 1.0, 3.0, 2.5, 0.14, 0.07),  # per-feature replacement values
    },
}


class BadInput(ValueError):
    pass


class TritonPythonModel:
    def initialize(self, args):
        self.model_version = str(args["model_version"])
        if self.model_version not in VERSIONS:
            raise ValueError(f"{NAME} has versions {sorted(VERSIONS)}, not {self.model_version!r}")
        self.label = f"{NAME} v{self.model_version}"
        c = VERSIONS[self.model_version]
        self.intercept, self.high_amount, self.foreign_night = c["intercept"], c["high_amount"], c["foreign_night"]
        self.weights = np.array(c["weights"], dtype=np.float64)
        self.impute = None if c["impute"] is None else np.array(c["impute"], dtype=np.float64)

    def probability(self, features):
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise BadInput(f"{self.label}: features must have shape [batch, {N_FEATURES}], got {list(x.shape)}")
        x = x.astype(np.float64)
        bad = ~np.isfinite(x)
        if bad.any():
            if self.impute is None:
                rows = sorted({int(r) for r in np.nonzero(bad)[0]})[:10]
                raise BadInput(f"{self.label}: non-finite feature values in batch rows {rows}")
            x = np.where(bad, self.impute, x)
        night = (x[:, 1] < NIGHT_END).astype(np.float64)
        high = (x[:, 0] >= HIGH_AMOUNT_LOG).astype(np.float64)
        z = self.intercept + x @ self.weights + self.high_amount * high + self.foreign_night * x[:, 6] * night
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
        return np.stack([1.0 - p, p], axis=1).astype(np.float32)

    def answer(self, request):
        tensor = pb_utils.get_input_tensor_by_name(request, "features")
        if tensor is None:
            raise BadInput(f"{self.label}: missing input 'features'")
        return [pb_utils.Tensor("probability", self.probability(tensor.as_numpy()))]

    def execute(self, requests):
        return [self.respond(request) for request in requests]

    def respond(self, request):
        try:
            return pb_utils.InferenceResponse(output_tensors=self.answer(request))
        except BadInput as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
        except Exception as exc:  # never let the stub die on one request
            message = f"{self.label}: internal error: {type(exc).__name__}: {exc}"
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
