"""tokens: a test-only decoupled model (several responses per request) for tests/triton.

For an input N (INT32 [1]) version 1 sends N responses, TOKEN = 0 .. N-1; version 2 sends one more
when N >= 3 (TOKEN = 0 .. N), so live and shadow lists differ in length there. Then the final flag
(Triton sends an empty final response only when the request asked for one:
``triton_enable_empty_final_response``). ``2/model.py`` is a symlink to this file.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.version = str(args["model_version"])

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy().reshape(-1)[0])
            count = n + 1 if self.version == "2" and n >= 3 else n
            for i in range(count):
                sender.send(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TOKEN", np.array([i], dtype=np.int32))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
