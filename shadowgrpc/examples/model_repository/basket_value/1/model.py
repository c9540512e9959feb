"""basket_value: basket value regression (USD), numpy only, one file for both versions.

Input  ``features`` FP32 [batch, 4]: n_items, mean_item_price, loyalty_years, promo_active.
Output ``value``    FP32 [batch, 1]: predicted basket value in USD (>= 0).

``basket_value/2/model.py`` is a relative symlink to this file; ``initialize`` picks the
version's coefficients from ``args["model_version"]``:

* version 1 is linear in the four features: it underestimates large baskets.
* version 2 adds the n_items x mean_item_price term (much closer to the truth) but
  over-discounts promo baskets (18% where the truth is 10%).

Self-contained (numpy only); the same coefficients are in
shadowgrpc.examples.data.reference_basket_value.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

NAME = "basket_value"
N_FEATURES = 4
# value = intercept + weights . x + interaction * n_items * mean_item_price * (1 - promo_discount * promo_active)
VERSIONS = {
    "1": {"intercept": -70.4, "weights": (10.4, 6.8, 0.6, -7.9), "interaction": 0.0, "promo_discount": 0.0},
    "2": {"intercept": 1.0, "weights": (0.2, 0.1, 0.4, 0.0), "interaction": 1.0, "promo_discount": 0.18},
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
        self.intercept, self.interaction, self.promo_discount = c["intercept"], c["interaction"], c["promo_discount"]
        self.weights = np.array(c["weights"], dtype=np.float64)

    def value(self, features):
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise BadInput(f"{self.label}: features must have shape [batch, {N_FEATURES}], got {list(x.shape)}")
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise BadInput(f"{self.label}: non-finite feature values")
        promo = 1.0 - self.promo_discount * x[:, 3]
        value = self.intercept + x @ self.weights + self.interaction * x[:, 0] * x[:, 1] * promo
        return np.maximum(value, 0.0)[:, None].astype(np.float32)

    def answer(self, request):
        tensor = pb_utils.get_input_tensor_by_name(request, "features")
        if tensor is None:
            raise BadInput(f"{self.label}: missing input 'features'")
        return [pb_utils.Tensor("value", self.value(tensor.as_numpy()))]

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
