"""The client mirror's outlier breaker: stop calling a shadow endpoint that keeps failing, as a
service mesh does for an upstream host (Envoy's outlier detection, consecutive gateway failures).

Each shadow call costs the caller's own process (~0.4 ms of CPU for a grpc.aio call that times
out), so a shadow that only times out should not be called at the full ``max_in_flight`` rate:
- closed: calls go; ``after`` consecutive calls ending DEADLINE_EXCEEDED or UNAVAILABLE eject the
  endpoint (any other outcome, OK or an error the endpoint answered with, resets the count);
- ejected for ``eject_s``: sampled calls are not sent (the mirror sheds them, reason ``ejected``);
  once the interval is over, one call goes as a probe (the others are still shed while it runs);
- the probe answers (not DEADLINE_EXCEEDED / UNAVAILABLE): closed again, interval back to
  ``eject_s``; it fails: ejected again for twice the last interval, at most ``max_eject_s``.
Calls started before an ejection and ending after it do not move the breaker: only the probe does.
``after = 0`` turns it off. Lives on the mirror's event loop (no locking).
"""

from __future__ import annotations

import time
from collections.abc import Callable

FAILURES = frozenset({"DEADLINE_EXCEEDED", "UNAVAILABLE"})
SEND, PROBE, EJECTED = 1, 2, 0  # what ``admit`` says of one call


class Breaker:
    __slots__ = ("after", "eject_s", "max_eject_s", "_clock", "failures", "until", "interval", "probing", "ejections", "probes")

    def __init__(self, after: int, eject_s: float, max_eject_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.after = after
        self.eject_s = eject_s
        self.max_eject_s = max(max_eject_s, eject_s)
        self._clock = clock
        self.failures = 0  # consecutive, while closed
        self.until = 0.0  # ejected until this clock time; 0.0: closed
        self.interval = 0.0  # the current ejection's length
        self.probing = False  # the probe is in flight
        self.ejections = 0  # times ejected (again after a failed probe included)
        self.probes = 0

    @property
    def state(self) -> str:
        return "closed" if not self.until else "probing" if self.probing else "ejected"

    def admit(self) -> int:
        """``SEND`` (closed), ``PROBE`` (ejected, interval over: this call is the probe) or
        ``EJECTED`` (do not send)."""
        if not self.until:
            return SEND
        if self.probing or self._clock() < self.until:
            return EJECTED
        self.probing = True
        self.probes += 1
        return PROBE

    def record(self, status: str | None, probe: bool) -> None:
        """One shadow call's outcome (its gRPC status name; ``None``: no outcome, e.g. cancelled)."""
        if not self.after:
            return
        if self.until:  # ejected: only the probe decides
            if not probe:
                return
            self.probing = False
            if status is None:
                return  # no verdict: the next call probes again
            if status in FAILURES:
                self._eject(min(self.interval * 2, self.max_eject_s))
            else:
                self.until = self.interval = 0.0
                self.failures = 0
            return
        if status in FAILURES:
            self.failures += 1
            if self.failures >= self.after:
                self._eject(self.eject_s)
        elif status is not None:
            self.failures = 0

    def _eject(self, interval: float) -> None:
        self.interval = interval
        self.until = self._clock() + interval
        self.failures = 0
        self.ejections += 1

    def snapshot(self) -> dict:
        return {"state": self.state, "ejections": self.ejections, "probes": self.probes, "interval_s": self.interval}


__all__ = ["EJECTED", "FAILURES", "PROBE", "SEND", "Breaker"]
