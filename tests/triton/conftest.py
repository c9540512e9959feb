"""Fixtures of the tests against the real embedded Triton (the session ``triton`` fixture comes from
the plugin tests/fixtures_triton.py, registered in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.frontctl import front_for


@pytest.fixture(scope="module")
def front(triton):
    """A front on the session Triton: fraud v1 live with every kind of shadow (v2, the recorder, a
    failing, a slow, a missing one and a declared-incompatible one (both refused before traffic), and a
    loose one whose declared contract passes but whose answers do not), merchant_intent and basket_value with v2,
    fraud_sleepy unshadowed. Module-scoped: each test module gets its own front."""
    routes = [
        {
            "model": "fraud",
            "live": {"version": "1"},
            "shadows": [
                {"name": "v2", "version": "2"},
                {"name": "recorder", "model": "fraud_recorder"},
                {"name": "faulty", "model": "fraud_faulty"},
                {"name": "sleepy", "model": "fraud_sleepy", "max_in_flight": 4},
                {"name": "missing", "model": "no_such_model"},
                {"name": "garbage", "model": "fraud_garbage"},
                {"name": "loose", "model": "fraud_loose"},
            ],
        },
        {"model": "merchant_intent", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]},
        {"model": "basket_value", "shadows": [{"name": "v2", "version": "2", "sample_rate": 0.5}]},
        {"model": "fraud_sleepy"},
    ]
    ft = front_for(triton.grpc_address, routes)
    yield ft
    ft.stop()
