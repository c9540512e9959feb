"""sample_key of both twins: FNV-1a 64 then murmur3's fmix64, checked against an independent
implementation, known vectors, and the rate it hits on sequential request ids."""

from __future__ import annotations

from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.wire import SETTINGS


# --- sample_key ----------------------------------------------------------------------------------

def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) % 2**64
    return h


@pytest.mark.parametrize(
    ("request_id", "fnv"),
    [("", 0xCBF29CE484222325), ("a", 0xAF63DC4C8601EC8C), ("foobar", 0x85944171F73967E8)],
)
def test_sample_key_vectors(packing_impl: ModuleType, request_id: str, fnv: int) -> None:
    assert _fnv1a64(request_id.encode()) == fnv
    assert packing_impl.sample_key(request_id) == (_fmix64(fnv) >> 11) * 2.0**-53


def _fmix64(h: int) -> int:
    # murmur3 fmix64, written independently of the twins.
    m = 2**64
    h ^= h >> 33
    h = h * 0xFF51AFD7ED558CCD % m
    h ^= h >> 33
    h = h * 0xC4CEB9FE1A85EC53 % m
    return h ^ (h >> 33)


@pytest.mark.parametrize("pattern", ["req-{}", "demo-intent-{}", "txn-{:08d}", "{}", "{:x}-user"])
@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5])
def test_sample_key_is_uniform_on_sequential_ids(packing_impl: ModuleType, pattern: str, rate: float) -> None:
    # Real request ids are often sequential; the sample must still hit the configured rate.
    n = 20000
    hits = sum(packing_impl.sample_key(pattern.format(i)) < rate for i in range(n))
    sd = (n * rate * (1 - rate)) ** 0.5
    assert abs(hits - n * rate) < 5 * sd, (pattern, rate, hits / n)


@SETTINGS
@given(request_id=st.text(max_size=64))
def test_sample_key_range_and_oracle(packing_impl: ModuleType, request_id: str) -> None:
    key = packing_impl.sample_key(request_id)
    assert 0.0 <= key < 1.0
    assert key == (_fmix64(_fnv1a64(request_id.encode("utf-8"))) >> 11) / 2**53


def test_sample_key_types(packing_impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        packing_impl.sample_key(b"id")
    with pytest.raises(UnicodeEncodeError):
        packing_impl.sample_key("\udc80")
