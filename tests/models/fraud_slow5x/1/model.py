"""fraud_slow5x: a test-only model that is fraud version 2 plus a fixed sleep per request.

Same interface, answers and errors as ``fraud`` v2 (the model class extends the example's own
fraud model.py, loaded from the shadowgrpc installed in the stub's environment, like
fraud_recorder). Each request sleeps ``sleep_ms`` from config.pbtxt, or
$SHADOWGRPC_SLOW5X_SECONDS when set, before answering: a shadow about 5x slower than live fraud,
so that the latency gate has a real slowdown to detect (tests/triton/test_latency_gate.py,
benchmarks/latency_gate.py).
"""

import json
import os
import time

import shadowgrpc.examples


fraud = shadowgrpc.examples.load_model_module("fraud")


class TritonPythonModel(fraud.TritonPythonModel):
    def initialize(self, args):
        super().initialize({**args, "model_version": "2"})
        self.label = args["model_name"]
        params = json.loads(args.get("model_config", "{}")).get("parameters", {})
        sleep_ms = float(params.get("sleep_ms", {}).get("string_value", "10"))
        env = os.environ.get("SHADOWGRPC_SLOW5X_SECONDS")
        self.sleep_s = float(env) if env else sleep_ms / 1e3

    def answer(self, request):
        time.sleep(self.sleep_s)
        return super().answer(request)
