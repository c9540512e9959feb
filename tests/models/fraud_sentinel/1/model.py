"""fraud_sentinel: a test-only model with fraud's contract (``features`` FP32 [batch, 8] ->
``probability`` FP32 [batch, 2]) whose answers are easy to find in bytes: every row is the float32
pair with bits 0x3EC0FFEE, 0x3F1DEAD5 (about 0.3769, 0.6169). A request with a row whose first
feature is -4242 fails with an error message holding ``SENTINEL_ERROR``. Used as a shadow by
tests/triton/test_no_leak.py, which looks for these values in every answer the front gives.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

SENTINEL_BITS = (0x3EC0FFEE, 0x3F1DEAD5)
SENTINEL_ERROR = "SHADOW-ONLY-ERROR-8c1f3e"
ERROR_TRIGGER = -4242.0


class TritonPythonModel:
    def execute(self, requests):
        row = np.array(SENTINEL_BITS, dtype=np.uint32).view(np.float32)
        responses = []
        for request in requests:
            try:
                features = pb_utils.get_input_tensor_by_name(request, "features").as_numpy()
                if features.shape[0] and np.any(features[:, 0] == ERROR_TRIGGER):
                    responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"fraud_sentinel: {SENTINEL_ERROR}")))
                    continue
                out = np.tile(row, (features.shape[0], 1))
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probability", out)]))
            except Exception as exc:  # never let the stub die on one request
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"fraud_sentinel: {type(exc).__name__}: {exc}")))
        return responses
