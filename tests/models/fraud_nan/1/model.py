"""fraud_nan: a test-only model that answers like fraud version 2, except that about 2% of rows get
NaN probabilities: a shadow that emits invalid outputs.

Which rows: those whose features, rounded to 1e-4 and hashed (a fixed function of the row, so the
test can predict them), fall in 1 of 50 buckets; ``nan_rows`` below is that rule. The model class
extends the example's own fraud model.py, loaded from the shadowgrpc installed in the environment
that the Python-backend stub runs in (as fraud_recorder does).
"""


import numpy as np
import triton_python_backend_utils as pb_utils

import shadowgrpc.examples


fraud = shadowgrpc.examples.load_model_module("fraud")


def nan_rows(features: np.ndarray) -> np.ndarray:
    """The rows (bool mask) this model answers with NaN: ~1 in 50, a fixed function of the row."""
    q = np.round(np.asarray(features, np.float32).astype(np.float64) * 1e4).astype(np.int64)
    h = (q * np.arange(1, q.shape[1] + 1, dtype=np.int64) * 2654435761).sum(axis=1)
    return (np.abs(h) % 50) == 0


class TritonPythonModel(fraud.TritonPythonModel):
    def initialize(self, args):
        super().initialize({**args, "model_version": "2"})
        self.label = args["model_name"]

    def answer(self, request):
        features = pb_utils.get_input_tensor_by_name(request, "features")
        if features is None:
            return super().answer(request)
        x = features.as_numpy()
        p = self.probability(x)
        p[nan_rows(x)] = np.nan
        return [pb_utils.Tensor("probability", p)]
