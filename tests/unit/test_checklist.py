"""shadowgrpc.checklist: the four items of the validation checklist, each rule and its evidence."""

from __future__ import annotations

import pytest

from shadowgrpc.checklist import ChecklistItem, checklist
from shadowgrpc.parity import Mismatch

GOOD = dict(
    parity=[],
    parity_error="",
    outcome_rows=500,
    min_outcomes=200,
    quality_gates=[("accuracy", "PASS", "0.91 vs 0.90"), ("calibration_ece", "FAIL", "0.08 > 0.05")],
    shadow_marked=True,
    honours_shadow=True,
    sample_rate=0.6,
    requests=2000,
    mirrored=1234,
    coverage=[("", "", 2000, 1234), ("amount", "< 3.3", 1600, 990), ("amount", ">= 3.3", 400, 244)],
)


def item(name: str, **changes) -> ChecklistItem:
    items = {i.name: i for i in checklist(**{**GOOD, **changes})}
    return items[name]


def test_order_and_all_pass():
    items = checklist(**GOOD)
    assert [i.name for i in items] == ["environment_matches_live", "ground_truth", "side_effects_disabled", "traffic_representative"]
    assert [i.status for i in items] == ["PASS"] * 4
    assert all("\n" not in i.evidence for i in items)


# -- environment_matches_live -----------------------------------------------------------------


def test_environment_pass_fail_unknown():
    assert item("environment_matches_live").evidence.startswith("no differences in instance groups")
    fail = item(
        "environment_matches_live",
        parity=[Mismatch("instance_group", "KIND_GPU x1", "KIND_CPU x2"), Mismatch("deadline_s", "caller's", "2.5 s")],
    )
    assert fail == ChecklistItem(
        "environment_matches_live",
        "FAIL",
        "2 differences (live vs shadow): instance_group KIND_GPU x1 vs KIND_CPU x2; deadline_s caller's vs 2.5 s",
    )
    one = item("environment_matches_live", parity=(Mismatch("backend", "onnxruntime", "python"),))
    assert one.evidence == "1 difference (live vs shadow): backend onnxruntime vs python"
    unknown = item("environment_matches_live", parity=None, parity_error="shadow fraud v3: config not readable: NOT_FOUND")
    assert unknown == ChecklistItem("environment_matches_live", "UNKNOWN", "parity audit not run: shadow fraud v3: config not readable: NOT_FOUND")
    assert item("environment_matches_live", parity=None).evidence == "parity audit not run: configs not read"


# -- ground_truth -----------------------------------------------------------------------------


def test_ground_truth_pass_even_when_the_accuracy_gate_fails():
    gates = [("accuracy", "FAIL", "0.80 vs 0.90"), ("calibration_ece", "PASS", "0.01"), ("latency_p99", "SKIPPED", "n/a")]
    got = item("ground_truth", outcome_rows=1234, quality_gates=gates)
    assert got == ChecklistItem("ground_truth", "PASS", "1,234 outcomes joined (need 200); accuracy FAIL, calibration_ece PASS")


def test_ground_truth_without_quality_gates_passes_on_outcomes():
    assert item("ground_truth", quality_gates=[]).evidence == "500 outcomes joined (need 200); no accuracy or calibration gate"


def test_ground_truth_unknown_with_too_few_outcomes_or_undecided_gate():
    assert item("ground_truth", outcome_rows=12) == ChecklistItem("ground_truth", "UNKNOWN", "12 outcomes joined (need 200)")
    undecided = item("ground_truth", quality_gates=[("accuracy", "NOT_ENOUGH_DATA", "120 rows with outcomes, need 200"), ("calibration_ece", "PASS", "")])
    assert undecided == ChecklistItem(
        "ground_truth", "UNKNOWN", "500 outcomes joined (need 200); undecided: accuracy NOT_ENOUGH_DATA: 120 rows with outcomes, need 200"
    )


