"""fraud_f64: a test-only model with the input of ``fraud`` (``features`` FP32 [batch, 8]) whose
config declares fraud's output (``probability`` FP32 [2]) but which answers ``probability`` as
FP64 [batch, 2]: (0.25, 0.75) per row. A wrong output datatype that passes the check before
traffic; only the per-answer contract check can catch it.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                n = pb_utils.get_input_tensor_by_name(request, "features").as_numpy().shape[0]
                out = np.tile(np.array([0.25, 0.75], dtype=np.float64), (n, 1))
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probability", out)]))
            except Exception as exc:  # never let the stub die on one request
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"fraud_f64: {type(exc).__name__}: {exc}")))
        return responses
