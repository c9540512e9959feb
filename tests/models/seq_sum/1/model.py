"""seq_sum: a test-only sequence model (sequence batcher, oldest strategy) for tests/triton.

OUTPUT = the running sum of INPUT over the sequence (by CORRID), reset by START, dropped at END.
Version 2 differs: it adds 1 to the sum whenever INPUT is 3 (so v1 and v2 disagree on sequences
that contain a 3), and sleeps SHADOWGRPC_SLEEPY_SECONDS / 4 seconds on an INPUT of 999 (a slow
step, to fill a shadow's max_in_flight). Every request is recorded as one JSON line appended to
$SHADOWGRPC_RECORDER_PATH (when set): model, version, request id, correlation id, start/end flags,
input, and whether it carries the shadow mark, so that a test can see from the model side which
requests of which sequence reached which version. ``2/model.py`` is a symlink to this file.
"""

import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _scalar(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy().reshape(-1)[0]


class TritonPythonModel:
    def initialize(self, args):
        self.version = str(args["model_version"])
        self.sums = {}
        self.path = os.environ.get("SHADOWGRPC_RECORDER_PATH") or None
        self.slow_s = float(os.environ.get("SHADOWGRPC_SLEEPY_SECONDS", "2.0")) / 4

    def execute(self, requests):
        responses = []
        for request in requests:
            corrid = int(_scalar(request, "CORRID"))
            start = bool(_scalar(request, "START"))
            end = bool(_scalar(request, "END"))
            x = float(_scalar(request, "INPUT"))
            if self.version == "2" and x == 999.0:
                time.sleep(self.slow_s)
            total = (0.0 if start else self.sums.get(corrid, 0.0)) + x
            if self.version == "2" and x == 3.0:
                total += 1.0
            self.sums[corrid] = total
            if end:
                self.sums.pop(corrid, None)
            self.record(request, corrid, start, end, x)
            out = pb_utils.Tensor("OUTPUT", np.array([[total]], dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses

    def record(self, request, corrid, start, end, x):
        if self.path is None:
            return
        try:
            parameters = json.loads(request.parameters() or "{}")
        except ValueError:
            parameters = {}
        line = json.dumps(
            {
                "model": "seq_sum",
                "model_version": self.version,
                "request_id": request.request_id(),
                "corrid": corrid,
                "start": start,
                "end": end,
                "input": x,
                "shadow": parameters.get("shadow") is True,
                "time": time.time(),
            },
            sort_keys=True,
        )
        with open(self.path, "ab", buffering=0) as fh:  # O_APPEND, unbuffered: one os.write per line
            fh.write((line + "\n").encode("utf-8"))
