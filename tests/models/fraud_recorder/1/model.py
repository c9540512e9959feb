"""fraud_recorder and fraud_sleepy: test-only models that are fraud version 2 plus a side effect.

Same interface as ``fraud`` (input ``features`` FP32 [batch, 8], output ``probability`` FP32
[batch, 2]), same answers and errors (prefixed with the model name): the model class below extends
the example's own fraud model.py, loaded from the shadowgrpc installed in the environment that
the Python-backend stub runs in.

One file for both: ``fraud_sleepy/1/model.py`` is a relative symlink to this file, and
``initialize`` picks the side effect from ``args["model_name"]``:

* fraud_recorder appends one JSON line per request to the file named by SHADOWGRPC_RECORDER_PATH
  (nothing when unset): request id, request parameters (the JSON of request.parameters(), where a
  shadow copy carries "shadow": true), input dtype and shape, and the raw input bytes (base64) and
  their sha256, so a test can prove from the model side that a shadow received exactly the live
  inputs and the shadow mark. One os.write on an O_APPEND fd per line, so lines never interleave.
* fraud_sleepy sleeps SHADOWGRPC_SLEEPY_SECONDS seconds (default 2.0) per request, then answers: a
  slow shadow. Its config has two instances, so two requests sleep concurrently.
"""

import base64
import hashlib
import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils

import shadowgrpc.examples


fraud = shadowgrpc.examples.load_model_module("fraud")


class TritonPythonModel(fraud.TritonPythonModel):
    def initialize(self, args):
        super().initialize({**args, "model_version": "2"})
        self.name = self.label = args["model_name"]
        self.model_version = str(args["model_version"])
        hooks = {"fraud_recorder": self.record, "fraud_sleepy": self.sleep}
        if self.name not in hooks:
            raise ValueError(f"this model.py serves {sorted(hooks)}, not {self.name!r}")
        self.on_request = hooks[self.name]
        self.path = os.environ.get("SHADOWGRPC_RECORDER_PATH") or None
        self.sleep_s = float(os.environ.get("SHADOWGRPC_SLEEPY_SECONDS", "2.0"))

    def answer(self, request):
        outputs = super().answer(request)
        self.on_request(request, pb_utils.get_input_tensor_by_name(request, "features").as_numpy())
        return outputs

    def sleep(self, request, features):
        time.sleep(self.sleep_s)

    def record(self, request, features):
        if self.path is None:
            return
        raw = np.ascontiguousarray(features).tobytes()
        try:
            parameters = json.loads(request.parameters() or "{}")
        except ValueError:
            parameters = {"_unparsed": request.parameters()}
        line = json.dumps(
            {
                "model": self.name,
                "model_version": self.model_version,
                "request_id": request.request_id(),
                "parameters": parameters,
                "input": "features",
                "dtype": str(features.dtype),
                "shape": list(features.shape),
                "data_b64": base64.b64encode(raw).decode("ascii"),
                "sha256": hashlib.sha256(raw).hexdigest(),
                "time": time.time(),
            },
            sort_keys=True,
        )
        with open(self.path, "ab", buffering=0) as fh:  # O_APPEND, unbuffered: one os.write per line
            fh.write((line + "\n").encode("utf-8"))
