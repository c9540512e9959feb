"""Synthetic traffic for the example model repository, with known ground truth, and numpy
reference implementations of the example models (same coefficients as their ``model.py``).

The example story: a card-fraud model ``fraud`` is live at version 1; version 2 was retrained and
is deployed as a shadow. Neither is simply "better", which is what shadow mode has to reveal:

* ground truth (``true_fraud_probability``) has two strong effects besides the usual risk signals:
  a **foreign transaction at night** (``is_foreign`` and hour < 6) and a **high amount**
  (>= $2,000, i.e. ``amount_log`` >= 3.3). In both slices most transactions are fraud.
* ``fraud`` **v1** (live) learned the high-amount effect (a step feature) but not the foreign-at-night
  interaction: on the ``foreign_night`` slice it mostly says legit -> misses most frauds.
* ``fraud`` **v2** (retrained) added the ``is_foreign x night`` interaction, but was trained on a
  sample capped at $1,000, so it lost the high-amount step: on the ``high_amount`` slice it mostly
  says legit.
* Elsewhere both agree with each other most of the time (slightly different weights).
* Against labels: v2 **improves** on ``foreign_night`` (shadow right / live wrong) and **regresses**
  on ``high_amount`` (live right / shadow wrong). ``SLICES`` names these masks.
* Missing features: v1 rejects a request with any non-finite feature (INVALID_ARGUMENT); v2
  imputes non-finite features with ``FRAUD_IMPUTE`` (training means). So error rates by kind
  differ too.

Feature vector (``FEATURES``, float32, in this order):

=====  =====================  =========================================================
index  name                   meaning
=====  =====================  =========================================================
0      amount_log             log10(1 + amount in USD): $36 -> 1.57, $2,000 -> 3.30
1      hour_of_day            local hour / 24, in [0, 1); night is hour < 6 (< 0.25)
2      merchant_risk          merchant risk score in [0, 1]
3      distance_from_home     log10(1 + km from the card holder's home)
4      card_age_years         years since the card was issued
5      tx_count_24h           transactions on this card in the last 24 h
6      is_foreign             1.0 if the merchant is abroad, else 0.0
7      new_device             1.0 if the device was never seen for this card, else 0.0
=====  =====================  =========================================================

``fraud`` outputs ``probability`` float32 [2] = (P(legit), P(fraud)).

``basket_value`` (regression) takes ``BASKET_FEATURES`` (n_items, mean_item_price, loyalty_years,
promo_active) and predicts the basket value in USD: v1 is linear (it underestimates large baskets),
v2 adds the items x price term (much closer to the truth, but it over-discounts promo baskets).

``merchant_intent`` scores a merchant description (BYTES) into ``INTENT_CATEGORIES`` with a
keyword lexicon plus deterministic token hashing; v2 knows more keywords (e.g. ``sportsbook``,
``resort``). It appends one JSON line per request to ``$SHADOWGRPC_PREFERENCE_CACHE`` (a side
effect it skips for requests carrying the ``shadow`` parameter).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import numpy as np

__all__ = [
    "BASKET_FEATURES",
    "FEATURES",
    "FRAUD_IMPUTE",
    "INTENT_CATEGORIES",
    "SLICES",
    "make_baskets",
    "make_merchant_texts",
    "make_transactions",
    "reference_basket_value",
    "reference_fraud_probability",
    "reference_merchant_intent",
    "slice_masks",
    "true_fraud_probability",
]

FEATURES: tuple[str, ...] = (
    "amount_log",
    "hour_of_day",
    "merchant_risk",
    "distance_from_home",
    "card_age_years",
    "tx_count_24h",
    "is_foreign",
    "new_device",
)

NIGHT_END = 0.25  # hour_of_day < 6/24
HIGH_AMOUNT_LOG = 3.3  # amount_log >= 3.3 <=> amount >= ~$2,000

# --------------------------------------------------------------------------------------------
# fraud: ground truth
# --------------------------------------------------------------------------------------------

_TRUE_INTERCEPT = -6.2
_TRUE_WEIGHTS = np.array([0.45, 0.0, 3.2, 0.45, -0.22, 0.16, 0.9, 1.9], dtype=np.float64)
_TRUE_HIGH_AMOUNT = 6.2
_TRUE_FOREIGN_NIGHT = 6.0


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def true_fraud_probability(features: np.ndarray) -> np.ndarray:
    """P(fraud) of the generator behind ``make_transactions`` (float64 [n])."""
    x = np.asarray(features, dtype=np.float64)
    night = (x[:, 1] < NIGHT_END).astype(np.float64)
    high = (x[:, 0] >= HIGH_AMOUNT_LOG).astype(np.float64)
    z = _TRUE_INTERCEPT + x @ _TRUE_WEIGHTS + _TRUE_HIGH_AMOUNT * high + _TRUE_FOREIGN_NIGHT * x[:, 6] * night
    return _sigmoid(z)


def make_transactions(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic card transactions: (features float32 [n, 8], labels int64 [n], 1 = fraud).

    Deterministic for a given (n, seed). About 3% are high-amount and about 1% are foreign at
    night, so both slices have a few hundred rows at n = 20,000.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = np.random.default_rng(seed)
    big = rng.random(n) < 0.04
    amount = np.where(big, np.exp(rng.normal(8.0, 0.6, n)), np.exp(rng.normal(3.6, 1.1, n)))
    amount_log = np.log10(1.0 + amount)
    hour = np.where(rng.random(n) < 0.25, rng.uniform(0.0, 24.0, n), np.mod(rng.normal(14.0, 4.0, n), 24.0))
    merchant_risk = rng.beta(2.0, 6.0, n)
    km = np.exp(rng.normal(2.0, 1.6, n))
    distance = np.log10(1.0 + km)
    card_age = np.clip(rng.gamma(2.0, 1.5, n), 0.0, 30.0)
    tx_count = rng.poisson(2.5, n).astype(np.float64)
    is_foreign = (rng.random(n) < np.where(km > 800.0, 0.6, 0.1)).astype(np.float64)
    new_device = (rng.random(n) < 0.07).astype(np.float64)
    features = np.stack(
        [amount_log, hour / 24.0, merchant_risk, distance, card_age, tx_count, is_foreign, new_device], axis=1
    ).astype(np.float32)
    labels = (rng.random(n) < true_fraud_probability(features)).astype(np.int64)
    return features, labels


def slice_masks(features: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of the documented slices: foreign_night, high_amount, rest."""
    x = np.asarray(features)
    foreign_night = (x[:, 6] >= 0.5) & (x[:, 1] < NIGHT_END)
    high_amount = x[:, 0] >= HIGH_AMOUNT_LOG
    return {"foreign_night": foreign_night, "high_amount": high_amount, "rest": ~(foreign_night | high_amount)}


