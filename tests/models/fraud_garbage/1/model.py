"""fraud_garbage: a test-only model with the input of ``fraud`` (``features`` FP32 [batch, 8])
that answers OK with garbage: ``probability`` is INT32 [batch, 3] instead of FP32 [batch, 2].

Triton validates outputs against the model config, so config.pbtxt declares INT32 [3]: the model's
contract differs from fraud's, as a misconfigured shadow's would. The values are deterministic:
row i is (-1, i, 2147483647).
"""

import numpy as np
import triton_python_backend_utils as pb_utils

GARBAGE_COLUMNS = 3


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                features = pb_utils.get_input_tensor_by_name(request, "features").as_numpy()
                n = features.shape[0]
                out = np.empty((n, GARBAGE_COLUMNS), dtype=np.int32)
                out[:, 0] = -1
                out[:, 1] = np.arange(n, dtype=np.int32)
                out[:, 2] = np.iinfo(np.int32).max
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probability", out)]))
            except Exception as exc:  # never let the stub die on one request
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"fraud_garbage: internal error: {type(exc).__name__}: {exc}")
                    )
                )
        return responses
