"""The consistency check of `shadowgrpc demo` on made-up reports, consistent or not (no Triton). The
demo end to end: tests/local/test_demo.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadowgrpc.local.demo import _check
from shadowgrpc.packing import sample_key
from shadowgrpc.v1 import shadow_pb2 as pb


RATES = {"fraud": {"fraud-v2": 1.0, "fraud-v1-aa": 0.25}, "merchant_intent": {"merchant_intent-v2": 0.5}}
N_FRAUD, N_INTENT, BATCH = 400, 40, 4


def _made_up(tmp_path: Path, v2_shed: int = 0, v2_errors: int = 0):
    """A report, outcome reply and `sent` as the demo would see them when the front counted right:
    fraud-v2 lost its first ``v2_shed`` requests to shedding and the next ``v2_errors`` to
    DEADLINE_EXCEEDED; the outcomes joined are exactly the requests some shadow compared."""
    ids = {"fraud": [f"demo-fraud-{i}" for i in range(N_FRAUD)], "merchant_intent": [f"demo-intent-{i}" for i in range(N_INTENT)]}
    rep = pb.Report(version="test")
    paired: set[str] = set()
    for model, shadows in RATES.items():
        n = len(ids[model])
        r = rep.routes.add(model=model, requests=n, live_ok=n)
        for name, rate in shadows.items():
            picked = [rid for rid in ids[model] if sample_key(rid) < rate]
            shed, errors = (v2_shed, v2_errors) if name == "fraud-v2" else (0, 0)
            s = r.shadows.add(target=pb.Target(name=name, sample_rate=rate, max_in_flight=64))
            s.sampled, s.shed, s.sent = len(picked), shed, len(picked) - shed
            if errors:
                s.errors["DEADLINE_EXCEEDED"] = errors
            s.ok = s.compared = s.sent - errors
            if model == "fraud":
                s.ground_truth.rows = s.compared * BATCH
                paired.update(picked[shed + errors :])
    outcomes = pb.RecordOutcomesResponse(received=N_FRAUD, accepted=len(paired), unknown=N_FRAUD - len(paired))
    sent = {"fraud": N_FRAUD, "merchant_intent": N_INTENT, "errors": 0, "fraud_attempts": N_FRAUD, "merchant_intent_attempts": N_INTENT}
    sent.update(ids=ids, batch=BATCH)
    prefs = tmp_path / "preference_cache.jsonl"
    prefs.write_text("{}\n" * N_INTENT)
    return rep, sent, prefs, outcomes


def _shadow(rep, name: str):
    return next(s for r in rep.routes for s in r.shadows if s.target.name == name)


def test_check_passes_a_consistent_report_with_one_join_per_request(tmp_path, capsys):
    rep, sent, prefs, outcomes = _made_up(tmp_path)
    assert outcomes.accepted == N_FRAUD
    assert _check(rep, sent, prefs, outcomes, RATES) == 0
    assert f"the {N_FRAUD} outcomes joined = every fraud request sampled by a shadow ({N_FRAUD})" in capsys.readouterr().out


def test_check_accounts_for_shed_and_failed_shadow_calls(tmp_path, capsys):
    rep, sent, prefs, outcomes = _made_up(tmp_path, v2_shed=30, v2_errors=5)
    assert N_FRAUD - 35 < outcomes.accepted < N_FRAUD  # some of the 35 were paired by the A/A shadow
    assert _check(rep, sent, prefs, outcomes, RATES) == 0
    out = capsys.readouterr().out
    assert "consistency check: OK" in out and f"{N_FRAUD - 35}..{N_FRAUD} possible" in out
    assert "fraud-v2: shed 30, errors 5" in out


def _unpaired_outcome(rep, o):
    """An outcome found no pair although every shadow call was compared (the old demo failure,
    with nothing in the report to explain it)."""
    o.accepted -= 1
    o.unknown += 1


def _fewer_joins_than_shed_allows(rep, o):
    v2 = _shadow(rep, "fraud-v2")
    v2.shed += 3
    v2.sent -= 3
    v2.ok -= 3
    v2.compared -= 3
    v2.ground_truth.rows -= 3 * BATCH
    o.accepted -= 4  # 3 shed calls explain at most 3 unpaired outcomes
    o.unknown += 4


def _compared_pair_not_joined(rep, o):
    _shadow(rep, "fraud-v1-aa").ground_truth.rows -= BATCH


def _shed_call_not_counted(rep, o):
    _shadow(rep, "fraud-v2").sent -= 1


def _answer_neither_compared_nor_explained(rep, o):
    _shadow(rep, "merchant_intent-v2").compared -= 1


def _sampled_other_requests(rep, o):
    aa = _shadow(rep, "fraud-v1-aa")
    aa.sampled += 1
    aa.sent += 1
    aa.ok += 1
    aa.compared += 1
    aa.ground_truth.rows += BATCH


def _request_not_counted(rep, o):
    rep.routes[1].requests -= 1


def _duplicate_outcome(rep, o):
    o.duplicate += 1
    o.accepted -= 1


BROKEN = [
    (_unpaired_outcome, "outcomes joined"),
    (_fewer_joins_than_shed_allows, "can be"),
    (_compared_pair_not_joined, "every compared pair must be joined"),
    (_shed_call_not_counted, "!= sent"),
    (_answer_neither_compared_nor_explained, "!= compared"),
    (_sampled_other_requests, "sample_key"),
    (_request_not_counted, "merchant_intent: sent 40"),
    (_duplicate_outcome, "duplicate 1"),
]


@pytest.mark.parametrize("break_it, says", BROKEN, ids=[f.__name__.strip("_") for f, _ in BROKEN])
def test_check_fails_on_wrong_counts(tmp_path, capsys, break_it, says):
    rep, sent, prefs, outcomes = _made_up(tmp_path)
    break_it(rep, outcomes)
    assert _check(rep, sent, prefs, outcomes, RATES) == 1
    out = capsys.readouterr().out
    assert "consistency check FAILED" in out and says in out, out


def test_check_fails_when_a_shadow_wrote_the_preference_cache(tmp_path, capsys):
    rep, sent, prefs, outcomes = _made_up(tmp_path)
    prefs.write_text("{}\n" * (N_INTENT + 1))
    assert _check(rep, sent, prefs, outcomes, RATES) == 1
    assert "preference cache has 41 lines" in capsys.readouterr().out
