"""The verdict as a rollout gate: one decision for a route (or one of its shadows) from a
``shadowgrpc.v1.Report``, in the shapes the tools that promote expect (served over HTTP by
gate_http.py; ``shadowgrpc gate`` on the command line).

The decision (:func:`decide`):

- ``shadow`` named: that shadow's own verdict (PASS, FAIL, NOT_ENOUGH_DATA, NOT_COMPARABLE); when the
  name has several windows (an auto-shadow target re-opened), the open one, else the newest.
- no ``shadow``: every open (not CLOSED) shadow of the route that is not an A/A noise floor decides:
  any FAIL or NOT_COMPARABLE -> FAIL; else all PASS -> PASS; else NOT_ENOUGH_DATA (also when no
  shadow is left to decide: a route waiting for its first candidate is not a PASS).
- an unknown route or shadow is a :class:`GateError` (HTTP 404, exit status 3), never a decision.

The JSON document (:func:`gate_document`; the Argo Rollouts ``web`` metric's body, ``shadowgrpc gate
--json``): ``decision``, ``pass`` (decision == PASS), ``route``, ``shadow`` (as asked; "" = all),
``reason``, ``failing_gates`` / ``undecided_gates`` (gate names), ``gates`` (by gate name: status,
value, threshold, reason and the shadow it comes from: the worst of the deciding shadows, FAIL >
NOT_ENOUGH_DATA > other > PASS > SKIPPED), ``shadows`` (by name: decision, status, deciding,
compared, noise_floor, gates, failing_gates, undecided_gates) and ``report`` (version, replicas,
uptime_s). Non-finite figures are null (JSON has no NaN).

Exit statuses of ``shadowgrpc gate``: 0 PASS, 1 FAIL or NOT_COMPARABLE, 2 NOT_ENOUGH_DATA, 3 could not
decide (front unreachable or refusing, unknown route or shadow, bad arguments).
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

PASS, FAIL, NOT_ENOUGH_DATA, NOT_COMPARABLE = "PASS", "FAIL", "NOT_ENOUGH_DATA", "NOT_COMPARABLE"
EXIT = {PASS: 0, FAIL: 1, NOT_COMPARABLE: 1, NOT_ENOUGH_DATA: 2}
EXIT_UNDECIDED = 3
REPORT_TIMEOUT_S = 30.0
_RANK = {"FAIL": 4, "NOT_ENOUGH_DATA": 3, "PASS": 1, "SKIPPED": 0}  # any other status (a future one): 2


class GateError(Exception):
    """No decision: ``status`` is the HTTP status to answer (404 unknown route/shadow, 503 the
    report could not be built), ``message`` says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _gates(verdict) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for g in verdict.gates:
        name, k = g.name, 2
        while name in out:  # never expected; kept apart rather than overwritten
            name, k = f"{g.name}#{k}", k + 1
        out[name] = {"status": g.status, "value": _num(g.value), "threshold": _num(g.threshold), "reason": g.reason}
    return out


