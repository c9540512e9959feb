"""merchant_intent: merchant description -> (grocery, travel, gambling) scores, one file for both
versions.

Input  ``text``   BYTES [batch, 1]: UTF-8 merchant description.
Output ``scores`` FP32  [batch, 3]: softmax over (grocery, travel, gambling), from a keyword lexicon
                  plus deterministic token hashing (blake2b), numpy only.

``merchant_intent/2/model.py`` is a relative symlink to this file; ``initialize`` picks the
version's lexicon and weights from ``args["model_version"]``: version 1 knows a small keyword
lexicon, version 2 knows more keywords (mart, resort, sportsbook, bingo, ...) and weighs them more.

Side effect, the reason this model is in the example: for every successful request it appends one
JSON line ({"request_id", "model", "model_version", "texts", "time"}) to the "preference cache"
file named by the environment variable SHADOWGRPC_PREFERENCE_CACHE (nothing when it is unset),
as one os.write on an O_APPEND descriptor, so concurrent lines never interleave. A request that
carries the request parameter ``shadow`` = true (bool, or the strings "true"/"1"/"yes") is a
shadow copy of a live request: the write is skipped.

Self-contained (numpy only); shadowgrpc.examples.data.reference_merchant_intent computes the same
scores.
"""

import hashlib
import json
import os
import re
import time

import numpy as np
import triton_python_backend_utils as pb_utils

NAME = "merchant_intent"
CATEGORIES = ("grocery", "travel", "gambling")
LEXICON_V1 = {
    "grocery": ("grocery", "groceries", "market", "supermarket", "foods", "fresh", "bakery", "organic"),
    "travel": ("air", "airlines", "airways", "hotel", "hotels", "travel", "rail", "rental", "booking"),
    "gambling": ("casino", "bet", "betting", "poker", "slots", "lottery"),
}
LEXICON_V2_EXTRA = {
    "grocery": ("mart", "grocer", "deli", "produce"),
    "travel": ("inn", "resort", "hostel", "flights", "cruise"),
    "gambling": ("wager", "sportsbook", "bingo", "jackpot", "odds"),
}
VERSIONS = {
    "1": {"lexicons": (LEXICON_V1,), "keyword": 3.0, "hash_scale": 0.6, "bias": (0.3, 0.0, -0.3)},
    "2": {"lexicons": (LEXICON_V1, LEXICON_V2_EXTRA), "keyword": 3.5, "hash_scale": 0.4, "bias": (0.2, 0.1, -0.3)},
}
TOKEN = re.compile(r"[a-z0-9]+")
PREFERENCE_CACHE_ENV = "SHADOWGRPC_PREFERENCE_CACHE"


class BadInput(ValueError):
    pass


def is_shadow(request):
    try:
        params = json.loads(request.parameters() or "{}")
    except (TypeError, ValueError):
        return False
    value = params.get("shadow") if isinstance(params, dict) else None
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, int):
        return value == 1
    return False


class TritonPythonModel:
    def initialize(self, args):
        self.model_version = str(args["model_version"])
        if self.model_version not in VERSIONS:
            raise ValueError(f"{NAME} has versions {sorted(VERSIONS)}, not {self.model_version!r}")
        self.label = f"{NAME} v{self.model_version}"
        c = VERSIONS[self.model_version]
        self.keyword, self.hash_scale, self.bias = c["keyword"], c["hash_scale"], np.asarray(c["bias"], np.float64)
        self.lexicon = {}  # word -> category index
        for lexicon in c["lexicons"]:
            for k, category in enumerate(CATEGORIES):
                self.lexicon.update(dict.fromkeys(lexicon[category], k))
        self.cache_path = os.environ.get(PREFERENCE_CACHE_ENV) or None

    def token_vector(self, token):
        digest = hashlib.blake2b(f"{NAME}:{self.model_version}:{token}".encode(), digest_size=6).digest()
        return np.frombuffer(digest, dtype="<u2").astype(np.float64) / 65535.0 - 0.5

    def scores(self, texts):
        logits = np.zeros((len(texts), len(CATEGORIES)), dtype=np.float64)
        for i, text in enumerate(texts):
            row = self.bias.copy()
            for token in TOKEN.findall(text.lower()):
                row += self.hash_scale * self.token_vector(token)
                if token in self.lexicon:
                    row[self.lexicon[token]] += self.keyword
            logits[i] = row
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def decode_texts(self, array):
        texts = []
        for i, item in enumerate(np.asarray(array, dtype=object).reshape(-1)):
            if isinstance(item, str):
                texts.append(item)
                continue
            try:
                texts.append(bytes(item).decode("utf-8"))
            except (UnicodeDecodeError, TypeError) as exc:
                raise BadInput(f"{self.label}: text[{i}] is not valid UTF-8 ({exc})") from None
        return texts

    def remember(self, request, texts):
        if self.cache_path is None or is_shadow(request):
            return
        line = json.dumps(
            {
                "request_id": request.request_id(),
                "model": NAME,
                "model_version": self.model_version,
                "texts": texts,
                "time": time.time(),
            },
            ensure_ascii=False,
        )
        with open(self.cache_path, "ab", buffering=0) as fh:  # O_APPEND, unbuffered: one os.write per line
            fh.write((line + "\n").encode("utf-8"))

    def answer(self, request):
        tensor = pb_utils.get_input_tensor_by_name(request, "text")
        if tensor is None:
            raise BadInput(f"{self.label}: missing input 'text'")
        texts = self.decode_texts(tensor.as_numpy())
        out = self.scores(texts)
        self.remember(request, texts)
        return [pb_utils.Tensor("scores", out)]

    def execute(self, requests):
        return [self.respond(request) for request in requests]

    def respond(self, request):
        try:
            return pb_utils.InferenceResponse(output_tensors=self.answer(request))
        except BadInput as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
        except Exception as exc:  # never let the stub die on one request
            message = f"{self.label}: internal error: {type(exc).__name__}: {exc}"
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
