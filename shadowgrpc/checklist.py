"""The validation checklist practitioners run before trusting a shadow run: four items, each
PASS, FAIL or UNKNOWN (not enough evidence yet) with a one-line evidence string of the figures or
config behind it. The verdict's gates judge the shadow model; this list judges the shadow *run*:
a clean verdict from a run that fails an item here gives false confidence.

environment_matches_live
    From the parity audit (:func:`shadowgrpc.parity.parity_mismatches`): PASS when it found no
    difference; FAIL listing each difference "item live vs shadow"; UNKNOWN with the reason when
    the audit could not run (``parity`` None: live's or the shadow's config was not readable).
ground_truth
    Whether the shadow was compared against ground truth, not only against live (an 80%-accurate
    live model agreed with is still 80%): PASS when ``outcome_rows >= min_outcomes`` and every
    quality gate (the verdict's accuracy / calibration gates, (name, status, reason)) decided:
    PASS or FAIL (SKIPPED is informational and does not count; NOT_ENOUGH_DATA does). The item is
    about the evidence existing: a FAILing accuracy gate still passes it (the verdict fails
    elsewhere). UNKNOWN with some outcomes but fewer than ``min_outcomes``, or enough outcomes
    but an undecided gate; FAIL with none at all.
side_effects_disabled
    PASS when shadow requests are marked (the front always marks them: request parameter
    ``shadow`` = true and metadata ``x-shadow-request: 1``) and the shadow model's config declares
    that it skips side effects for them (parameter ``shadowgrpc_honours_shadow`` = "true",
    :func:`shadowgrpc.parity.honours_shadow`); FAIL when not marked, or marked but not declared
    (the evidence says what to add to config.pbtxt); UNKNOWN when marked and the config is not
    known (``honours_shadow`` None).
traffic_representative
    Whether the mirrored traffic looks like live traffic: ``mirrored`` of ``requests`` live
    requests overall (with the configured ``sample_rate``) and per slice bucket from ``coverage``
    rows (slice, bucket, requests, mirrored; a row with an empty slice is the overall row and is
    ignored). UNKNOWN below 100 requests. Only buckets with at least 100 requests are judged. PASS
    when the overall share and every judged bucket's share are >= ``min_share`` and no judged
    bucket's share is below half the overall share (mirroring skewed against a slice); FAIL
    naming the worst bucket (lowest share) or the low overall share.

Pure function, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .parity import SHADOW_PARAMETER

if TYPE_CHECKING:
    from .parity import Mismatch

__all__ = ["MIN_REQUESTS", "ChecklistItem", "checklist"]

MIN_REQUESTS = 100  # traffic_representative: fewer live requests (overall, or in a bucket) are not judged

SHADOW_MARKS = "request parameter shadow=true, metadata x-shadow-request: 1"
DECLARATION = f'parameters: {{ key: "{SHADOW_PARAMETER}" value: {{ string_value: "true" }} }}'


@dataclass(frozen=True, slots=True)
class ChecklistItem:
    name: str  # environment_matches_live, ground_truth, side_effects_disabled, traffic_representative
    status: str  # PASS, FAIL, UNKNOWN
    evidence: str  # the figures or config behind it, one line


def _environment(parity: Sequence[Mismatch] | None, parity_error: str) -> ChecklistItem:
    name = "environment_matches_live"
    if parity is None:
        return ChecklistItem(name, "UNKNOWN", f"parity audit not run: {parity_error or 'configs not read'}")
    if not parity:
        return ChecklistItem(
            name,
            "PASS",
            "no differences in instance groups, dynamic batching, backend, max batch size, queue timeout, deadlines, "
            "sequence batching, decoupled",
        )
    listed = "; ".join(f"{m.item} {m.live} vs {m.shadow}" for m in parity)
    n = len(parity)
    return ChecklistItem(name, "FAIL", f"{n} difference{'s' if n != 1 else ''} (live vs shadow): {listed}")


def _ground_truth(outcome_rows: int, min_outcomes: int, quality_gates: Sequence[tuple[str, str, str]]) -> ChecklistItem:
    name = "ground_truth"
    joined = f"{outcome_rows:,} outcomes joined (need {min_outcomes:,})"
    if outcome_rows <= 0:
        return ChecklistItem(name, "FAIL", "no ground-truth outcomes joined: only compared against live")
    if outcome_rows < min_outcomes:
        return ChecklistItem(name, "UNKNOWN", joined)
    undecided = [(g, s, r) for g, s, r in quality_gates if s not in ("PASS", "FAIL", "SKIPPED")]
    if undecided:
        gates = "; ".join(f"{g} {s}: {r}" if r else f"{g} {s}" for g, s, r in undecided)
        return ChecklistItem(name, "UNKNOWN", f"{joined}; undecided: {gates}")
    decided = [f"{g} {s}" for g, s, _ in quality_gates if s != "SKIPPED"]
    gates = ", ".join(decided) if decided else "no accuracy or calibration gate"
    return ChecklistItem(name, "PASS", f"{joined}; {gates}")


def _side_effects(shadow_marked: bool, honours: bool | None) -> ChecklistItem:
    name = "side_effects_disabled"
    if not shadow_marked:
        return ChecklistItem(name, "FAIL", "shadow requests are not marked: models and downstream systems cannot tell them from live")
    if honours is None:
        return ChecklistItem(name, "UNKNOWN", f"shadow requests marked ({SHADOW_MARKS}); the shadow's config was not read")
    if honours:
        return ChecklistItem(name, "PASS", f"shadow requests marked ({SHADOW_MARKS}); the model declares {SHADOW_PARAMETER}=true")
    return ChecklistItem(
        name,
        "FAIL",
        f"shadow requests marked ({SHADOW_MARKS}) but the model does not declare that it skips side effects: add "
        f"{DECLARATION} to its config once it does",
    )


def _share(mirrored: int, requests: int) -> float:
    return mirrored / requests if requests > 0 else 0.0


def _traffic(
    sample_rate: float,
    requests: int,
    mirrored: int,
    coverage: Sequence[tuple[str, str, int, int]],
    min_share: float,
) -> ChecklistItem:
    name = "traffic_representative"
    overall = _share(mirrored, requests)
    head = f"mirrored {mirrored:,} of {requests:,} requests ({overall:.1%}, sample_rate {sample_rate:g})"
    if requests < MIN_REQUESTS:
        return ChecklistItem(name, "UNKNOWN", f"{head}; need {MIN_REQUESTS} requests")
    judged = [(f"{s} {b}", r, m) for s, b, r, m in coverage if s and r >= MIN_REQUESTS]
    worst = min(judged, key=lambda x: (_share(x[2], x[1]), x[0]), default=None)
    if worst is None:
        bucket = f"no slice bucket with >= {MIN_REQUESTS} requests"
        worst_share = overall
    else:
        label, r, m = worst
        worst_share = _share(m, r)
        bucket = f"{label}: {m:,} of {r:,} ({worst_share:.1%})"
    if overall < min_share:
        return ChecklistItem(name, "FAIL", f"{head}, below the minimum share {min_share:.1%}")
    if worst is not None and worst_share < min_share:
        return ChecklistItem(name, "FAIL", f"{head}; {bucket}, below the minimum share {min_share:.1%}")
    if worst is not None and worst_share < overall / 2:
        return ChecklistItem(name, "FAIL", f"{head}; {bucket}, below half the overall share: mirroring is skewed against it")
    lowest = f"lowest bucket {bucket}" if worst is not None else bucket
    return ChecklistItem(name, "PASS", f"{head}; {lowest}")


def checklist(
    *,
    parity: Sequence[Mismatch] | None,
    parity_error: str,
    outcome_rows: int,
    min_outcomes: int,
    quality_gates: Sequence[tuple[str, str, str]],
    shadow_marked: bool,
    honours_shadow: bool | None,
    sample_rate: float,
    requests: int,
    mirrored: int,
    coverage: Sequence[tuple[str, str, int, int]],
    min_share: float = 0.01,
) -> list[ChecklistItem]:
    """The four items, in order: environment_matches_live, ground_truth, side_effects_disabled,
    traffic_representative (module docstring for the rules)."""
    return [
        _environment(parity, parity_error),
        _ground_truth(outcome_rows, min_outcomes, quality_gates),
        _side_effects(shadow_marked, honours_shadow),
        _traffic(sample_rate, requests, mirrored, coverage, min_share),
    ]