def test_ground_truth_fail_without_outcomes():
    got = item("ground_truth", outcome_rows=0, quality_gates=[("accuracy", "NOT_ENOUGH_DATA", "no outcomes")])
    assert got == ChecklistItem("ground_truth", "FAIL", "no ground-truth outcomes joined: only compared against live")


# -- side_effects_disabled --------------------------------------------------------------------


def test_side_effects():
    assert item("side_effects_disabled").evidence == (
        "shadow requests marked (request parameter shadow=true, metadata x-shadow-request: 1); the model declares shadowgrpc_honours_shadow=true"
    )
    fail = item("side_effects_disabled", honours_shadow=False)
    assert fail.status == "FAIL"
    assert 'add parameters: { key: "shadowgrpc_honours_shadow" value: { string_value: "true" } } to its config once it does' in fail.evidence
    unknown = item("side_effects_disabled", honours_shadow=None)
    assert unknown.status == "UNKNOWN"
    assert "config was not read" in unknown.evidence
    for honours in (True, False, None):
        assert item("side_effects_disabled", shadow_marked=False, honours_shadow=honours).status == "FAIL"


# -- traffic_representative -------------------------------------------------------------------


def test_traffic_pass_names_the_lowest_bucket():
    got = item("traffic_representative")
    assert got == ChecklistItem(
        "traffic_representative",
        "PASS",
        "mirrored 1,234 of 2,000 requests (61.7%, sample_rate 0.6); lowest bucket amount >= 3.3: 244 of 400 (61.0%)",
    )


def test_traffic_unknown_below_100_requests():
    got = item("traffic_representative", requests=99, mirrored=60, coverage=[])
    assert got == ChecklistItem("traffic_representative", "UNKNOWN", "mirrored 60 of 99 requests (60.6%, sample_rate 0.6); need 100 requests")


def test_traffic_skewed_against_a_bucket_fails_naming_it():
    coverage = [("amount", "< 3.3", 1600, 1194), ("amount", ">= 3.3", 400, 40), ("country", "DE", 50, 0)]  # DE: under 100, not judged
    got = item("traffic_representative", coverage=coverage)
    assert got == ChecklistItem(
        "traffic_representative",
        "FAIL",
        "mirrored 1,234 of 2,000 requests (61.7%, sample_rate 0.6); amount >= 3.3: 40 of 400 (10.0%), "
        "below half the overall share: mirroring is skewed against it",
    )


def test_traffic_below_min_share_overall_or_in_a_bucket():
    low = item("traffic_representative", sample_rate=0.001, requests=100_000, mirrored=90, coverage=[])
    assert low == ChecklistItem(
        "traffic_representative", "FAIL", "mirrored 90 of 100,000 requests (0.1%, sample_rate 0.001), below the minimum share 1.0%"
    )
    # overall 2%, a bucket at 1.5% (not below half the overall share) but below min_share 1.6%
    got = item("traffic_representative", sample_rate=0.02, requests=10_000, mirrored=200, coverage=[("region", "eu", 2000, 30)], min_share=0.016)
    assert got.status == "FAIL"
    assert got.evidence.endswith("region eu: 30 of 2,000 (1.5%), below the minimum share 1.6%")


def test_traffic_without_judged_buckets():
    got = item("traffic_representative", coverage=[("amount", ">= 3.3", 99, 0)])
    assert got == ChecklistItem(
        "traffic_representative", "PASS", "mirrored 1,234 of 2,000 requests (61.7%, sample_rate 0.6); no slice bucket with >= 100 requests"
    )


@pytest.mark.parametrize("share", [0.5, 0.2])
def test_traffic_bucket_exactly_at_half_the_overall_share_passes(share):
    requests, bucket = 1000, 200
    mirrored = int(requests * share)
    got = item("traffic_representative", requests=requests, mirrored=mirrored, coverage=[("s", "b", bucket, int(bucket * share / 2))], min_share=0.01)
    assert got.status == "PASS"
