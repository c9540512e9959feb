"""A shadow target's budget (``[routes.shadows.budget]``): requests, bytes and Triton compute
seconds per hour, day or run; mirroring to the target pauses by itself when one is spent.

Periods: ``hour`` and ``day`` are UTC calendar periods (what billing uses: a day budget resets at
00:00 UTC, an hour budget on the hour, whenever the front started); ``run`` never resets. At a
new period the counters start from zero and a paused target resumes by itself (both logged).

Requests and bytes are charged when the router admits a mirrored request (``admit``, right before
its calls go out, amplified copies included), so a budget of K requests never lets more than K
calls out; calls admitted before the budget was spent may still be in flight. A request that
does not fit in what is left (all of its calls, all of its bytes) is refused and the target
pauses until the period ends: the budget is spent. Compute seconds are Triton's own figures
(ModelStatistics: compute_input + compute_infer + compute_output of the shadow's version), read
by ``BudgetWatcher`` every ``server.poll_s`` (every ``COMPUTE_POLL_S`` at most while a compute
budget exists): compute is enforced at that granularity, after the poll that sees it spent, so
up to one poll's worth of calls more may run. Triton's counters are shared by every client of
that version (live itself when a noise-floor target mirrors live's own model, other fronts,
other workers): this front's part is Triton's compute x (this target's OK calls / Triton's
successful requests) over the same window, which is all of it when the front is its only client.

``serve --workers N``: each worker is a process with its own counters, so each budget is split
(``set_share``): worker i gets K // N, plus one of the remainder when i < K % N (compute
seconds K / N); a merged report adds the workers' limits and use back up. Independent replicas
(``shadowgrpc report`` over several fronts) each have their own whole budget and add up the same.

Estimates (``estimate``): at the rates seen while mirroring was not paused, when each budget is
spent and how long until the route's gates have ``min_pairs`` compared pairs and
``min_outcomes`` outcome rows, and whether the budget runs out first.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from ._config_rollout import Budget

log = logging.getLogger("shadowgrpc.budget")

COMPUTE_POLL_S = 2.0  # at most this long between Triton statistics reads while a compute budget exists
ESTIMATE_AFTER_S = 30.0  # the estimate is logged once a target mirrored this long ...
ESTIMATE_AFTER_CALLS = 200  # ... or sent this many calls
_MB = 1024 * 1024
_SHARE = (0, 1)  # this process's (worker index, workers): set_share


def set_share(index: int, workers: int) -> None:
    """This process is worker ``index`` of ``workers`` (workers.py): budgets made from now on
    get their share."""
    global _SHARE
    _SHARE = (index, workers)


def share_of(k: int, index: int, n: int) -> int:
    """Worker ``index``'s share of ``k`` split over ``n``: k // n, one more for the first k % n."""
    return k // n + (1 if index < k % n else 0)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _mb(n: float) -> str:
    return f"{n / _MB:.3g} MB"


