"""fraud_renamed: a test-only model with the input of ``fraud`` (``features`` FP32 [batch, 8]) whose
config declares ``probability`` FP32 [2] and ``score`` FP32 [2], and which answers only ``score``
(0.25, 0.75 per row): the right values under another output name. Passes the check before traffic
(every output live declares is declared); only the per-answer contract check can catch it.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                n = pb_utils.get_input_tensor_by_name(request, "features").as_numpy().shape[0]
                out = np.tile(np.array([0.25, 0.75], dtype=np.float32), (n, 1))
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("score", out)]))
            except Exception as exc:  # never let the stub die on one request
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"fraud_renamed: {type(exc).__name__}: {exc}")))
        return responses