def _failing(gates: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    failing = [n for n, g in gates.items() if g["status"] == FAIL]
    undecided = [n for n, g in gates.items() if g["status"] not in (PASS, FAIL, "SKIPPED")]
    return failing, undecided


def find_route(report, route: str):
    for r in report.routes:
        if r.model == route:
            return r
    names = ", ".join(repr(r.model) for r in report.routes) or "none"
    raise GateError(404, f"no route for model {route!r} (routes: {names})")


def _pick_shadow(rr, shadow: str):
    same = [s for s in rr.shadows if s.target.name == shadow]
    if not same:
        names = ", ".join(sorted({repr(s.target.name) for s in rr.shadows})) or "none"
        raise GateError(404, f"route {rr.model!r} has no shadow {shadow!r} (shadows: {names})")
    open_ = [s for s in same if s.status != "CLOSED"]
    return (open_ or sorted(same, key=lambda s: s.window.opened))[-1]


def decide(report, route: str, shadow: str = "") -> dict[str, Any]:
    """The gate document (module doc) for ``route`` (and ``shadow``) of ``report``; GateError when
    the route or shadow is unknown."""
    if not route:
        raise GateError(400, "no route given: say which route (its model name) to gate on")
    rr = find_route(report, route)
    shadows: dict[str, dict[str, Any]] = {}
    deciding = []
    chosen = _pick_shadow(rr, shadow) if shadow else None
    for s in rr.shadows:
        name = s.target.name
        if chosen is not None and s is not chosen:
            continue
        if chosen is None and name in shadows and s.status == "CLOSED":
            continue  # an older, closed window of a name already listed
        why_not = "" if chosen is not None else "noise floor (A/A replica of live)" if s.target.noise_floor else "closed window" if s.status == "CLOSED" else ""
        gates = _gates(s.verdict)
        failing, undecided = _failing(gates)
        shadows[name] = {
            "decision": s.verdict.decision, "status": s.status, "deciding": not why_not, "excluded_because": why_not,
            "compared": s.compared, "noise_floor": s.target.noise_floor, "verdict_reason": getattr(s.verdict, "reason", ""),
            "gates": gates, "failing_gates": failing, "undecided_gates": undecided,
        }  # fmt: skip
        if not why_not:
            deciding.append(name)
    decisions = [shadows[n]["decision"] for n in deciding]
    if chosen is not None:
        decision = chosen.verdict.decision or NOT_ENOUGH_DATA
    elif any(d in (FAIL, NOT_COMPARABLE) for d in decisions):
        decision = FAIL
    elif decisions and all(d == PASS for d in decisions):
        decision = PASS
    else:
        decision = NOT_ENOUGH_DATA
    top: dict[str, dict[str, Any]] = {}
    for n in deciding:
        for gname, g in shadows[n]["gates"].items():
            if gname not in top or _RANK.get(g["status"], 2) > _RANK.get(top[gname]["status"], 2):
                top[gname] = {**g, "shadow": n}
    failing, undecided = _failing(top)
    if not deciding:
        reason = f"route {route!r} has no open shadow to decide on (noise floors and closed windows do not decide)"
    else:
        reason = "; ".join(
            f"{n} {shadows[n]['decision']}" + (f" ({', '.join(shadows[n]['failing_gates'] or shadows[n]['undecided_gates'])})" if shadows[n]["decision"] != PASS else "")
            for n in deciding
        )
    return {
        "decision": decision, "pass": decision == PASS, "route": route, "shadow": shadow, "reason": reason,
        "failing_gates": failing, "undecided_gates": undecided, "gates": top, "shadows": shadows,
        "report": {"version": report.version, "replicas": report.replicas or 1, "uptime_s": _num(report.uptime_s)},
    }  # fmt: skip


class _Context:
    """What ShadowControl.GetReport (servicer.py, workers.MergedControl) uses of a grpc context."""

    def time_remaining(self) -> float:
        return REPORT_TIMEOUT_S

    async def abort(self, code, details: str = "") -> None:
        raise GateError(404 if getattr(code, "name", "") == "NOT_FOUND" else 503, details)


def servicer_report(control, request_type):
    """``route -> Report`` from a ShadowControl servicer (``control.GetReport``) and the
    GetReportRequest class: the report the admin API would give, cost included."""

    async def report(route: str):
        return await control.GetReport(request_type(model=route), _Context())

    return report


def gate_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False, allow_nan=False)


def hold_message(doc: dict[str, Any]) -> str:
    """One line for a Flagger webhook's non-2xx body (Flagger logs it in the canary's events):
    the decision and the failing (else undecided) gates, each with its shadow and reason."""
    if doc["pass"]:
        return f"shadowgrpc gate {doc['route']}: PASS ({doc['reason']})"
    names = doc["failing_gates"] or doc["undecided_gates"]
    parts = [f"{g['shadow']}: {n}: {g['reason']}" for n in names for g in (doc["gates"][n],)]
    return f"shadowgrpc gate {doc['route']}: {doc['decision']}: " + ("; ".join(parts) if parts else doc["reason"])


