"""fraud_loose: a test-only model with the input of ``fraud`` (``features`` FP32 [batch, 8]) whose
config declares ``probability`` FP32 [-1] (compatible with fraud's [2] before traffic) and which
answers FP32 [batch, 3]: (0.2, 0.3, 0.5) per row. A wrong answer shape only the per-answer check sees.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                n = pb_utils.get_input_tensor_by_name(request, "features").as_numpy().shape[0]
                out = np.tile(np.array([0.2, 0.3, 0.5], dtype=np.float32), (n, 1))
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probability", out)]))
            except Exception as exc:  # never let the stub die on one request
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"fraud_loose: {type(exc).__name__}: {exc}")))
        return responses
