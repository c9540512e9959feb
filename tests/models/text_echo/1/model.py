"""text_echo: a test-only model with a text (BYTES) output, for tests/triton/test_text_outputs.py.

Each element of TEXT (BYTES [batch, 1]) gives one element of ANSWER. Version 1 echoes it.
Version 2 (``rewrite``): b"colour" becomes b"color" everywhere, and an element whose length in
bytes is a multiple of 3 gets b" [v2]" appended; bytes, so invalid UTF-8 passes through.
``2/model.py`` is a symlink to this file.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


def rewrite(text: bytes) -> bytes:
    out = text.replace(b"colour", b"color")
    return out + b" [v2]" if len(text) % 3 == 0 else out


class TritonPythonModel:
    def initialize(self, args):
        self.version = str(args["model_version"])

    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            flat = [bytes(t) for t in texts.reshape(-1)]
            if self.version == "2":
                flat = [rewrite(t) for t in flat]
            out = np.array(flat, dtype=np.object_).reshape(texts.shape)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("ANSWER", out)]))
        return responses
