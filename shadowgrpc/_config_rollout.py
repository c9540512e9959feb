"""A route's mirror rules and identical sample, a shadow target's capacity and budget keys.

    [[routes]]
    model = "fraud"
    identical_sample = true          # several shadows: the same requests to all of them, or to none
    [routes.mirror]                  # what may leave live (rules.py); every key optional
    max_request_mb = 16              # larger requests are not mirrored ("too_large")
    include = [{ header = "x-tenant", in = ["a", "b"] }]   # any include matching (none: all requests)
    exclude = [                      # and no exclude matching
      { name = "writes", parameter = "write", equals = "true" },
      { header = "x-idempotent", equals = "false" },
      { version = "3" },             # the version the caller named
      { slice = "amount", bucket = ">= 3.3" },            # any row of the request in that bucket
    ]
    [[routes.shadows]]
    name = "fraud-v2"
    amplify = 3                      # capacity: each mirrored request sent 3 times (copies not compared)
    # constant_qps = 500.0           # or: mirrored requests released at 500/s (queue: qps_queue, oldest dropped)
    [routes.shadows.budget]          # spent: mirroring to this target pauses until the period ends
    per = "day"                      # "hour", "day" or "run" (the whole run)
    requests = 1000000               # shadow calls sent (amplified copies included)
    mb = 50000                       # request bytes sent
    compute_s = 3600.0               # Triton compute seconds (its statistics: compute_infer)

A rule matches a request by exactly one of ``parameter`` (the request's KServe parameters),
``header`` (gRPC metadata, name lower-cased), ``version`` (the model version the caller named) or
``slice`` + ``bucket`` (a ``[[routes.slices]]`` bucket, any row of the request in it), and by
``equals = "v"``, ``in = ["v", ...]`` or ``present = true/false`` (default: present = true; a
slice rule matches by its bucket). Values compare as strings (a parameter's bool as "true"/"false").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _checks as check
from ._checks import ConfigError

RULE_FIELDS = ("parameter", "header", "version", "slice")
PERIODS = {"hour": 3600.0, "day": 86400.0, "run": 0.0}
MAX_AMPLIFY = 16


@dataclass(frozen=True, slots=True)
class MirrorRule:
    name: str  # the coverage ledger's reason: "excluded: <name>" (default "exclude[i]" / "include")
    field: str  # parameter | header | version | slice
    key: str  # the parameter, header or slice name ("" for version)
    equals: tuple[str, ...] = ()  # matches when the value is one of these ("in" and "equals")
    present: bool | None = None  # matches when the value is present (True) / absent (False)
    bucket: str = ""  # slice rules: the bucket label


@dataclass(frozen=True, slots=True)
class MirrorRules:
    include: tuple[MirrorRule, ...] = ()
    exclude: tuple[MirrorRule, ...] = ()
    max_request_bytes: int = 0  # 0: no limit of its own (the shadow buffer still bounds)

    @property
    def any(self) -> bool:
        return bool(self.include or self.exclude)


@dataclass(frozen=True, slots=True)
class Budget:
    per: str = "day"  # hour | day | run
    requests: int = 0  # 0: no limit of this kind
    bytes: int = 0
    compute_s: float = 0.0

    @property
    def period_s(self) -> float:
        return PERIODS[self.per]


def parse_mirror(r: Mapping[str, Any], where: str, slices: tuple) -> MirrorRules:
    t = check.table(r, "mirror", where + "mirror")
    mw = where + "mirror."
    check.only(t, mw, {"include", "exclude", "max_request_mb"})
    mb = check.number(t, "max_request_mb", mw, 0, lo=0, hi=65536)
    return MirrorRules(
        include=_rules(t, "include", mw, slices), exclude=_rules(t, "exclude", mw, slices), max_request_bytes=int(mb * 1024 * 1024)
    )


def _rules(t: Mapping[str, Any], key: str, where: str, slices: tuple) -> tuple[MirrorRule, ...]:
    raw = t.get(key, [])
    if not isinstance(raw, list):
        raise ConfigError(f"{where}{key}: must be an array of tables such as [{{ header = \"x-write\", equals = \"true\" }}]")
    out = []
    for i, rule in enumerate(raw):
        rw = f"{where}{key}[{i}]."
        if not isinstance(rule, Mapping):
            raise ConfigError(f"{rw[:-1]}: must be a table such as {{ header = \"x-write\", equals = \"true\" }}")
        check.only(rule, rw, {"name", *RULE_FIELDS, "equals", "in", "present", "bucket"})
        fields = [f for f in RULE_FIELDS if f in rule]
        if len(fields) != 1:
            raise ConfigError(f"{rw[:-1]}: set exactly one of {', '.join(RULE_FIELDS)}")
        f = fields[0]
        name = check.string(rule, "name", rw, default=f"{key}[{i}]")
        bucket = ""
        if f == "version":
            kv = {"version": rule["version"]}
            val = check.version(kv, rw)
            if not val:
                raise ConfigError(f"{rw}version: must be a model version number such as \"2\"")
            if any(k in rule for k in ("equals", "in", "present", "bucket")):
                raise ConfigError(f"{rw[:-1]}: a version rule takes no equals/in/present/bucket")
            out.append(MirrorRule(name, f, "", (val,)))
            continue
        keyname = check.string(rule, f, rw, required=True)
        if f == "header":
            keyname = keyname.lower()
        if f == "slice":
            sl = next((s for s in slices if s.name == keyname), None)
            if sl is None:
                raise ConfigError(f"{rw}slice: no [[routes.slices]] named {keyname!r} in this route")
            bucket = check.string(rule, "bucket", rw, required=True)
            if bucket not in sl.buckets:
                raise ConfigError(f"{rw}bucket: slice {keyname!r} has buckets {', '.join(map(repr, sl.buckets))}, got {bucket!r}")
            if any(k in rule for k in ("equals", "in", "present")):
                raise ConfigError(f"{rw[:-1]}: a slice rule matches by bucket; equals/in/present do not apply")
            out.append(MirrorRule(name, f, keyname, bucket=bucket))
            continue
        if "bucket" in rule:
            raise ConfigError(f"{rw}bucket: only slice rules take a bucket")
        given = [k for k in ("equals", "in", "present") if k in rule]
        if len(given) > 1:
            raise ConfigError(f"{rw[:-1]}: set one of equals, in, present")
        if "equals" in rule:
            v = rule["equals"]
            if isinstance(v, bool):
                v = "true" if v else "false"
            if not isinstance(v, (str, int)):
                raise ConfigError(f"{rw}equals: must be a string, number or bool, got {v!r}")
            out.append(MirrorRule(name, f, keyname, (str(v),)))
        elif "in" in rule:
            vals = rule["in"]
            if not isinstance(vals, list) or not vals or any(isinstance(x, (list, dict)) for x in vals):
                raise ConfigError(f"{rw}in: must be a non-empty array of strings, got {vals!r}")
            out.append(MirrorRule(name, f, keyname, tuple(("true" if x else "false") if isinstance(x, bool) else str(x) for x in vals)))
        else:
            present = rule.get("present", True)
            if not isinstance(present, bool):
                raise ConfigError(f"{rw}present: must be true or false, got {present!r}")
            out.append(MirrorRule(name, f, keyname, present=present))
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}{key}: duplicate rule names {names!r}")
    return tuple(out)


def parse_capacity(s: Mapping[str, Any], sw: str) -> tuple[int, float, int]:
    """(amplify, constant_qps, qps_queue) of one shadow target."""
    amplify = int(check.number(s, "amplify", sw, 1, lo=1, hi=MAX_AMPLIFY, integer=True))
    qps = float(check.number(s, "constant_qps", sw, 0.0, lo=0.0, hi=1_000_000.0))
    if "constant_qps" in s and qps <= 0:
        raise ConfigError(f"{sw}constant_qps: must be > 0 (leave it out for the live request rate)")
    if amplify > 1 and qps > 0:
        raise ConfigError(f"{sw[:-1]}: set amplify or constant_qps, not both")
    queue = int(check.number(s, "qps_queue", sw, 1024, lo=1, hi=1_000_000, integer=True))
    if "qps_queue" in s and qps <= 0:
        raise ConfigError(f"{sw}qps_queue: applies only with constant_qps")
    return amplify, qps, queue


def parse_budget(s: Mapping[str, Any], sw: str) -> Budget | None:
    if "budget" not in s:
        return None
    bw = sw + "budget."
    t = check.table(s, "budget", bw[:-1])
    check.only(t, bw, {"per", "requests", "mb", "compute_s"})
    per = t.get("per", "day")
    if per not in PERIODS:
        raise ConfigError(f"{bw}per: must be one of hour, day, run, got {per!r}")
    if not any(k in t for k in ("requests", "mb", "compute_s")):
        raise ConfigError(f"{bw[:-1]}: set at least one of requests, mb, compute_s")
    return Budget(
        per=per,
        requests=int(check.number(t, "requests", bw, 0, lo=1, hi=1 << 62, integer=True)) if "requests" in t else 0,
        bytes=int(check.number(t, "mb", bw, 0, lo=0.001, hi=1 << 40) * 1024 * 1024) if "mb" in t else 0,
        compute_s=float(check.number(t, "compute_s", bw, 0, lo=0.001, hi=1e12)) if "compute_s" in t else 0.0,
    )
