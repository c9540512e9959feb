"""Configuration: a TOML file (stdlib tomllib) read into frozen dataclasses.

Every error names the key that is wrong (``routes[0].shadows[1].sample_rate: must be in [0, 1]``)
so a bad config is refused at start, never discovered under traffic.

    [server]
    listen = "0.0.0.0:8001"          # data port: KServe v2 gRPC, health, reflection
    admin_listen = "127.0.0.1:8011"  # ShadowControl; keep it off the data port's network
    gate_listen = ""                 # e.g. "127.0.0.1:8012": the rollout gate over HTTP (gate_http.py); "" = off
    default_live = "127.0.0.1:9001"  # Triton for unrouted models and every non-infer RPC
    max_message_mb = 256             # largest request/response, both directions
    grace_s = 10.0                   # on SIGTERM: time for in-flight live requests to finish
    shadow_grace_s = 2.0             # then for in-flight shadow calls (the rest are cancelled, counted)
    stop_timeout_s = 30.0            # the whole stop, log and span flush included (> grace_s + shadow_grace_s)
    upstream_compression = "none"    # or "gzip"/"deflate" for calls to Triton
    data_plane = "auto"              # ModelInfer to Triton: "nghttp2" (compiled), "grpcio", auto = nghttp2 if built
    shadow_buffer_mb = 256           # bytes of in-flight shadow requests, all targets; past it: shed
    outcome_max_pairs = 50000        # prediction pairs waiting for ground truth (0: no join)
    outcome_max_mb = 256             # and at most this many MiB of their predictions (+ ~1 KiB a pair)
    outcome_ttl_s = 600              # how long a pair waits for its outcome
    poll_s = 5.0                     # Triton readiness/metadata/repository poll (targets, auto-shadow)

    [[routes]]
    model = "fraud"                  # the name callers use
    live = { version = "1" }         # address defaults to default_live, model to the route's
    # live.metrics_url = "http://127.0.0.1:8002/metrics": Triton's Prometheus endpoint (cost)
    [[routes.shadows]]
    name = "fraud-v2"
    model = "fraud"
    version = "2"
    sample_rate = 1.0                # by hash of the request id when the caller set one
    max_in_flight = 64               # deadline_ms: default = the live deadline
    # shadow = "newest"              # or: targets from Triton's repository, see _config_auto.py

    [routes.outputs.probability]     # optional, per output: how live and shadow are compared
    kind = "classifier"              # classifier | binary | regression | embedding (default: float
                                     # with 2..max_classes (1024) values = classifier, wider = embedding)
    edges = [0.0, 0.25, 0.5, 0.75, 1.0]  # drift bins (default: probabilities 20 on [0, 1], else a fixed log grid)

    [[routes.slices]]                # stats per bucket of an input column, and a gate per bucket
    name = "amount"
    input = "INPUT"                  # input tensor (rows = first axis); column = 0
    edges = [3.3]                    # numeric buckets "< 3.3", ">= 3.3" (or values = [...] for BYTES)

    [routes.gates]                   # the verdict (all optional; defaults shown, see verdict.py)
    min_pairs = 200                  # compared pairs before latency/error gates decide
    min_outcomes = 200               # outcome rows before quality gates decide
    p99_ratio_max = 1.2              # FAIL: shadow p99 lower bound > 1.2 x live p99 upper bound
    p99_delta_ms_min = 1.0           #   and more than 1 ms above it (p99_ms_max: SLA, default the live deadline)
    error_rate_max = 0.01
    invalid_output_rate_max = 0.001  # NaN/inf/out-of-range shadow rows
    accuracy_delta_min = -0.005      # lower 95% bound of shadow - live accuracy
    ece_delta_max = 0.02
    slice_min_outcomes = 200
    [log]                            # the paired-prediction log: _config_log.py
    # security keys ([server] admin_token_file, tls, upstream_tls, ...; routes' live.tls, shadows[].tls): _config_security.py
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import dataplane
from . import _checks as check
from ._checks import ConfigError
from ._config_auto import AutoShadow, parse_auto
from ._config_log import LogSettings, parse_log
from ._config_rollout import Budget, MirrorRules, parse_budget, parse_capacity, parse_mirror
from ._config_security import SECURITY_KEYS, Security, parse_security
from ._config_parts import MAX_BUCKETS, MISSING, OTHER, OUTPUT_KINDS, OutputSpec, Slice, parse_outputs, parse_slices  # noqa: F401 (re-exported)

# Used for a shadow call when neither the caller, the live target nor the shadow set a deadline:
# a shadow without any deadline could hold its in-flight slot forever.
FALLBACK_SHADOW_DEADLINE_S = 1.0


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
    amplify: int = 1  # capacity: each mirrored request sent this many times (copies not compared)
    constant_qps: float = 0.0  # capacity: > 0 = mirrored requests released at this rate (capacity.py)
    qps_queue: int = 1024  # constant_qps: queued requests; the oldest dropped when full
    budget: Budget | None = None  # spent: mirroring to this target pauses (budget.py)


@dataclass(frozen=True, slots=True)
class Gates:
    min_pairs: int = 200  # compared pairs before latency/error gates decide
    min_outcomes: int = 200  # outcome rows before quality gates decide
    p99_ratio_max: float = 1.2  # FAIL needs shadow p99 (lower bound) > this x live p99 (upper bound)...
    p99_delta_ms_min: float = 1.0  # ...and more than this many ms above it (noise on a shared box)
    p99_ms_max: float | None = None  # SLA: FAIL when shadow p99 (lower bound) > this; None = live deadline
    error_rate_max: float = 0.01  # (shadow errors) / sent
    invalid_output_rate_max: float = 0.001  # shadow rows with NaN/inf/out-of-range values / rows compared
    accuracy_delta_min: float = -0.005  # lower 95% bound of (shadow - live) accuracy
    ece_delta_max: float = 0.02  # shadow ECE - live ECE
    slice_min_outcomes: int = 200  # outcome rows in a slice bucket before its accuracy gate decides


@dataclass(frozen=True, slots=True)
class Route:
    model: str
    live: LiveTarget
    shadows: tuple[ShadowTarget, ...] = ()
    gates: Gates = Gates()
    outputs: tuple[tuple[str, OutputSpec], ...] = ()
    slices: tuple[Slice, ...] = ()
    auto: AutoShadow | None = None  # routes[].shadow: targets chosen from Triton's repository (_config_auto.py)
    identical_sample: bool = False  # several shadows: the same requests to all of them, or to none (nway.py)
    mirror: MirrorRules = MirrorRules()  # [routes.mirror]: what may leave live (rules.py)

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
    gate_listen: str = ""  # the rollout gate's HTTP endpoint (Flagger webhook, Argo web metric); "" = off
    default_live: str = "127.0.0.1:9001"
    max_message_bytes: int = 256 * 1024 * 1024
    grace_s: float = 10.0
    shadow_grace_s: float = 2.0  # after the live drain: in-flight shadow calls finish, or are cancelled (counted)
    stop_timeout_s: float = 30.0  # the whole stop: live drain, shadow grace, paired log and span flush
    upstream_compression: str = "none"
    data_plane: str = "auto"  # as asked; dataplane.resolve() gives the one used (nghttp2 or grpcio)
    shadow_buffer_bytes: int = 256 * 1024 * 1024
    outcome_max_pairs: int = 50_000
    outcome_max_bytes: int = 256 * 1024 * 1024
    outcome_ttl_s: float = 600.0
    poll_s: float = 5.0  # Triton's repository, readiness and metadata: checked this often
    routes: tuple[Route, ...] = field(default_factory=tuple)
    log: LogSettings = field(default_factory=LogSettings)
    security: Security = field(default_factory=Security)  # admin auth, TLS, limits, shadow metadata: _config_security.py

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
        check.only(data, "", {"server", "routes", "log"})
        d = cls()  # defaults (slots dataclass: class attributes are descriptors)
        server = check.table(data, "server", "server")
        check.only(server, "server.", {"listen", "admin_listen", "gate_listen", "default_live", "max_message_mb", "grace_s", "shadow_grace_s", "stop_timeout_s", "upstream_compression", "data_plane", "shadow_buffer_mb", "outcome_max_pairs", "outcome_max_mb", "outcome_ttl_s", "poll_s"} | SECURITY_KEYS)
        listen = check.address(server, "listen", "server.", d.listen, allow_wildcard=True)
        admin = check.address(server, "admin_listen", "server.", d.admin_listen, allow_wildcard=True)
        if admin == listen and not listen.endswith(":0"):
            raise ConfigError("server.admin_listen: must differ from server.listen (the admin API is not served on the data port)")
        gate = check.address(server, "gate_listen", "server.", "", allow_wildcard=True) if "gate_listen" in server else ""
        if gate and gate in (listen, admin) and not gate.endswith(":0"):
            raise ConfigError("server.gate_listen: must differ from server.listen and server.admin_listen (HTTP, not gRPC)")
        default_live = check.address(server, "default_live", "server.", d.default_live)
        max_mb = check.number(server, "max_message_mb", "server.", 256, lo=4, hi=2047, integer=True)
        grace = check.number(server, "grace_s", "server.", d.grace_s, lo=0.0, hi=3600.0)
        shadow_grace = check.number(server, "shadow_grace_s", "server.", d.shadow_grace_s, lo=0.0, hi=3600.0)
        drains = float(grace) + float(shadow_grace)  # the log and span flush get the rest of stop_timeout_s
        stop_timeout = check.number(server, "stop_timeout_s", "server.", max(d.stop_timeout_s, drains + 10.0), lo=0.1, hi=10800.0)
        if stop_timeout <= drains:
            raise ConfigError(f"server.stop_timeout_s: must exceed grace_s + shadow_grace_s ({drains:g} s): the rest flushes the paired log and spans, got {stop_timeout:g}")
        compression = server.get("upstream_compression", "none")
        if compression not in ("none", "gzip", "deflate"):
            raise ConfigError(f"server.upstream_compression: must be one of none, gzip, deflate, got {compression!r}")
        plane = server.get("data_plane", "auto")
        try:
            dataplane.resolve(plane, compression)
        except ValueError as e:
            raise ConfigError(f"server.data_plane: {e}") from None
        shadow_mb = check.number(server, "shadow_buffer_mb", "server.", 256, lo=1, hi=65536, integer=True)
        max_pairs = check.number(server, "outcome_max_pairs", "server.", d.outcome_max_pairs, lo=0, hi=10_000_000, integer=True)
        pairs_mb = check.number(server, "outcome_max_mb", "server.", 256, lo=1, hi=1 << 20, integer=True)
        ttl = check.number(server, "outcome_ttl_s", "server.", d.outcome_ttl_s, lo=1.0, hi=7 * 86400.0)
        poll = check.number(server, "poll_s", "server.", d.poll_s, lo=0.2, hi=3600.0)

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
            listen=listen, admin_listen=admin, gate_listen=gate, default_live=default_live,
            max_message_bytes=int(max_mb) * 1024 * 1024, grace_s=float(grace), upstream_compression=compression, data_plane=plane,
            shadow_grace_s=float(shadow_grace), stop_timeout_s=float(stop_timeout),
            shadow_buffer_bytes=int(shadow_mb) * 1024 * 1024,
            outcome_max_pairs=int(max_pairs), outcome_max_bytes=int(pairs_mb) * 1024 * 1024, outcome_ttl_s=float(ttl), poll_s=float(poll),
            routes=tuple(routes), log=parse_log(data), security=parse_security(data, admin, default_live),
        )  # fmt: skip


def _route(r: Any, where: str, default_live: str) -> Route:
    if not isinstance(r, Mapping):
        raise ConfigError(f"{where[:-1]}: must be a table")
    check.only(r, where, {"model", "live", "shadows", "shadow", "gates", "outputs", "slices", "identical_sample", "mirror"})
    model = check.string(r, "model", where, required=True)
    live_t = check.table(r, "live", where + "live")
    check.only(live_t, where + "live.", {"address", "model", "version", "deadline_ms", "metrics_url", "tls"})
    live = LiveTarget(
        address=check.address(live_t, "address", where + "live.", default_live),
        model=check.string(live_t, "model", where + "live.", default=model),
        version=check.version(live_t, where + "live."),
        deadline_s=check.deadline(live_t, where + "live."),
        metrics_url=check.url(live_t, "metrics_url", where + "live."),
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
        check.only(s, sw, {"name", "address", "model", "version", "sample_rate", "deadline_ms", "max_in_flight", "noise_floor", "metrics_url", "tls", "amplify", "constant_qps", "qps_queue", "budget"})
        noise_floor = s.get("noise_floor", False)
        if not isinstance(noise_floor, bool):
            raise ConfigError(f"{sw}noise_floor: must be true or false, got {noise_floor!r}")
        smodel = check.string(s, "model", sw, default=model)
        sversion = check.version(s, sw)
        name = check.string(s, "name", sw, default=f"{smodel}:{sversion}" if sversion else smodel)
        if name in names or name == "live":
            raise ConfigError(f"{sw}name: {name!r} is already used in this route")
        names.add(name)
        saddress = check.address(s, "address", sw, live.address)
        amplify, qps, qps_queue = parse_capacity(s, sw)
        shadows.append(
            ShadowTarget(
                name=name,
                address=saddress,
                model=smodel,
                version=sversion,
                sample_rate=float(check.number(s, "sample_rate", sw, 1.0, lo=0.0, hi=1.0)),
                deadline_s=check.deadline(s, sw),
                max_in_flight=int(check.number(s, "max_in_flight", sw, 64, lo=1, hi=100_000, integer=True)),
                noise_floor=noise_floor,
                metrics_url=check.url(s, "metrics_url", sw, live.metrics_url if saddress == live.address else ""),
                amplify=amplify, constant_qps=qps, qps_queue=qps_queue, budget=parse_budget(s, sw),
            )
        )
        same = (shadows[-1].address, smodel, sversion) == (live.address, live.model, live.version) and sversion
        if same and not noise_floor:
            raise ConfigError(f"{sw}version: this shadow is the live target itself; set noise_floor = true if an A/A noise-floor target is intended")
    auto = parse_auto(r, where, live.model, live.address, live.version)
    identical = r.get("identical_sample", False)
    if not isinstance(identical, bool):
        raise ConfigError(f"{where}identical_sample: must be true or false, got {identical!r}")
    if identical:
        if auto is not None:
            raise ConfigError(f"{where}identical_sample: needs shadows named in [[routes.shadows]], not an auto-shadow policy (routes[].shadow)")
        if len(shadows) < 2:
            raise ConfigError(f"{where}identical_sample: needs at least 2 shadows in this route, got {len(shadows)}")
        rates = {t.sample_rate for t in shadows}
        if len(rates) > 1:
            raise ConfigError(f"{where}identical_sample: every shadow needs the same sample_rate, got {sorted(rates)}")
        if any(t.constant_qps for t in shadows):
            raise ConfigError(f"{where}identical_sample: constant_qps releases requests at each target's own rate; leave it out")
    slices = parse_slices(r, where)
    return Route(
        model=model, live=live, shadows=tuple(shadows), gates=_gates(r, where), outputs=parse_outputs(r, where), slices=slices, auto=auto,
        identical_sample=identical, mirror=parse_mirror(r, where, slices),
    )  # fmt: skip


# Gate key -> (lo, hi, integer): the ranges config accepts.
_GATE_RANGES = {
    "min_pairs": (1, 1e12, True), "min_outcomes": (1, 1e12, True), "p99_ratio_max": (0.01, 1000, False),
    "p99_delta_ms_min": (0, 3_600_000, False), "p99_ms_max": (0.001, 3_600_000, False), "error_rate_max": (0, 1, False),
    "invalid_output_rate_max": (0, 1, False), "accuracy_delta_min": (-1, 1, False), "ece_delta_max": (-1, 1, False),
    "slice_min_outcomes": (1, 1e12, True),
}  # fmt: skip


def _gates(r: Mapping[str, Any], where: str) -> Gates:
    t = check.table(r, "gates", where + "gates")
    gw = where + "gates."
    check.only(t, gw, set(_GATE_RANGES))
    values: dict[str, Any] = {}
    for key, (lo, hi, integer) in _GATE_RANGES.items():
        if key in t:
            v = check.number(t, key, gw, 0, lo=lo, hi=hi, integer=integer)
            values[key] = int(v) if integer else float(v)
    return Gates(**values)


