"""What may leave live: a route's ``[routes.mirror]`` rules, evaluated per request before any shadow.

A request is mirrored only when it matches an ``include`` rule (or the route has none) and no
``exclude`` rule, and is not larger than ``max_request_mb``. Otherwise it goes to live only, and
the coverage ledger (router.py, report "coverage ledger") counts it under the rule's name, so
every live request is accounted for: mirrored, or why not.

Each rule reads one thing of the request (_config_rollout.py):

- ``header``: the caller's gRPC metadata (names lower-case, as gRPC delivers them; a ``-bin``
  value compares as its raw bytes decoded as Latin-1);
- ``parameter``: the request's KServe ``parameters`` map (bool as "true"/"false", numbers as
  written by ``str``); the request is parsed only when the route has parameter rules;
- ``version``: the model version the caller named ("" when none);
- ``slice`` + ``bucket``: a ``[[routes.slices]]`` bucket (slices.py): the rule matches when any
  row of the request falls in it. The request's inputs are decoded only when the route has slice
  rules.

A request that cannot be parsed where a rule needs it is not mirrored (``unreadable``): a rule
meant to keep a write-like call on live must not let it through because it could not be read.
Cost: header and version rules read what the router already has; parameter and slice rules parse
the request on the handler (a small ModelInferRequest parses in tens of microseconds).
"""

from __future__ import annotations

from ._config_rollout import MirrorRule, MirrorRules
from .codec import decode_request
from .slices import assign

TOO_LARGE = "too_large"
NOT_INCLUDED = "not included"  # the route has include rules and none matched
UNREADABLE = "unreadable"  # a parameter or slice rule could not read the request


def _param_value(p) -> str:
    kind = p.WhichOneof("parameter_choice")
    if kind is None:
        return ""
    v = getattr(p, kind)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class MirrorFilter:
    """The compiled form of one route's rules: ``why_not(raw, version, metadata)`` is None when the
    request may be mirrored, else the reason (``excluded: <rule>``, ``not included``, ...)."""

    __slots__ = ("_needs_request", "exclude", "include", "max_bytes", "slices")

    def __init__(self, rules: MirrorRules, slices: tuple) -> None:
        self.include = rules.include
        self.exclude = rules.exclude
        self.max_bytes = rules.max_request_bytes
        self.slices = slices
        self._needs_request = any(r.field in ("parameter", "slice") for r in (*rules.include, *rules.exclude))

    @classmethod
    def of(cls, rules: MirrorRules, slices: tuple) -> MirrorFilter | None:
        """None when the route has no rules (the router then skips this step)."""
        return cls(rules, slices) if rules.any or rules.max_request_bytes else None

    def why_not(self, raw: bytes, version: str | None, metadata: tuple | None) -> str | None:
        if self.max_bytes and len(raw) > self.max_bytes:
            return TOO_LARGE
        if not (self.include or self.exclude):
            return None
        view = _View(raw, version or "", metadata, self.slices, self._needs_request)
        try:
            if self.include and not any(view.matches(r) for r in self.include):
                return NOT_INCLUDED
            for r in self.exclude:
                if view.matches(r):
                    return "excluded: " + r.name
        except _Unreadable:
            return UNREADABLE
        return None


class _Unreadable(Exception):
    pass


class _View:
    """One request as the rules read it; parsed at most once, only when a rule needs it."""

    __slots__ = ("_buckets", "_headers", "_need", "_req", "metadata", "raw", "slices", "version")

    def __init__(self, raw: bytes, version: str, metadata: tuple | None, slices: tuple, need: bool) -> None:
        self.raw = raw
        self.version = version
        self.metadata = metadata
        self.slices = slices
        self._need = need
        self._req = None
        self._headers: dict[str, list[str]] | None = None
        self._buckets: dict[str, set[str]] | None = None

    def request(self):
        if self._req is None:
            req = decode_request(self.raw)
            if req is None:
                raise _Unreadable
            self._req = req
        return self._req

    def headers(self) -> dict[str, list[str]]:
        if self._headers is None:
            h: dict[str, list[str]] = {}
            for k, v in self.metadata or ():
                h.setdefault(k.lower(), []).append(v.decode("latin-1") if isinstance(v, bytes) else v)
            self._headers = h
        return self._headers

    def buckets(self, name: str) -> set[str]:
        if self._buckets is None:
            req = self.request()
            out: dict[str, set[str]] = {}
            for s, b in zip(self.slices, assign(self.slices, req)):
                labels = s.buckets
                out[s.name] = {labels[-1]} if b is None else {labels[int(i)] for i in set(b.tolist())}
            self._buckets = out
        return self._buckets.get(name, set())

    def values(self, r: MirrorRule) -> list[str] | None:
        """The rule's field in this request: its values, or None when absent."""
        if r.field == "header":
            return self.headers().get(r.key)
        if r.field == "parameter":
            params = self.request().parameters
            return [_param_value(params[r.key])] if r.key in params else None
        if r.field == "version":
            return [self.version] if self.version else None
        raise AssertionError(r.field)

    def matches(self, r: MirrorRule) -> bool:
        if r.field == "slice":
            return r.bucket in self.buckets(r.key)
        vals = self.values(r)
        if r.present is not None:
            return (vals is not None) == r.present
        return vals is not None and any(v in r.equals for v in vals)
