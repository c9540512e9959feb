"""basket_value, version 2: basket value regression (USD), numpy only.

Input  ``features`` FP32 [batch, 4]: n_items, mean_item_price, loyalty_years, promo_active.
Output ``value``    FP32 [batch, 1]: predicted basket value in USD (>= 0).

Version 2 adds the n_items x mean_item_price term (much closer to the truth) but
over-discounts promo baskets (18% where the truth is 10%).

Self-contained (Triton loads this file alone); the same coefficients are in
shadowgrpc.examples.data.reference_basket_value.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

NAME = "basket_value"
VERSION = "2"
N_FEATURES = 4
INTERCEPT = 1.0
WEIGHTS = np.array([0.2, 0.1, 0.4, 0.0], dtype=np.float64)
INTERACTION = 1.0  # weight of n_items * mean_item_price * (1 - PROMO_DISCOUNT * promo_active)
PROMO_DISCOUNT = 0.18


class BadInput(ValueError):
    pass


def basket_value(features):
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise BadInput(f"{NAME} v{VERSION}: features must have shape [batch, {N_FEATURES}], got {list(x.shape)}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise BadInput(f"{NAME} v{VERSION}: non-finite feature values")
    value = INTERCEPT + x @ WEIGHTS + INTERACTION * x[:, 0] * x[:, 1] * (1.0 - PROMO_DISCOUNT * x[:, 3])
    return np.maximum(value, 0.0)[:, None].astype(np.float32)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, "features")
                if tensor is None:
                    raise BadInput(f"{NAME} v{VERSION}: missing input 'features'")
                out = basket_value(tensor.as_numpy())
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("value", out)]))
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