class BudgetState:
    """One shadow target's budget as it is spent (state.TargetState.budget). ``clock``: unix
    seconds (injectable for tests); ``share``: (worker index, workers), default ``set_share``'s."""

    __slots__ = (
        "_clock", "budget", "bytes", "compute_s", "max_bytes", "max_compute_s", "max_requests", "name", "paused", "paused_at",
        "paused_reason", "paused_s", "period_end", "period_start", "refused", "replicas", "replicas_paused", "requests", "share",
        "first_at", "started", "total_bytes", "total_compute_s", "total_requests",
    )  # fmt: skip

    def __init__(self, budget: Budget, name: str = "", clock=time.time, share: tuple[int, int] | None = None) -> None:
        self._clock = clock
        self.name = name
        self.share = share if share is not None else _SHARE
        self.started = clock()
        self.first_at = 0.0  # the first call admitted: rates are measured from there
        self.requests = self.bytes = 0  # this period
        self.compute_s = 0.0
        self.total_requests = self.total_bytes = 0  # every period
        self.total_compute_s = 0.0
        self.refused = 0  # mirrored requests not sent because the budget was spent (every period)
        self.paused = False
        self.paused_reason = ""
        self.paused_at = 0.0
        self.paused_s = 0.0  # time spent paused in earlier pauses
        self.replicas = 1  # merged views: how many replicas' budgets these are
        self.replicas_paused = 0
        self.budget = budget
        self._limits(budget)
        self._period(self.started)

    def _limits(self, b: Budget) -> None:
        i, n = self.share
        self.max_requests = share_of(b.requests, i, n)
        self.max_bytes = share_of(b.bytes, i, n)
        self.max_compute_s = b.compute_s / n

    def _period(self, now: float, run_start: float | None = None) -> None:
        p = self.budget.period_s
        if p:
            self.period_start = math.floor(now / p) * p
            self.period_end = self.period_start + p
        else:
            self.period_start, self.period_end = self.started if run_start is None else run_start, math.inf

    # -- the hot path ----------------------------------------------------------------------------
    def admit(self, nbytes: int, calls: int = 1) -> bool:
        """Charge ``calls`` calls of ``nbytes`` each; False (not charged, counted ``refused``)
        when the period's budget does not allow them: the target is then paused until the period ends."""
        now = self._clock()
        if now >= self.period_end:
            self._roll(now)
        if self.paused:
            self.refused += 1
            return False
        r = self.requests + calls
        b = self.bytes + nbytes * calls
        if (self.max_requests and r > self.max_requests) or (self.max_bytes and b > self.max_bytes):
            if self.max_requests and r > self.max_requests:
                why = f"requests budget spent: {self.requests} of {self.max_requests}"
            else:
                why = f"bytes budget spent: {_mb(self.bytes)} of {_mb(self.max_bytes)} (the next request needs {_mb(nbytes * calls)})"
            self._pause(now, why)
            self.refused += 1
            return False
        if not self.first_at:
            self.first_at = now
        self.requests = r
        self.bytes = b
        self.total_requests += calls
        self.total_bytes += nbytes * calls
        return True

    def refund(self, nbytes: int, calls: int = 1) -> None:
        """Give back what ``admit(nbytes, calls)`` charged (identical_sample: another target refused)."""
        self.requests = max(self.requests - calls, 0)
        self.bytes = max(self.bytes - nbytes * calls, 0)
        self.total_requests = max(self.total_requests - calls, 0)
        self.total_bytes = max(self.total_bytes - nbytes * calls, 0)

    def compute_used(self, seconds: float) -> None:
        """Add Triton compute seconds of this target (BudgetWatcher); pauses once they reach the limit."""
        now = self._clock()
        if now >= self.period_end:
            self._roll(now)
        self.compute_s += seconds
        self.total_compute_s += seconds
        if self.max_compute_s and self.compute_s >= self.max_compute_s and not self.paused:
            self._pause(now, f"compute budget spent: {self.compute_s:.3g} of {self.max_compute_s:.3g} Triton compute s")

    def tick(self) -> None:
        """Start a new period if one is due (the watcher calls it, so a pause ends on time without traffic)."""
        now = self._clock()
        if now >= self.period_end:
            self._roll(now)

    def retune(self, budget: Budget) -> None:
        """A reload changed the budget: new limits, what was spent in this period kept (a new
        ``per`` starts its period now with it). Resumes when the new limits are not spent."""
        if budget == self.budget:  # Router.publish retunes on every publish: nothing changed
            return
        per_changed = budget.per != self.budget.per
        self.budget = budget
        self._limits(budget)
        now = self._clock()
        if per_changed:
            self._period(now, now)
        if self.paused and not self._spent():
            self._resume(now, "budget changed")
        elif not self.paused and self.max_compute_s and self.compute_s >= self.max_compute_s:
            self._pause(now, f"compute budget spent: {self.compute_s:.3g} of {self.max_compute_s:.3g} Triton compute s")

    def _spent(self) -> bool:
        return any(lim and used >= lim for lim, used in ((self.max_requests, self.requests), (self.max_bytes, self.bytes), (self.max_compute_s, self.compute_s)))

    def _pause(self, now: float, why: str) -> None:
        until = "until the run ends" if self.period_end == math.inf else f"this {self.budget.per}, until {_utc(self.period_end)}"
        self.paused, self.paused_at, self.paused_reason = True, now, f"{why} {until}"
        log.warning("%s: mirroring paused: %s", self.name or "shadow", self.paused_reason)

    def _resume(self, now: float, why: str) -> None:
        self.paused_s += max(min(now, self.period_end) - self.paused_at, 0.0)  # a pause ends with its period
        self.paused, self.paused_reason = False, ""
        log.warning("%s: mirroring resumed (%s)", self.name or "shadow", why)

    def _roll(self, now: float) -> None:
        if self.paused:
            self._resume(now, f"new {self.budget.per} from {_utc(math.floor(now / self.budget.period_s) * self.budget.period_s)}")
        self.requests = self.bytes = 0
        self.compute_s = 0.0
        self._period(now)

    # -- readers ---------------------------------------------------------------------------------
    @property
    def paused_until(self) -> float:
        """When mirroring resumes by itself (0.0: not paused, or a run budget: never)."""
        return self.period_end if self.paused and self.period_end != math.inf else 0.0

    def active_s(self, now: float | None = None) -> float:
        """Seconds mirroring was not paused since the first call was admitted (0: none yet)."""
        now = self._clock() if now is None else now
        if not self.first_at:
            return 0.0
        return max(now - self.first_at - self.paused_s - (now - self.paused_at if self.paused else 0.0), 0.0)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        """The snapshot's form (snapshot.py)."""
        d = {k: getattr(self, k) for k in _FIELDS}
        d["period_end"] = 0.0 if self.period_end == math.inf else self.period_end
        d["active_s"] = self.active_s(now)
        d["replicas_paused"] = self.replicas_paused if self.replicas > 1 else int(self.paused)
        d["budget"] = {"per": self.budget.per, "requests": self.budget.requests, "bytes": self.budget.bytes, "compute_s": self.budget.compute_s}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], taken: float) -> BudgetState:
        """A snapshot's budget, as of ``taken`` (its clock stays there: nothing rolls)."""
        bs = cls(Budget(**d["budget"]), clock=lambda: taken, share=(0, 1))
        for k in _FIELDS:
            setattr(bs, k, d[k])
        bs.period_end = d["period_end"] or math.inf
        bs.paused_s = 0.0
        bs.first_at = 0.0 if not d["total_requests"] else taken - d["active_s"] - ((taken - bs.paused_at) if bs.paused else 0.0)
        return bs

    def merge(self, o: BudgetState) -> None:
        """Add another replica's budget (limits and use add up; the window is the widest)."""
        now = self._clock()
        active = max(self.active_s(now), o.active_s(now))
        for k in ("requests", "bytes", "compute_s", "total_requests", "total_bytes", "total_compute_s", "refused", "max_requests", "max_bytes", "max_compute_s", "replicas", "replicas_paused"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        if o.paused and not self.paused:
            self.paused, self.paused_at, self.paused_reason = True, o.paused_at, o.paused_reason
        self.period_start = min(self.period_start, o.period_start)
        self.period_end = max(self.period_end, o.period_end)
        self.paused_s = 0.0
        self.first_at = 0.0 if not self.total_requests else now - active - ((now - self.paused_at) if self.paused else 0.0)


def merged(a: BudgetState | None, b: BudgetState | None) -> BudgetState | None:
    """``a`` with ``b`` added (either may be None: a replica without that target's budget)."""
    if a is None or b is None:
        return a if b is None else b
    a.merge(b)
    return a


_FIELDS = (
    "name", "requests", "bytes", "compute_s", "total_requests", "total_bytes", "total_compute_s", "refused", "paused", "paused_reason",
    "paused_at", "period_start", "max_requests", "max_bytes", "max_compute_s", "replicas", "replicas_paused",
)  # fmt: skip


def describe(b: Budget) -> str:
    """One line for a configured budget: "per day: 1000 requests, 50 MB, 3600 Triton compute s"."""
    kinds = [f"{b.requests} requests" if b.requests else "", _mb(b.bytes) if b.bytes else "", f"{b.compute_s:g} Triton compute s" if b.compute_s else ""]
    return f"per {b.per}: " + ", ".join(k for k in kinds if k)


def _dur(s: float) -> str:
    if s == math.inf:
        return "never at this rate"
    if s < 300:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


@dataclass(frozen=True, slots=True)
class Estimate:
    """Rates while mirroring ran (not paused) and what they imply. Durations in seconds from now,
    ``math.inf`` when not at this rate."""

    known: bool
    calls_per_s: float = 0.0
    bytes_per_s: float = 0.0
    compute_s_per_s: float = 0.0
    pairs_per_s: float = 0.0
    outcomes_per_s: float = 0.0
    spent_in_s: float = math.inf  # until a budget is spent (this period, or the run)
    active_fraction: float = 1.0  # hour/day: the share of each period this rate leaves mirroring on
    enough_data_in_s: float = math.inf  # until min_pairs and min_outcomes, with the budget's pauses
    text: str = ""
    warning: str = ""  # the budget stops the data before it is enough


def estimate(bs: BudgetState, compared: int, outcome_rows: int, min_pairs: int, min_outcomes: int, now: float | None = None) -> Estimate:
    """The estimate at the current rates (see the module doc); ``compared`` / ``outcome_rows``:
    the target's compared pairs and outcome rows so far."""
    now = bs._clock() if now is None else now
    active = bs.active_s(now)
    if active <= 0.0 or bs.total_requests < 2:
        return Estimate(False, text="no rate yet (nothing mirrored)")
    calls, nbytes, compute = bs.total_requests / active, bs.total_bytes / active, bs.total_compute_s / active
    pairs, outcomes = compared / active, outcome_rows / active
    kinds = [(bs.max_requests, bs.requests, calls), (bs.max_bytes, bs.bytes, nbytes), (bs.max_compute_s, bs.compute_s, compute)]
    per, period = bs.budget.per, bs.budget.period_s
    spent = 0.0 if bs.paused else min((max(lim - used, 0) / rate for lim, used, rate in kinds if lim and rate > 0), default=math.inf)
    if period and spent > bs.period_end - now:
        spent = math.inf
    frac = min((min(lim / (rate * period), 1.0) for lim, _, rate in kinds if lim and rate > 0), default=1.0) if period else 1.0

    def until(need: int, rate: float) -> float:
        return 0.0 if need <= 0 else need / rate if rate > 0 else math.inf

    t_pairs, t_outcomes = until(min_pairs - compared, pairs), until(min_outcomes - outcome_rows, outcomes)
    t = max(t_pairs, t_outcomes)
    warnings = []
    if t == 0.0:
        enough = 0.0
    elif not period:  # run: what is left of the budget is all the data that will come
        enough = t if t <= spent else math.inf
        late = [(what, x) for what, x in (("min_pairs", t_pairs), ("min_outcomes", t_outcomes)) if spent < x < math.inf]
        if late:
            warnings.append(f"the budget runs out ({_dur(spent) if spent else 'spent'}) before {late[0][0]} ({_dur(late[0][1])} at this rate): raise it")
    else:
        wait = (bs.period_end - now) if bs.paused else 0.0
        enough = wait + t / frac if frac > 0 else math.inf
        if frac < 1.0 and t != math.inf:
            warnings.append(f"the budget lets mirroring run {frac:.0%} of each {per} at this rate: enough data in ~{_dur(enough)} instead of {_dur(t)}")
    if t_outcomes == math.inf:
        warnings.append(f"no outcome rows yet: the accuracy gate needs {min_outcomes} (ground truth); the verdict waits for them")
    warning = "; ".join(warnings)
    scale = period or active
    text = (
        f"{calls:.3g} calls/s, {_mb(nbytes)}/s, {compute:.3g} Triton compute s/s while mirroring"
        f" = {calls * scale:.0f} requests, {_mb(nbytes * scale)}, {compute * scale:.3g} compute s per {per if period else f'{_dur(active)} so far'};"
        f" budget {'spent now' if bs.paused else 'spent in ' + _dur(spent) if spent != math.inf else 'not spent this ' + per if period else 'not spent at this rate'};"
        f" enough data (min_pairs {min_pairs}, min_outcomes {min_outcomes}) {'now' if enough == 0 else _dur(enough) if enough == math.inf else 'in ' + _dur(enough)}"
    )
    return Estimate(True, calls, nbytes, compute, pairs, outcomes, spent, frac, enough, text, warning)


def report_fields(bs: BudgetState, est: Estimate, now: float) -> dict[str, Any]:
    """Fields of shadowgrpc.v1.ShadowBudget (report.py); -1 for "not at this rate"."""

    def fin(x: float) -> float:
        return -1.0 if x == math.inf else x

    b = bs.budget
    return {
        "per": b.per, "requests_limit": bs.max_requests, "bytes_limit": bs.max_bytes, "compute_s_limit": bs.max_compute_s,
        "requests_used": bs.requests, "bytes_used": bs.bytes, "compute_s_used": bs.compute_s,
        "period_start": bs.period_start, "period_end": 0.0 if bs.period_end == math.inf else bs.period_end,
        "paused": bs.paused, "paused_reason": bs.paused_reason, "paused_at": bs.paused_at if bs.paused else 0.0,
        "paused_until": bs.paused_until, "refused": bs.refused, "replicas": bs.replicas,
        "replicas_paused": bs.replicas_paused if bs.replicas > 1 else int(bs.paused),
        "total_requests": bs.total_requests, "total_bytes": bs.total_bytes, "total_compute_s": bs.total_compute_s,
        "estimate": {
            "known": est.known, "calls_per_s": est.calls_per_s, "bytes_per_s": est.bytes_per_s, "compute_s_per_s": est.compute_s_per_s,
            "pairs_per_s": est.pairs_per_s, "outcomes_per_s": est.outcomes_per_s, "spent_in_s": fin(est.spent_in_s),
            "active_fraction": est.active_fraction, "enough_data_in_s": fin(est.enough_data_in_s), "text": est.text, "warning": est.warning,
        },
    }  # fmt: skip


def format_budget(s) -> list[str]:
    """The report's lines for one shadow's budget (a shadowgrpc.v1.ShadowReport; empty without one)."""
    if not s.HasField("budget"):
        return []
    b = s.budget
    per = "this run" if b.per == "run" else f"this {b.per} ({_utc(b.period_start)} .. {_utc(b.period_end)})"
    kinds = [
        f"requests {b.requests_used} of {b.requests_limit}" if b.requests_limit else "",
        f"bytes {_mb(b.bytes_used)} of {_mb(b.bytes_limit)}" if b.bytes_limit else "",
        f"Triton compute {b.compute_s_used:.3g} of {b.compute_s_limit:.3g} s (checked every poll)" if b.compute_s_limit else "",
    ]
    reps = f" over {b.replicas} replicas" if b.replicas > 1 else ""
    lines = [f"    budget per {b.per}{reps}: " + ", ".join(k for k in kinds if k) + f" used {per}; {b.refused} mirrored requests not sent (budget)"]
    if b.paused:
        lines.append(f"    PAUSED{f' on {b.replicas_paused} of {b.replicas} replicas' if b.replicas > 1 else ''}: {b.paused_reason}")
    e = b.estimate
    lines.append(f"    budget estimate: {e.text}" + (f"; {e.warning}" if e.warning else ""))
    return lines


def startup_lines(routes, workers: int = 1) -> list[str]:
    """``serve``'s lines for the budgeted targets (the estimate is logged once a rate is known)."""
    split = f" (split over {workers} workers)" if workers > 1 else ""
    return [
        f"  budget {r.model} -> {t.name}: {describe(t.budget)}{split}; spent: mirroring pauses until the {t.budget.per} ends"
        + ("" if t.budget.per != "run" else " (never resumes)")
        for r in routes for t in r.shadows if t.budget is not None
    ]  # fmt: skip