SLICES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "foreign_night": lambda x: slice_masks(x)["foreign_night"],
    "high_amount": lambda x: slice_masks(x)["high_amount"],
    "rest": lambda x: slice_masks(x)["rest"],
}

# --------------------------------------------------------------------------------------------
# fraud: the two model versions (the same coefficients as VERSIONS in model_repository/fraud/1/model.py)
# --------------------------------------------------------------------------------------------

_FRAUD = {
    "1": {
        "intercept": -5.9,
        "weights": (0.55, 0.0, 3.0, 0.40, -0.20, 0.15, 1.1, 1.7),
        "high_amount": 5.6,
        "foreign_night": 0.0,
    },
    "2": {
        "intercept": -6.3,
        "weights": (0.35, 0.0, 3.3, 0.48, -0.23, 0.17, 0.85, 2.0),
        "high_amount": 0.0,
        "foreign_night": 5.7,
    },
}
# v2 replaces non-finite features with these (training means); v1 rejects them.
FRAUD_IMPUTE = (1.7, 0.55, 0.25, 1.0, 3.0, 2.5, 0.14, 0.07)


def reference_fraud_probability(features: np.ndarray, version: int | str) -> np.ndarray:
    """What ``fraud`` version 1 or 2 answers: float32 [n, 2] = (P(legit), P(fraud)).

    Version 1 raises ValueError on non-finite features (Triton answers INVALID_ARGUMENT); version 2
    imputes them with ``FRAUD_IMPUTE``.
    """
    key = str(version)
    if key not in _FRAUD:
        raise ValueError(f"fraud has versions 1 and 2, not {version!r}")
    c = _FRAUD[key]
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != len(FEATURES):
        raise ValueError(f"features must have shape [n, {len(FEATURES)}], got {list(x.shape)}")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        if key == "1":
            rows = sorted({int(r) for r in np.nonzero(bad)[0]})[:10]
            raise ValueError(f"fraud v1: non-finite feature values in batch rows {rows}")
        x = np.where(bad, np.asarray(FRAUD_IMPUTE, dtype=np.float64), x)
    night = (x[:, 1] < NIGHT_END).astype(np.float64)
    high = (x[:, 0] >= HIGH_AMOUNT_LOG).astype(np.float64)
    z = (
        c["intercept"]
        + x @ np.asarray(c["weights"], dtype=np.float64)
        + c["high_amount"] * high
        + c["foreign_night"] * x[:, 6] * night
    )
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
    return np.stack([1.0 - p, p], axis=1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# basket_value
# --------------------------------------------------------------------------------------------

BASKET_FEATURES: tuple[str, ...] = ("n_items", "mean_item_price", "loyalty_years", "promo_active")

_BASKET = {
    # value = intercept + w . x + interaction * n_items * mean_item_price * (1 - promo_discount * promo)
    "1": {"intercept": -70.4, "weights": (10.4, 6.8, 0.6, -7.9), "interaction": 0.0, "promo_discount": 0.0},
    "2": {"intercept": 1.0, "weights": (0.2, 0.1, 0.4, 0.0), "interaction": 1.0, "promo_discount": 0.18},
}


def make_baskets(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic baskets: (features float32 [n, 4], true value float32 [n] in USD)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = np.random.default_rng(seed)
    n_items = rng.poisson(6.0, n).astype(np.float64) + 1.0
    price = np.exp(rng.normal(2.2, 0.6, n))
    loyalty = np.clip(rng.exponential(2.0, n), 0.0, 20.0)
    promo = (rng.random(n) < 0.3).astype(np.float64)
    value = n_items * price * (1.0 - 0.1 * promo) + 0.5 * loyalty + rng.normal(0.0, 2.0, n)
    features = np.stack([n_items, price, loyalty, promo], axis=1).astype(np.float32)
    return features, np.maximum(value, 0.0).astype(np.float32)


def reference_basket_value(features: np.ndarray, version: int | str) -> np.ndarray:
    """What ``basket_value`` version 1 or 2 answers: float32 [n, 1]."""
    key = str(version)
    if key not in _BASKET:
        raise ValueError(f"basket_value has versions 1 and 2, not {version!r}")
    c = _BASKET[key]
    x = np.asarray(features, dtype=np.float32).astype(np.float64)
    if x.ndim != 2 or x.shape[1] != len(BASKET_FEATURES):
        raise ValueError(f"features must have shape [n, {len(BASKET_FEATURES)}], got {list(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"basket_value v{key}: non-finite feature values")
    value = (
        c["intercept"]
        + x @ np.asarray(c["weights"], dtype=np.float64)
        + c["interaction"] * x[:, 0] * x[:, 1] * (1.0 - c["promo_discount"] * x[:, 3])
    )
    return np.maximum(value, 0.0)[:, None].astype(np.float32)


# --------------------------------------------------------------------------------------------
# merchant_intent
# --------------------------------------------------------------------------------------------

INTENT_CATEGORIES: tuple[str, ...] = ("grocery", "travel", "gambling")

_LEXICON_V1 = {
    "grocery": ("grocery", "groceries", "market", "supermarket", "foods", "fresh", "bakery", "organic"),
    "travel": ("air", "airlines", "airways", "hotel", "hotels", "travel", "rail", "rental", "booking"),
    "gambling": ("casino", "bet", "betting", "poker", "slots", "lottery"),
}
_LEXICON_V2_EXTRA = {
    "grocery": ("mart", "grocer", "deli", "produce"),
    "travel": ("inn", "resort", "hostel", "flights", "cruise"),
    "gambling": ("wager", "sportsbook", "bingo", "jackpot", "odds"),
}
_INTENT = {
    "1": {"keyword": 3.0, "hash_scale": 0.6, "bias": (0.3, 0.0, -0.3)},
    "2": {"keyword": 3.5, "hash_scale": 0.4, "bias": (0.2, 0.1, -0.3)},
}
_TOKEN = re.compile(r"[a-z0-9]+")


def _lexicon(version: str) -> dict[str, int]:
    table: dict[str, int] = {}
    sources = [_LEXICON_V1] + ([_LEXICON_V2_EXTRA] if version == "2" else [])
    for source in sources:
        for k, category in enumerate(INTENT_CATEGORIES):
            for word in source[category]:
                table[word] = k
    return table


def _token_vector(token: str, version: str) -> np.ndarray:
    digest = hashlib.blake2b(f"merchant_intent:{version}:{token}".encode(), digest_size=6).digest()
    raw = np.frombuffer(digest, dtype="<u2").astype(np.float64)
    return raw / 65535.0 - 0.5  # 3 values in [-0.5, 0.5]


def reference_merchant_intent(texts: list[str] | list[bytes] | np.ndarray, version: int | str) -> np.ndarray:
    """What ``merchant_intent`` version 1 or 2 answers: float32 [n, 3] (softmax scores)."""
    key = str(version)
    if key not in _INTENT:
        raise ValueError(f"merchant_intent has versions 1 and 2, not {version!r}")
    c = _INTENT[key]
    lexicon = _lexicon(key)
    flat = np.asarray(texts, dtype=object).reshape(-1)
    logits = np.zeros((len(flat), len(INTENT_CATEGORIES)), dtype=np.float64)
    for i, item in enumerate(flat):
        text = item.decode("utf-8") if isinstance(item, bytes) else str(item)
        row = np.asarray(c["bias"], dtype=np.float64).copy()
        for token in _TOKEN.findall(text.lower()):
            row += c["hash_scale"] * _token_vector(token, key)
            if token in lexicon:
                row[lexicon[token]] += c["keyword"]
        logits[i] = row
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


_MERCHANT_PARTS = {
    "grocery": ("Fresh Market", "Organic Foods", "Corner Grocer", "City Supermarket", "Deli & Produce", "Bakery"),
    "travel": ("Blue Airways", "Harbor Hotel", "Rail Europe Booking", "Sunset Resort", "Hostel 21", "Car Rental"),
    "gambling": ("Lucky Casino", "Poker Room", "Sportsbook Live", "Bingo Hall", "Lottery Kiosk", "Jackpot Slots"),
}


def make_merchant_texts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` merchant descriptions and their true category index (int64 [n])."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(INTENT_CATEGORIES), n).astype(np.int64)
    texts = []
    for label in labels:
        parts = _MERCHANT_PARTS[INTENT_CATEGORIES[int(label)]]
        name = parts[int(rng.integers(0, len(parts)))]
        texts.append(f"{name} #{int(rng.integers(1, 999))}")
    return texts, labels
