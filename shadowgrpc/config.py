"""Configuration: a TOML file (stdlib tomllib) read into frozen dataclasses.

Every error names the key that is wrong (``routes[0].shadows[1].sample_rate: must be in [0, 1]``)
so a bad config is refused at start, never discovered under traffic.

    [server]
    listen = "0.0.0.0:8001"          # data port: KServe v2 gRPC, health, reflection
    admin_listen = "127.0.0.1:8011"  # ShadowControl; keep it off the data port's network
    default_live = "127.0.0.1:9001"  # Triton for unrouted models and every non-infer RPC
    max_message_mb = 256             # largest request/response, both directions
    grace_s = 10.0                   # on SIGTERM: time for in-flight live requests to finish
    upstream_compression = "none"    # or "gzip"/"deflate" for calls to Triton
    shadow_buffer_mb = 256           # bytes of in-flight shadow requests, all targets; past it: shed
    outcome_max_pairs = 50000        # prediction pairs waiting for ground truth (0: no join)
    outcome_ttl_s = 600              # how long a pair waits for its outcome

    [[routes]]
    model = "fraud"                  # the name callers use
    live = { version = "1" }         # address defaults to default_live, model to the route's
    # live = { version = "1", metrics_url = "http://127.0.0.1:8002/metrics" }: Triton's Prometheus
    #   endpoint, for compute cost from its metrics too (explicit: the gRPC port does not tell it)
    [[routes.shadows]]
    name = "fraud-v2"
    model = "fraud"
    version = "2"
    sample_rate = 1.0                # by hash of the request id when the caller set one
    # deadline_ms: default = the live deadline (the caller's, else live.deadline_ms)
    max_in_flight = 64
    # metrics_url: default = live's when the shadow's address is live's, else none

    [routes.outputs.probability]     # optional, per output: how live and shadow are compared
    kind = "classifier"              # classifier | binary | regression | embedding (default:
                                     # classifier for float outputs with >1 class, else regression)
    edges = [0.0, 0.25, 0.5, 0.75, 1.0]  # drift histogram bins; default: classifier 20 on [0, 1],
                                     # others `bins` (32) over the first `freeze_rows` (256) live rows
    # threshold = 0.5 (binary), atol = 1e-6 / rtol = 1e-3 (regression)

    [[routes.slices]]                # paired and ground-truth stats per bucket, and a verdict gate
    name = "amount"                  #   per slice with enough outcomes
    input = "INPUT"                  # input tensor (rows = first axis)
    column = 0                       # index in a row
    edges = [3.3]                    # numeric buckets "< 3.3", ">= 3.3" (or labels = [...])
    # values = ["US", "DE"]          # BYTES inputs instead: one bucket per value, plus "other"

    [routes.gates]                   # the verdict (all optional; defaults shown)
    min_pairs = 200                  # compared pairs before latency/error gates decide
    min_outcomes = 200               # outcome rows before quality gates decide
    p99_ratio_max = 1.2              # shadow p99 <= 1.2 x live p99 (p99_ms_max: absolute bound)
    error_rate_max = 0.01
    accuracy_delta_min = -0.005      # lower 95% bound of shadow - live accuracy
    ece_delta_max = 0.02
    slice_min_outcomes = 200         # outcome rows before a slice bucket's accuracy gate decides
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .slices import MAX_BUCKETS, Slice
from .verdict import Gates

# Used for a shadow call when neither the caller, the live target nor the shadow set a deadline:
# a shadow without any deadline could hold its in-flight slot forever.
FALLBACK_SHADOW_DEADLINE_S = 1.0


class ConfigError(ValueError):
    """A config value is missing or wrong; the message starts with the key."""


@dataclass(frozen=True, slots=True)
class LiveTarget:
    address: str
    model: str
    version: str = ""  # "" = whatever the caller asked for
    deadline_s: float | None = None  # applied when the caller set no deadline
    metrics_url: str = ""  # Triton's Prometheus endpoint (compute cost from its metrics too); "" = none


@dataclass(frozen=True, slots=True)
class ShadowTarget:
    name: str
    address: str
    model: str
    version: str = ""
    sample_rate: float = 1.0
    deadline_s: float | None = None  # None = the live deadline
    max_in_flight: int = 64
    noise_floor: bool = False  # an A/A replica of live: its differences are jitter, not change
    metrics_url: str = ""  # "" = none (live's when the shadow's address is live's)


OUTPUT_KINDS = ("classifier", "binary", "regression", "embedding")


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """How one output is compared; every field optional (inferred from the first answer)."""

    kind: str = ""  # "" = inferred
    edges: tuple[float, ...] = ()  # drift histogram edges; () = default rule
    bins: int = 32  # numeric outputs without edges: bins over the first freeze_rows live rows
    freeze_rows: int = 256
    threshold: float = 0.5  # binary
    atol: float = 1e-6  # regression: |live - shadow| <= atol + rtol * |shadow|
    rtol: float = 1e-3


@dataclass(frozen=True, slots=True)
class Route:
    model: str
    live: LiveTarget
    shadows: tuple[ShadowTarget, ...] = ()
    gates: Gates = Gates()
    outputs: tuple[tuple[str, OutputSpec], ...] = ()
    slices: tuple[Slice, ...] = ()

    def output_spec(self, name: str) -> OutputSpec:
        for n, spec in self.outputs:
            if n == name:
                return spec
        return _DEFAULT_SPEC


_DEFAULT_SPEC = OutputSpec()


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str = "0.0.0.0:8001"
    admin_listen: str = "127.0.0.1:8011"
    default_live: str = "127.0.0.1:9001"
    max_message_bytes: int = 256 * 1024 * 1024
    grace_s: float = 10.0
    upstream_compression: str = "none"
    shadow_buffer_bytes: int = 256 * 1024 * 1024
    outcome_max_pairs: int = 50_000
    outcome_ttl_s: float = 600.0
    routes: tuple[Route, ...] = field(default_factory=tuple)

    def route_for(self, model: str) -> Route | None:
        for r in self.routes:
            if r.model == model:
                return r
        return None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Settings:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{p}: cannot read config: {e.strerror or e}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        _only(data, "", {"server", "routes"})
        d = cls()  # defaults (slots dataclass: class attributes are descriptors)
        server = _table(data, "server", "server")
        _only(server, "server.", {"listen", "admin_listen", "default_live", "max_message_mb", "grace_s", "upstream_compression", "shadow_buffer_mb", "outcome_max_pairs", "outcome_ttl_s"})
        listen = _address(server, "listen", "server.", d.listen, allow_wildcard=True)
        admin = _address(server, "admin_listen", "server.", d.admin_listen, allow_wildcard=True)
        if admin == listen and not listen.endswith(":0"):
            raise ConfigError("server.admin_listen: must differ from server.listen (the admin API is not served on the data port)")
        default_live = _address(server, "default_live", "server.", d.default_live)
        max_mb = _number(server, "max_message_mb", "server.", 256, lo=4, hi=2047, integer=True)
        grace = _number(server, "grace_s", "server.", d.grace_s, lo=0.0, hi=3600.0)
        compression = server.get("upstream_compression", "none")
        if compression not in ("none", "gzip", "deflate"):
            raise ConfigError(f"server.upstream_compression: must be one of none, gzip, deflate, got {compression!r}")
        shadow_mb = _number(server, "shadow_buffer_mb", "server.", 256, lo=1, hi=65536, integer=True)
        max_pairs = _number(server, "outcome_max_pairs", "server.", d.outcome_max_pairs, lo=0, hi=10_000_000, integer=True)
        ttl = _number(server, "outcome_ttl_s", "server.", d.outcome_ttl_s, lo=1.0, hi=7 * 86400.0)

        raw_routes = data.get("routes", [])
        if not isinstance(raw_routes, list):
            raise ConfigError("routes: must be an array of tables ([[routes]])")
        routes: list[Route] = []
        seen: set[str] = set()
        for i, r in enumerate(raw_routes):
            routes.append(_route(r, f"routes[{i}].", default_live))
            if routes[-1].model in seen:
                raise ConfigError(f"routes[{i}].model: duplicate route for model {routes[-1].model!r}")
            seen.add(routes[-1].model)
        return cls(
            listen=listen,
            admin_listen=admin,
            default_live=default_live,
            max_message_bytes=int(max_mb) * 1024 * 1024,
            grace_s=float(grace),
            upstream_compression=compression,
            shadow_buffer_bytes=int(shadow_mb) * 1024 * 1024,
            outcome_max_pairs=int(max_pairs),
            outcome_ttl_s=float(ttl),
            routes=tuple(routes),
        )


def _route(r: Any, where: str, default_live: str) -> Route:
    if not isinstance(r, Mapping):
        raise ConfigError(f"{where[:-1]}: must be a table")
    _only(r, where, {"model", "live", "shadows", "gates", "outputs", "slices"})
    model = _string(r, "model", where, required=True)
    live_t = _table(r, "live", where + "live")
    _only(live_t, where + "live.", {"address", "model", "version", "deadline_ms", "metrics_url"})
    live = LiveTarget(
        address=_address(live_t, "address", where + "live.", default_live),
        model=_string(live_t, "model", where + "live.", default=model),
        version=_version(live_t, where + "live."),
        deadline_s=_deadline(live_t, where + "live."),
        metrics_url=_url(live_t, "metrics_url", where + "live."),
    )
    raw_shadows = r.get("shadows", [])
    if not isinstance(raw_shadows, list):
        raise ConfigError(f"{where}shadows: must be an array of tables ([[routes.shadows]])")
    shadows: list[ShadowTarget] = []
    names: set[str] = set()
    for j, s in enumerate(raw_shadows):
        sw = f"{where}shadows[{j}]."
        if not isinstance(s, Mapping):
            raise ConfigError(f"{sw[:-1]}: must be a table")
        _only(s, sw, {"name", "address", "model", "version", "sample_rate", "deadline_ms", "max_in_flight", "noise_floor", "metrics_url"})
        noise_floor = s.get("noise_floor", False)
        if not isinstance(noise_floor, bool):
            raise ConfigError(f"{sw}noise_floor: must be true or false, got {noise_floor!r}")
        smodel = _string(s, "model", sw, default=model)
        sversion = _version(s, sw)
        name = _string(s, "name", sw, default=f"{smodel}:{sversion}" if sversion else smodel)
        if name in names or name == "live":
            raise ConfigError(f"{sw}name: {name!r} is already used in this route")
        names.add(name)
        saddress = _address(s, "address", sw, live.address)
        shadows.append(
            ShadowTarget(
                name=name,
                address=saddress,
                model=smodel,
                version=sversion,
                sample_rate=float(_number(s, "sample_rate", sw, 1.0, lo=0.0, hi=1.0)),
                deadline_s=_deadline(s, sw),
                max_in_flight=int(_number(s, "max_in_flight", sw, 64, lo=1, hi=100_000, integer=True)),
                noise_floor=noise_floor,
                metrics_url=_url(s, "metrics_url", sw, live.metrics_url if saddress == live.address else ""),
            )
        )
        same = (shadows[-1].address, smodel, sversion) == (live.address, live.model, live.version) and sversion
        if same and not noise_floor:
            raise ConfigError(f"{sw}version: this shadow is the live target itself; set noise_floor = true if an A/A noise-floor target is intended")
    return Route(model=model, live=live, shadows=tuple(shadows), gates=_gates(r, where), outputs=_outputs(r, where), slices=_slices(r, where))


def _floats(t: Mapping[str, Any], key: str, where: str, min_len: int) -> tuple[float, ...]:
    v = t.get(key, [])
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v):
        raise ConfigError(f"{where}{key}: must be an array of numbers, got {v!r}")
    e = tuple(float(x) for x in v)
    if len(e) < min_len:
        raise ConfigError(f"{where}{key}: needs at least {min_len} values, got {len(e)}")
    if any(x != x or x in (float("inf"), float("-inf")) for x in e) or any(b <= a for a, b in zip(e, e[1:])):
        raise ConfigError(f"{where}{key}: must be finite and strictly increasing, got {v!r}")
    return e


def _strings(t: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = t.get(key, [])
    if not isinstance(v, list) or any(not isinstance(x, str) for x in v):
        raise ConfigError(f"{where}{key}: must be an array of strings, got {v!r}")
    if len(set(v)) != len(v):
        raise ConfigError(f"{where}{key}: duplicate entries in {v!r}")
    return tuple(v)


def _outputs(r: Mapping[str, Any], where: str) -> tuple[tuple[str, OutputSpec], ...]:
    t = _table(r, "outputs", where + "outputs")
    d = OutputSpec()
    specs = []
    for name, o in t.items():
        ow = f"{where}outputs.{name}."
        if not isinstance(o, Mapping):
            raise ConfigError(f"{ow[:-1]}: must be a table")
        _only(o, ow, {"kind", "edges", "bins", "freeze_rows", "threshold", "atol", "rtol"})
        kind = o.get("kind", "")
        if kind and kind not in OUTPUT_KINDS:
            raise ConfigError(f"{ow}kind: must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")
        specs.append(
            (
                name,
                OutputSpec(
                    kind=kind,
                    edges=_floats(o, "edges", ow, 2) if "edges" in o else (),
                    bins=int(_number(o, "bins", ow, d.bins, lo=1, hi=4096, integer=True)),
                    freeze_rows=int(_number(o, "freeze_rows", ow, d.freeze_rows, lo=1, hi=1_000_000, integer=True)),
                    threshold=float(_number(o, "threshold", ow, d.threshold, lo=-1e30, hi=1e30)),
                    atol=float(_number(o, "atol", ow, d.atol, lo=0, hi=1e30)),
                    rtol=float(_number(o, "rtol", ow, d.rtol, lo=0, hi=1e30)),
                ),
            )
        )
    return tuple(specs)


def _slices(r: Mapping[str, Any], where: str) -> tuple[Slice, ...]:
    raw = r.get("slices", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{where}slices: must be an array of tables ([[routes.slices]])")
    out: list[Slice] = []
    total = 0
    for k, t in enumerate(raw):
        sw = f"{where}slices[{k}]."
        if not isinstance(t, Mapping):
            raise ConfigError(f"{sw[:-1]}: must be a table")
        _only(t, sw, {"name", "input", "column", "edges", "values", "labels"})
        name = _string(t, "name", sw, required=True)
        if any(s.name == name for s in out):
            raise ConfigError(f"{sw}name: duplicate slice {name!r}")
        if ("edges" in t) == ("values" in t):
            raise ConfigError(f"{sw[:-1]}: set edges (numeric input) or values (BYTES input), exactly one")
        edges = _floats(t, "edges", sw, 1) if "edges" in t else ()
        values = _strings(t, "values", sw) if "values" in t else ()
        if "values" in t and not values:
            raise ConfigError(f"{sw}values: needs at least one value")
        default_labels = Slice.edge_labels(edges) if edges else (*values, "other")
        labels = _strings(t, "labels", sw) if "labels" in t else default_labels
        if len(labels) != len(default_labels):
            raise ConfigError(f"{sw}labels: needs {len(default_labels)} names (one per bucket), got {len(labels)}")
        if "missing" in labels:
            raise ConfigError(f"{sw}labels: 'missing' is reserved for rows the slice cannot read")
        total += len(labels) + 1
        if total > MAX_BUCKETS:
            raise ConfigError(f"{sw[:-1]}: more than {MAX_BUCKETS} slice buckets in this route (memory bound)")
        out.append(
            Slice(
                name=name,
                input=_string(t, "input", sw, required=True),
                column=int(_number(t, "column", sw, 0, lo=0, hi=1 << 30, integer=True)),
                edges=edges,
                values=values,
                labels=labels,
            )
        )
    return tuple(out)


def _gates(r: Mapping[str, Any], where: str) -> Gates:
    t = _table(r, "gates", where + "gates")
    gw = where + "gates."
    _only(t, gw, {"min_pairs", "min_outcomes", "p99_ratio_max", "p99_ms_max", "error_rate_max", "accuracy_delta_min", "ece_delta_max", "slice_min_outcomes"})
    d = Gates()
    return Gates(
        min_pairs=int(_number(t, "min_pairs", gw, d.min_pairs, lo=1, hi=1e12, integer=True)),
        min_outcomes=int(_number(t, "min_outcomes", gw, d.min_outcomes, lo=1, hi=1e12, integer=True)),
        p99_ratio_max=float(_number(t, "p99_ratio_max", gw, d.p99_ratio_max, lo=0.01, hi=1000)),
        p99_ms_max=float(_number(t, "p99_ms_max", gw, 0, lo=0.001, hi=3_600_000)) if "p99_ms_max" in t else None,
        error_rate_max=float(_number(t, "error_rate_max", gw, d.error_rate_max, lo=0, hi=1)),
        accuracy_delta_min=float(_number(t, "accuracy_delta_min", gw, d.accuracy_delta_min, lo=-1, hi=1)),
        ece_delta_max=float(_number(t, "ece_delta_max", gw, d.ece_delta_max, lo=-1, hi=1)),
        slice_min_outcomes=int(_number(t, "slice_min_outcomes", gw, d.slice_min_outcomes, lo=1, hi=1e12, integer=True)),
    )


def _only(t: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    for k in t:
        if k not in allowed:
            raise ConfigError(f"{where}{k}: unknown key (expected one of: {', '.join(sorted(allowed))})")


def _table(t: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    v = t.get(key, {})
    if not isinstance(v, Mapping):
        raise ConfigError(f"{where}: must be a table")
    return v


def _string(t: Mapping[str, Any], key: str, where: str, default: str = "", required: bool = False) -> str:
    if key not in t:
        if required:
            raise ConfigError(f"{where}{key}: required")
        return default
    v = t[key]
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where}{key}: must be a non-empty string, got {v!r}")
    return v


def _version(t: Mapping[str, Any], where: str) -> str:
    v = t.get("version", "")
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or (v and not v.isdigit()):
        raise ConfigError(f"{where}version: must be a model version number such as \"2\", got {v!r}")
    return v


def _number(t: Mapping[str, Any], key: str, where: str, default: float, *, lo: float, hi: float, integer: bool = False) -> float:
    v = t.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}{key}: must be {kind}, got {v!r}")
    if not lo <= v <= hi:
        raise ConfigError(f"{where}{key}: must be in [{lo:g}, {hi:g}], got {v!r}")
    return v


def _deadline(t: Mapping[str, Any], where: str) -> float | None:
    if "deadline_ms" not in t:
        return None
    return float(_number(t, "deadline_ms", where, 0, lo=1, hi=3_600_000)) / 1000.0


def _url(t: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    v = t.get(key, default)
    if v == "":
        return v  # none (also to opt a shadow out of live's)
    try:
        u = urlsplit(v) if isinstance(v, str) and not any(c.isspace() for c in v) else None
        ok = u is not None and u.scheme in ("http", "https") and bool(u.hostname) and u.port != 0
    except ValueError:  # a port out of range
        ok = False
    if not ok:
        raise ConfigError(f"{where}{key}: must be an http(s) URL such as \"http://triton:8002/metrics\", got {v!r}")
    return v


def _address(t: Mapping[str, Any], key: str, where: str, default: str, allow_wildcard: bool = False) -> str:
    v = t.get(key, default)
    if not isinstance(v, str):
        raise ConfigError(f"{where}{key}: must be a \"host:port\" string, got {v!r}")
    host, sep, port = v.rpartition(":")
    lo = 0 if allow_wildcard else 1  # port 0 on a listen address: pick a free port
    if not sep or not host or not port.isdigit() or not lo <= int(port) < 65536:
        raise ConfigError(f"{where}{key}: must be \"host:port\" with a port in {lo}..65535, got {v!r}")
    if not allow_wildcard and host in ("0.0.0.0", "[::]"):
        raise ConfigError(f"{where}{key}: {host} is a listen address, not a Triton to connect to")
    return v
