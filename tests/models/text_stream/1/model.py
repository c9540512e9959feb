"""text_stream: a test-only decoupled model streaming text tokens, for tests/triton/test_text_outputs.py.

For an input TEXT (BYTES [1]) it sends one response per word (``TEXT.split()``), TOKEN = the word
(BYTES [1]). Version 2 (``tokens``) upper-cases the words at index 2, 5, 8, ... and, for 4 or more
words, sends one more token b"<eos>". Then the final flag (Triton sends an empty final response
only when the request asked for one: ``triton_enable_empty_final_response``). ``2/model.py`` is a
symlink to this file.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


def tokens(text: bytes, version: str) -> list[bytes]:
    words = text.split()
    if version != "2":
        return words
    out = [w.upper() if i % 3 == 2 else w for i, w in enumerate(words)]
    return out + [b"<eos>"] if len(words) >= 4 else out


class TritonPythonModel:
    def initialize(self, args):
        self.version = str(args["model_version"])

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            text = bytes(pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)[0])
            for word in tokens(text, self.version):
                token = pb_utils.Tensor("TOKEN", np.array([word], dtype=np.object_))
                sender.send(pb_utils.InferenceResponse(output_tensors=[token]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
