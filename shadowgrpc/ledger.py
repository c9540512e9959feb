"""The coverage ledger: for every shadow target, what became of each live request of its route.

Every unary ModelInfer request of a route is decided once per target at arrival (admission.py),
so the ledger is exact at any moment: a target's rows add up to the route's ``requests``.

- route-wide reasons (counted once per request, in RouteStats; every target of the route gets
  the same row): ``shared_memory``, ``explicit_version``, ``too_large``, one row per
  ``[routes.mirror]`` reason (``excluded: <rule>``, ``not included``, ``unreadable``);
- per target (ShadowStats): ``not_sampled``, ``not_ready``, ``shed``, ``down``, ``budget``,
  ``held_back`` (identical_sample), ``qps_queued`` (constant_qps: in its pacer's queue now; once
  released counted as sent, shed, ...) and ``qps_dropped`` (dropped from that queue), ``sent``;
- ``window_not_open``: the rest, the route's requests before the target's comparison window
  opened (an auto-shadow version that appeared later, a shadow added by a reload) or after it
  closed.

ModelStreamInfer messages are mirrored per stream (streams.py) under the same rules and budgets,
and counted apart (RouteStats.stream_not_mirrored, ShadowStats.stream_not_sent and
stream_requests), not here.
"""

from __future__ import annotations

from typing import Any

from .pairlog.schema import EXPLICIT_VERSION, NOT_SAMPLED, NOT_SENT, SENT, SHM, TOO_LARGE

ROUTE_REASONS = ((SHM, "shm_not_mirrored"), (EXPLICIT_VERSION, "explicit_version_not_mirrored"))  # counted for streams too
TARGET_REASONS = (NOT_SAMPLED, *NOT_SENT, "qps_queued", "qps_dropped")  # each the name of its ShadowStats counter


def rows(rs: Any) -> list[tuple[str, str, int]]:
    """(target, reason, requests) for every target of the route state ``rs`` (state.RouteState or a
    router RouteEntry: both have ``stats`` and ``shadows`` with ``target`` and ``stats``); rows of
    zero are left out, except ``sent``. The counters some reasons share with stream messages
    (streams.py) are taken without the streams' part."""
    st = rs.stats
    streams = st.stream_not_mirrored
    route_rows = [(reason, getattr(st, field) - streams[reason]) for reason, field in ROUTE_REASONS]
    route_rows += [(TOO_LARGE, st.too_large)] + sorted(dict(st.excluded).items())
    out: list[tuple[str, str, int]] = []
    for ts in rs.shadows:
        s = ts.stats
        mine = route_rows + [(SENT, s.sent - s.stream_requests)]
        mine += [(reason, getattr(s, reason) - s.stream_not_sent[reason]) for reason in TARGET_REASONS]
        mine = [(reason, max(n, 0)) for reason, n in mine]
        rest = st.requests - sum(n for _, n in mine)
        if rest > 0:
            mine.append(("window_not_open", rest))
        elif rest < 0:  # counters that do not come from one front's admission (a state built by hand, an old snapshot)
            mine.append(("counted_beyond_requests", -rest))
        out += [(ts.target.name, reason, n) for reason, n in mine if n or reason == SENT]
    return out