def summary(doc: dict[str, Any]) -> str:
    """The human summary ``shadowgrpc gate`` prints."""
    what = f"route {doc['route']}" + (f", shadow {doc['shadow']}" if doc["shadow"] else "")
    lines = [f"{doc['decision']}: {what}"]
    for name, s in doc["shadows"].items():
        extra = "" if s["deciding"] else f" (not deciding: {s['excluded_because']})"
        lines.append(f"  {name}: {s['decision']}, {s['compared']} pairs compared{extra}")
        for kind, names in (("failing", s["failing_gates"]), ("undecided", s["undecided_gates"])):
            for n in names:
                lines.append(f"    {kind} {n}: {s['gates'][n]['reason']}")
    if not doc["shadows"]:
        lines.append(f"  {doc['reason']}")
    return "\n".join(lines)


# -- shadowgrpc gate ------------------------------------------------------------------------------
GATE_HELP = (
    "Fetch ShadowControl.GetReport from a running front's admin port (a --workers parent: the merged report) "
    "and decide whether the route (or one shadow) may be promoted, for scripts and CI pipelines. Without "
    "--shadow every open shadow of the route that is not a noise floor must PASS. Exit status: 0 PASS, "
    "1 FAIL (or NOT_COMPARABLE), 2 NOT_ENOUGH_DATA, 3 could not decide (front unreachable or refusing, unknown "
    "route or shadow, bad arguments: argument errors of this command exit 3, not 2). --json prints the "
    "document the HTTP gate's GET /gate answers (README \"Rollout gates\")."
)


def argv_is_gate(argv: list[str]) -> bool:
    """Whether ``argv`` (without the program name) runs the ``gate`` subcommand: its first word
    that is not a global option (``--log-level X``)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1 if "=" in argv[i] or argv[i] in ("--version", "-h", "--help") else 2
    return i < len(argv) and argv[i] == "gate"


def add_gate_parser(sub, add_admin_args, admin_client) -> None:
    """The ``gate`` subcommand; ``add_admin_args`` / ``admin_client``: cli.py's admin-port client
    options (token, TLS) and their reader, as ``report`` has them."""
    g = sub.add_parser("gate", help="exit 0/1/2 on a route's verdict (PASS / FAIL / not enough data) for CI and rollouts", description=GATE_HELP)
    g.add_argument("--target", default="127.0.0.1:8011", metavar="ADDR", help="the front's admin address (server.admin_listen; default 127.0.0.1:8011)")
    g.add_argument("--route", required=True, metavar="R", help="the route (the model name callers use)")
    g.add_argument("--shadow", default="", metavar="NAME", help="decide on this shadow only (default: every open non-noise-floor shadow)")
    g.add_argument("--json", action="store_true", help="print the gate JSON (the Argo Rollouts web metric's document)")
    g.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    add_admin_args(g)
    g.set_defaults(func=lambda args: cmd_gate(args, admin_client))


def cmd_gate(args, admin_client) -> int:
    import grpc

    from .client import fetch_report

    try:
        secured = admin_client(args)
    except OSError as e:
        print(f"shadowgrpc gate: {e}", file=sys.stderr)
        return EXIT_UNDECIDED
    try:
        rep = fetch_report(args.target, args.route, args.timeout, **secured)
        doc = decide(rep, args.route, args.shadow)
    except grpc.RpcError as e:
        print(f"shadowgrpc gate: {args.target}: {e.code().name}: {e.details()}", file=sys.stderr)
        return EXIT_UNDECIDED
    except GateError as e:
        print(f"shadowgrpc gate: {e.message}", file=sys.stderr)
        return EXIT_UNDECIDED
    print(gate_json(doc) if args.json else summary(doc))
    return EXIT.get(doc["decision"], EXIT_UNDECIDED)


__all__ = ["EXIT", "GateError", "servicer_report", "add_gate_parser", "argv_is_gate", "decide", "gate_json", "hold_message", "summary"]
