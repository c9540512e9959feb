"""[routes.mirror] rules (rules.py) and their config (_config_rollout.py), and the coverage ledger
(ledger.py); against the real Triton: tests/triton/test_mirror_rules.py."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc import ledger
from shadowgrpc.config import ConfigError, Settings
from shadowgrpc.rules import NOT_INCLUDED, TOO_LARGE, UNREADABLE, MirrorFilter
from shadowgrpc.state import FrontState

pytestmark = pytest.mark.once  # rules parse with protobuf, the ledger is arithmetic: no twin code on their path


def _route(mirror: dict, **extra) -> dict:
    return {"model": "m", "shadows": [{"name": "a", "version": "2"}], "mirror": mirror, **extra}


def _filter(mirror: dict, **extra) -> MirrorFilter:
    r = Settings.from_dict({"routes": [_route(mirror, **extra)]}).routes[0]
    f = MirrorFilter.of(r.mirror, r.slices)
    assert f is not None
    return f


def _req(amounts=(1.0,), version: str = "", **params) -> bytes:
    req = pb.ModelInferRequest(model_name="m", model_version=version)
    x = np.zeros((len(amounts), 2), np.float32)
    x[:, 0] = amounts
    req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    for k, v in params.items():
        if isinstance(v, bool):
            req.parameters[k].bool_param = v
        elif isinstance(v, int):
            req.parameters[k].int64_param = v
        else:
            req.parameters[k].string_param = v
    return req.SerializeToString()


SLICES = {"slices": [{"name": "amount", "input": "x", "edges": [3.0]}]}


def test_no_rules_means_no_filter_on_the_request_path():
    r = Settings.from_dict({"routes": [{"model": "m"}]}).routes[0]
    assert MirrorFilter.of(r.mirror, r.slices) is None


@pytest.mark.parametrize(
    ("rule", "raw", "version", "md", "why"),
    [
        ({"header": "X-Write", "equals": True}, _req(), "", (("x-write", "true"),), "excluded: exclude[0]"),
        ({"header": "x-write", "equals": "true"}, _req(), "", (("x-write", "false"),), None),
        ({"header": "x-write", "present": True}, _req(), "", (("x-write", "no"),), "excluded: exclude[0]"),
        ({"header": "x-write", "present": False}, _req(), "", (), "excluded: exclude[0]"),
        ({"header": "x-key", "in": ["a", "b"]}, _req(), "", (("x-key", "b"),), "excluded: exclude[0]"),
        ({"header": "x-key-bin", "equals": "\x00\xff"}, _req(), "", (("x-key-bin", b"\x00\xff"),), "excluded: exclude[0]"),
        ({"parameter": "write", "equals": True}, _req(write=True), "", (), "excluded: exclude[0]"),
        ({"parameter": "write", "equals": True}, _req(write=False), "", (), None),
        ({"parameter": "n", "in": [1, 2]}, _req(n=2), "", (), "excluded: exclude[0]"),
        ({"parameter": "mode", "equals": "w"}, _req(), "", (), None),
        ({"version": "3"}, _req(version="3"), "3", (), "excluded: exclude[0]"),
        ({"version": 3}, _req(), "", (), None),
        ({"name": "big", "slice": "amount", "bucket": ">= 3"}, _req((1.0, 4.0)), "", (), "excluded: big"),
        ({"name": "big", "slice": "amount", "bucket": ">= 3"}, _req((1.0, 2.0)), "", (), None),
        ({"parameter": "write", "equals": True}, b"\xff\xff not a request", "", (), UNREADABLE),
    ],
)
def test_each_kind_of_exclude_rule(rule, raw, version, md, why):
    assert _filter({"exclude": [rule]}, **SLICES).why_not(raw, version, md) == why


def test_include_rules_any_match_and_excludes_win():
    f = _filter({"include": [{"header": "x-tenant", "in": ["a"]}, {"parameter": "shadow_ok", "equals": True}], "exclude": [{"name": "w", "header": "x-write", "present": True}]})
    assert f.why_not(_req(), "", (("x-tenant", "a"),)) is None
    assert f.why_not(_req(shadow_ok=True), "", ()) is None
    assert f.why_not(_req(), "", (("x-tenant", "z"),)) == NOT_INCLUDED
    assert f.why_not(_req(), "", (("x-tenant", "a"), ("x-write", "1"))) == "excluded: w"


def test_max_request_mb_is_too_large_before_any_rule():
    f = _filter({"max_request_mb": 0.0001})  # 104 bytes
    assert f.why_not(_req((1.0,) * 20), "", ()) == TOO_LARGE
    assert f.why_not(_req(), "", ()) is None


@pytest.mark.parametrize(
    ("mirror", "message"),
    [
        ({"exclude": [{"header": "x", "parameter": "y"}]}, "routes[0].mirror.exclude[0]: set exactly one of parameter, header, version, slice"),
        ({"exclude": [{"equals": "x"}]}, "set exactly one of"),
        ({"exclude": [{"header": "x", "equals": "a", "in": ["b"]}]}, "set one of equals, in, present"),
        ({"exclude": [{"slice": "nope", "bucket": "x"}]}, "routes[0].mirror.exclude[0].slice: no [[routes.slices]] named 'nope'"),
        ({"exclude": [{"slice": "amount", "bucket": "huge"}]}, "routes[0].mirror.exclude[0].bucket: slice 'amount' has buckets"),
        ({"exclude": [{"header": "x", "bucket": "b"}]}, "only slice rules take a bucket"),
        ({"exclude": [{"version": "v2"}]}, "routes[0].mirror.exclude[0].version: must be a model version number"),
        ({"exclude": [{"header": "x", "in": []}]}, "in: must be a non-empty array"),
        ({"exclude": [{"header": "x", "present": "yes"}]}, "present: must be true or false"),
        ({"exclude": {"header": "x"}}, "routes[0].mirror.exclude: must be an array of tables"),
        ({"exclude": [{"name": "n", "header": "x"}, {"name": "n", "header": "y"}]}, "duplicate rule names"),
        ({"include": [{"header": "x", "color": "red"}]}, "routes[0].mirror.include[0].color: unknown key"),
        ({"max_request_mb": -1}, "routes[0].mirror.max_request_mb: must be in"),
        ({"sample": 1}, "routes[0].mirror.sample: unknown key"),
    ],
)
def test_bad_rules_are_refused_naming_the_key(mirror, message):
    with pytest.raises(ConfigError, match=None) as e:
        Settings.from_dict({"routes": [_route(mirror, **SLICES)]})
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("shadow", "route", "message"),
    [
        ({"amplify": 0}, {}, "routes[0].shadows[0].amplify: must be in [1, 16]"),
        ({"amplify": 2, "constant_qps": 5.0}, {}, "set amplify or constant_qps, not both"),
        ({"constant_qps": 0}, {}, "constant_qps: must be > 0"),
        ({"qps_queue": 10}, {}, "qps_queue: applies only with constant_qps"),
        ({"budget": {"per": "week", "requests": 1}}, {}, "routes[0].shadows[0].budget.per: must be one of hour, day, run"),
        ({"budget": {"per": "day"}}, {}, "budget: set at least one of requests, mb, compute_s"),
        ({"budget": {"requests": 0}}, {}, "budget.requests: must be in"),
        ({}, {"identical_sample": True}, "routes[0].identical_sample: needs at least 2 shadows"),
        ({}, {"identical_sample": "yes"}, "identical_sample: must be true or false"),
    ],
)
def test_bad_capacity_budget_and_identical_keys_are_refused(shadow, route, message):
    with pytest.raises(ConfigError) as e:
        Settings.from_dict({"routes": [{"model": "m", "shadows": [{"name": "a", "version": "2", **shadow}], **route}]})
    assert message in str(e.value)


def test_identical_sample_needs_one_sample_rate():
    two = [{"name": "a", "version": "2", "sample_rate": 0.5}, {"name": "b", "version": "3", "sample_rate": 0.25}]
    with pytest.raises(ConfigError, match="every shadow needs the same sample_rate"):
        Settings.from_dict({"routes": [{"model": "m", "shadows": two, "identical_sample": True}]})


def test_ledger_rows_add_up_to_the_routes_requests_per_target():
    r = Settings.from_dict({"routes": [{"model": "m", "shadows": [{"name": "a", "version": "2"}, {"name": "b", "version": "3"}]}]}).routes[0]
    rs = FrontState.for_routes((r,), 10, 10.0, 1 << 20).routes["m"]
    st = rs.stats
    st.requests = 100
    st.shm_not_mirrored, st.too_large = 2, 3
    st.excluded["excluded: w"] = 5
    a, b = (ts.stats for ts in rs.shadows)
    a.sent, a.not_sampled, a.shed, a.budget = 80, 4, 3, 3
    b.sent, b.down, b.held_back = 60, 10, 5  # b's window opened after 15 requests
    rows = ledger.rows(rs)
    by = {}
    for target, reason, n in rows:
        by.setdefault(target, {})[reason] = n
    assert by["a"] == {"shared_memory": 2, "too_large": 3, "excluded: w": 5, "sent": 80, "not_sampled": 4, "shed": 3, "budget": 3}
    assert by["b"] == {"shared_memory": 2, "too_large": 3, "excluded: w": 5, "sent": 60, "down": 10, "held_back": 5, "window_not_open": 15}
    assert all(sum(v.values()) == 100 for v in by.values())


def test_a_reload_that_changes_an_identical_routes_shadows_starts_a_new_nway_block():
    from shadowgrpc.admission import Admission
    from shadowgrpc.state import CLOSED, TargetState

    shadows = [{"name": "a", "version": "2"}, {"name": "b", "version": "3"}, {"name": "c", "version": "4"}]
    r2, r3 = (Settings.from_dict({"routes": [{"model": "m", "identical_sample": True, "shadows": shadows[:n]}]}).routes[0] for n in (2, 3))
    rs = FrontState.for_routes((r2,), 10, 10.0, 1 << 20).routes["m"]
    adm = Admission.__new__(Admission)  # _attach needs nothing of a router for these targets
    adm._attach(rs)
    first = rs.nway
    assert first.names == ["a", "b"]
    adm._attach(rs)
    assert rs.nway is first  # an unchanged route keeps its block
    rs.shadows.append(TargetState(r3.shadows[2]))  # what reload.py does for an added shadow
    adm._attach(rs)
    assert rs.nway.names == ["a", "b", "c"] and rs.nway is not first
    rs.shadows[0].status = CLOSED  # a removed shadow's window closes
    adm._attach(rs)
    assert rs.nway.names == ["b", "c"]
