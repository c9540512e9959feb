"""Whether the mirrored traffic represents live's: the share of live requests mirrored, overall
(exact: ``RouteStats.requests`` and ``RouteStats.mirrored``) and per slice bucket (estimated).

Per slice bucket the front would have to decode every live request to know its bucket; it decodes
one routed request in ``EVERY`` instead (by arrival order, independent of the request-id hash that
picks what is mirrored, so the sample is not biased toward mirrored requests), off the handler
(``loop.call_soon``), small requests only (``MAX_BYTES``). For each sampled request, the rows of
each bucket are counted as ``requests`` and, when the request was mirrored to at least one
target, as ``mirrored`` too. A bucket whose mirrored share is far below the overall share shows
mirroring skewed against it (shedding of large requests, an excluded version, ...): the
``traffic_representative`` item of the validation checklist (checklist.py) reads these rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .codec import decode_request
from .slices import assign

log = logging.getLogger("shadowgrpc.coverage")

EVERY = 16  # one routed request in EVERY is decoded for the per-slice rows
MAX_BYTES = 64 << 10  # larger requests are not sampled (counted in ``skipped``)


@dataclass(slots=True)
class CoverageState:
    """Per slice bucket (slice name, bucket label): [rows of sampled requests, rows of those mirrored]."""

    rows: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    sampled: int = 0  # requests decoded for coverage
    skipped: int = 0  # chosen but larger than MAX_BYTES or not parseable


def count(state: CoverageState, slices: tuple, raw: bytes, mirrored: bool) -> None:
    """Add one sampled request's rows per bucket (runs on the loop, after the handler)."""
    try:
        req = decode_request(raw) if len(raw) <= MAX_BYTES else None
        if req is None:
            state.skipped += 1
            return
        state.sampled += 1
        for s, b in zip(slices, assign(slices, req)):
            labels = s.buckets
            if b is None:
                counts = {len(labels) - 1: max(1, _rows(req))}
            else:
                idx, n = np.unique(b, return_counts=True)
                counts = dict(zip(idx.tolist(), n.tolist()))
            for i, n in counts.items():
                cell = state.rows.setdefault((s.name, labels[i]), [0, 0])
                cell[0] += n
                if mirrored:
                    cell[1] += n
    except Exception:  # the estimate must never cost a request anything
        log.exception("coverage sample failed")


def _rows(req) -> int:
    return int(req.inputs[0].shape[0]) if req.inputs and req.inputs[0].shape else 1
