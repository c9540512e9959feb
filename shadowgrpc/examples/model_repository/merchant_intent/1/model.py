"""merchant_intent, version 1: merchant description -> (grocery, travel, gambling) scores.

Input  ``text``   BYTES [batch, 1]: UTF-8 merchant description.
Output ``scores`` FP32  [batch, 3]: softmax over (grocery, travel, gambling), from a keyword lexicon
                  plus deterministic token hashing (blake2b), numpy only.

Version 1 knows a small keyword lexicon.


Side effect, the reason this model is in the example: for every successful request it appends one
JSON line ({"request_id", "model", "model_version", "texts", "time"}) to the "preference cache"
file named by the environment variable SHADOWGRPC_PREFERENCE_CACHE (nothing when it is unset),
as one os.write on an O_APPEND descriptor, so concurrent lines never interleave. A request that
carries the request parameter ``shadow`` = true (bool, or the strings "true"/"1"/"yes") is a
shadow copy of a live request: the write is skipped.

Self-contained (Triton loads this file alone); shadowgrpc.examples.data.reference_merchant_intent
computes the same scores.
"""

import hashlib
import json
import os
import re
import time

import numpy as np
import triton_python_backend_utils as pb_utils

NAME = "merchant_intent"
VERSION = "1"
CATEGORIES = ("grocery", "travel", "gambling")
LEXICON = {
    "grocery": (
        "grocery",
        "groceries",
        "market",
        "supermarket",
        "foods",
        "fresh",
        "bakery",
        "organic",
    ),
    "travel": (
        "air",
        "airlines",
        "airways",
        "hotel",
        "hotels",
        "travel",
        "rail",
        "rental",
        "booking",
    ),
    "gambling": (
        "casino",
        "bet",
        "betting",
        "poker",
        "slots",
        "lottery",
    ),
}
KEYWORD_WEIGHT = 3.0
HASH_SCALE = 0.6
BIAS = (0.3, 0.0, -0.3)
TOKEN = re.compile(r"[a-z0-9]+")
PREFERENCE_CACHE_ENV = "SHADOWGRPC_PREFERENCE_CACHE"


class BadInput(ValueError):
    pass


def _token_vector(token):
    digest = hashlib.blake2b(f"merchant_intent:{VERSION}:{token}".encode(), digest_size=6).digest()
    return np.frombuffer(digest, dtype="<u2").astype(np.float64) / 65535.0 - 0.5


def _lexicon_index():
    table = {}
    for k, category in enumerate(CATEGORIES):
        for word in LEXICON[category]:
            table[word] = k
    return table


LEXICON_INDEX = _lexicon_index()


def scores(texts):
    logits = np.zeros((len(texts), len(CATEGORIES)), dtype=np.float64)
    for i, text in enumerate(texts):
        row = np.asarray(BIAS, dtype=np.float64).copy()
        for token in TOKEN.findall(text.lower()):
            row += HASH_SCALE * _token_vector(token)
            if token in LEXICON_INDEX:
                row[LEXICON_INDEX[token]] += KEYWORD_WEIGHT
        logits[i] = row
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def decode_texts(array):
    texts = []
    for i, item in enumerate(np.asarray(array, dtype=object).reshape(-1)):
        if isinstance(item, str):
            texts.append(item)
            continue
        try:
            texts.append(bytes(item).decode("utf-8"))
        except (UnicodeDecodeError, TypeError) as exc:
            raise BadInput(f"{NAME} v{VERSION}: text[{i}] is not valid UTF-8 ({exc})") from None
    return texts


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
        self.model_version = str(args.get("model_version", VERSION))
        self.cache_path = os.environ.get(PREFERENCE_CACHE_ENV) or None

    def _remember(self, request, texts):
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
        fd = os.open(self.cache_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
        finally:
            os.close(fd)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, "text")
                if tensor is None:
                    raise BadInput(f"{NAME} v{VERSION}: missing input 'text'")
                texts = decode_texts(tensor.as_numpy())
                out = scores(texts)
                self._remember(request, texts)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("scores", out)]))
            except BadInput as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
                )
            except Exception as exc:  # never let the stub die on one request
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"{NAME} v{VERSION}: internal error: {type(exc).__name__}: {exc}")
                    )
                )
        return responses
