"""fraud_faulty: a test-only model with the interface of ``fraud`` (input ``features`` FP32
[batch, 8], output ``probability`` FP32 [batch, 2]) whose every request fails with
TritonError("fraud_faulty: simulated failure") (gRPC status INTERNAL): a crashed shadow.
"""

import triton_python_backend_utils as pb_utils

MESSAGE = "fraud_faulty: simulated failure"


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError(MESSAGE)) for _ in requests]
