"""fraud_batched: a test-only model that is fraud version 2 under another environment.

Same interface and answers as ``fraud`` version 2 (input ``features`` FP32 [batch, 8], output
``probability`` FP32 [batch, 2]): the model class is the example's own fraud model.py, loaded from
the shadowgrpc installed in the environment that the Python-backend stub runs in, as version 2.
Only config.pbtxt differs (dynamic batching, two instances, the shadow-honouring parameter): the
parity audit's subject, not the answers.
"""

import shadowgrpc.examples


fraud = shadowgrpc.examples.load_model_module("fraud")


class TritonPythonModel(fraud.TritonPythonModel):
    def initialize(self, args):
        super().initialize({**args, "model_version": "2"})
        self.label = args["model_name"]
