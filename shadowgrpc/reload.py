"""Config reload without a restart: SIGHUP (re-read ``serve --config``) and ``ShadowControl.Reload``.

``apply(front, new)`` in two steps:

1. **Build** (may fail; changes nothing): the keys that need a restart are compared first
   (``restart_keys``: any difference refuses the reload with ``ReloadRefused`` naming the key), then
   the new route table is planned: per route, keep its state (counts go on), or start a fresh one,
   and per configured shadow target keep its window, retune it, open a new one or close it. Every
   upstream channel the new config needs is made here.
2. **Swap** (cannot fail; no ``await`` inside, so no request handler runs in the middle): the
   windows are retuned or closed, the comparison state's route table and the router's route
   entries are replaced whole (one assignment each), the reloadable server keys applied. A request
   reads its route's entry once at arrival (routes.py), so it sees the old config or the new one,
   never a mix. Then one repository poll (the checks before traffic, as at start) opens the new
   targets; the swap and that poll hold the watcher's lock, so no poll runs across a swap.

What a reload does to a route (``routes[].model`` is its identity):
- new model: added, its targets NOT_READY until the poll checks them;
- model gone: removed (its requests go to ``default_live`` unchanged, like any unrouted model);
- live target (address, model, version), ``outputs`` or ``slices`` changed: a fresh state (its old
  counts compared something else);
- anything else (gates, live deadline/metrics_url, shadows, the auto-shadow policy): state kept.
  A shadow (by name) with the same address, model, version and noise_floor keeps its window and
  counts (sample_rate, deadline, max_in_flight, metrics_url retuned); a removed one's window is
  CLOSED (kept in the report, like auto-shadow's); a new one, or one whose identity changed, opens
  a new window. A changed auto-shadow policy closes the route's auto windows and starts over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal

import grpc

from ._checks import ConfigError
from .config import Route, Settings
from .routes import RouteEntry, ShadowLeg
from .state import CLOSED, AutoState, RouteState, TargetState

log = logging.getLogger("shadowgrpc.reload")

# Settings fields that a reload applies; every other field must stay the same.
RELOADABLE = {"default_live", "grace_s", "shadow_grace_s", "stop_timeout_s", "shadow_buffer_bytes", "poll_s", "routes", "log", "security"}
LOG_RELOADABLE = {"sample_rate", "keep_inputs"}
# Field -> the config key a user changed (fields not named here are ``server.<field>``).
KEY_NAMES = {
    "max_message_bytes": "server.max_message_mb", "outcome_max_bytes": "server.outcome_max_mb",
}  # fmt: skip


class ReloadRefused(ConfigError):
    """The new config is valid but cannot be applied without a restart (or the front is stopping)."""


def restart_keys(old: Settings, new: Settings) -> list[str]:
    """The config keys that differ between ``old`` and ``new`` and need a restart."""
    out: list[str] = []
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name, None)
        if f.name in RELOADABLE or a == b:
            continue
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):  # a table of keys (security): name each
            out += [KEY_NAMES.get(g.name, f"server.{g.name}") for g in dataclasses.fields(a) if getattr(a, g.name) != getattr(b, g.name)]
        else:
            out.append(KEY_NAMES.get(f.name, f"server.{f.name}"))
    out += _security_keys(getattr(old, "security", None), getattr(new, "security", None))
    if old.log.enabled != new.log.enabled:
        out.append("log.path (the [log] table on or off)")
    elif old.log.enabled:
        out += [f"log.{g.name}" for g in dataclasses.fields(old.log) if g.name not in LOG_RELOADABLE and getattr(old.log, g.name) != getattr(new.log, g.name)]
    return out


def _security_keys(a, b) -> list[str]:
    """Security keys fixed when a port opens (its certificate files, keys, the admin token, the
    upstream TLS and the shadow metadata allow-list reload: ``Front.reload_tls``)."""
    if a is None or a == b:
        return []
    out = ["server.max_metadata_kb"] if a.max_metadata_bytes != b.max_metadata_bytes else []
    for key in ("tls", "admin_tls"):
        x, y = getattr(a, key), getattr(b, key)
        if (x is None) != (y is None):
            out.append(f"server.{key} (TLS on or off)")
        elif x is not None and bool(x.client_ca) != bool(y.client_ca):
            out.append(f"server.{key}.client_ca (client certificates asked or not)")
    return out


def refuse_restart_keys(old: Settings, new: Settings) -> None:
    keys = restart_keys(old, new)
    if keys:
        raise ReloadRefused(f"{', '.join(keys)}: cannot change without a restart (the running config keeps serving)")


def load(path: str | None = None, text: str | None = None) -> Settings:
    """A config from ``text`` (TOML) or the file ``path``; ConfigError naming what is wrong."""
    if text is not None:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config text: not valid TOML: {e}") from None
        return Settings.from_dict(data)
    if not path:
        raise ReloadRefused("no config to reload: this front was not started with --config FILE; send the config (path or TOML text)")
    return Settings.load(path)


# -- the build -------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Plan:
    routes: dict[str, RouteState]  # the comparison state's new route table
    kept: dict[str, RouteState]  # routes whose state (and entry) carry on: model -> state
    shadows: dict[str, list[TargetState]]  # kept routes: their new window lists
    retune: list[tuple[TargetState, object]]  # (window, its new ShadowTarget)
    close: list[tuple[TargetState, str, str]]  # (window, why, new name or "")
    changes: list[str]


def _identity(t) -> tuple:
    return (t.address, t.model, t.version, t.noise_floor)


def _fresh(r: Route, poll_s: float) -> RouteState:
    rs = RouteState(r, shadows=[TargetState(t) for t in r.shadows], auto=_auto(r, poll_s))
    return rs


def _auto(r: Route, poll_s: float) -> AutoState | None:
    return None if r.auto is None else AutoState(r.auto.policy, poll_s, r.auto.load)


def plan(old_state, new: Settings) -> _Plan:
    p = _Plan({}, {}, {}, [], [], [])
    for r in new.routes:
        rs = old_state.routes.get(r.model)
        if rs is None:
            p.routes[r.model] = _fresh(r, new.poll_s)
            p.changes.append(f"route '{r.model}' added")
            continue
        o = rs.route
        if (o.live.address, o.live.model, o.live.version, o.outputs, o.slices) != (r.live.address, r.live.model, r.live.version, r.outputs, r.slices):
            p.routes[r.model] = _fresh(r, new.poll_s)
            p.changes.append(f"route '{r.model}': live target, outputs or slices changed: its counts start again")
            continue
        p.routes[r.model] = p.kept[r.model] = rs
        if o == r:
            p.shadows[r.model] = list(rs.shadows)
            continue
        p.shadows[r.model] = _shadows(rs, r, new.poll_s, p)
        if o.gates != r.gates:
            p.changes.append(f"route '{r.model}': gates changed")
        if (o.live.deadline_s, o.live.metrics_url) != (r.live.deadline_s, r.live.metrics_url):
            p.changes.append(f"route '{r.model}': live deadline or metrics_url changed")
    for model in old_state.routes:
        if model not in p.routes:
            p.changes.append(f"route '{model}' removed")
    return p


def _shadows(rs: RouteState, r: Route, poll_s: float, p: _Plan) -> list[TargetState]:
    """The kept route's new window list: every old window in its place (the paired log's target
    indexes stay valid), new ones appended."""
    out = list(rs.shadows)
    open_cfg = {ts.target.name: ts for ts in rs.shadows if not ts.auto and ts.status != CLOSED}
    names = {ts.target.name for ts in rs.shadows}
    where = f"route '{r.model}'"
    for t in r.shadows:
        ts = open_cfg.pop(t.name, None)
        if ts is not None and _identity(ts.target) == _identity(t):
            if ts.target != t:
                p.retune.append((ts, t))
                p.changes.append(f"{where}: shadow '{t.name}' retuned ({_retuned(ts.target, t)})")
            continue
        if ts is not None:  # same name, another model: its window closes, a new one opens
            p.close.append((ts, "config reload: the target changed", _free(t.name, names)))
            p.changes.append(f"{where}: shadow '{t.name}' changed target: new window")
        else:
            for old in rs.shadows:  # a closed window of the same name keeps its counts under another name
                if old.target.name == t.name:
                    p.close.append((old, old.closed_reason or old.reason, _free(t.name, names)))
            p.changes.append(f"{where}: shadow '{t.name}' added")
        out.append(TargetState(t))
    for name, ts in open_cfg.items():
        p.close.append((ts, "config reload: removed from the config", ""))
        p.changes.append(f"{where}: shadow '{name}' removed")
    if rs.route.auto != r.auto:
        p.changes.append(f"{where}: auto-shadow policy changed")
        for ts in rs.shadows:
            if ts.auto and ts.status != CLOSED:
                p.close.append((ts, "config reload: the route's auto-shadow policy changed", ""))
    return out


def _retuned(old, new) -> str:
    """What a reload changed in a kept target's settings, e.g. ``sample_rate 1 -> 0.5, budget``."""
    keys = ("sample_rate", "max_in_flight", "deadline_s", "amplify", "constant_qps", "qps_queue", "budget", "metrics_url")
    out = [f"{k} {getattr(old, k)!s} -> {getattr(new, k)!s}" if k != "budget" else "budget" for k in keys if getattr(old, k) != getattr(new, k)]
    return ", ".join(out) or "settings"


def _free(name: str, names: set[str]) -> str:
    k = 2
    while f"{name}#{k}" in names:
        k += 1
    names.add(f"{name}#{k}")
    return f"{name}#{k}"


# -- the swap --------------------------------------------------------------------------------------
def _swap(front, new: Settings, p: _Plan, upstreams: dict) -> None:
    """Everything from the plan, without an await: no handler runs in the middle."""
    import time

    router, now = front.router, time.time()
    for ts, t in p.retune:
        ts.target = t
    for ts, why, rename in p.close:
        if ts.status != CLOSED:
            ts.status, ts.reason, ts.closed, ts.closed_reason = CLOSED, why, now, why
        if rename:
            ts.target = dataclasses.replace(ts.target, name=rename)
    r_new = {r.model: r for r in new.routes}
    for model, rs in p.kept.items():
        if rs.route.auto != r_new[model].auto:
            rs.auto = _auto(r_new[model], new.poll_s)
            front.watcher._dirs.pop(model, None)
        rs.route = r_new[model]
        rs.shadows[:] = p.shadows[model]
    entries: dict[str, RouteEntry] = {}
    for model, rs in p.routes.items():
        router._attach(rs)  # admission.py: budgets made or retuned (what was spent kept), capacity, pacer, N-way state
        old = router.routes.get(model) if model in p.kept else None
        legs = [ShadowLeg(ts, upstreams[ts.target.address], rs.route, i) for i, ts in enumerate(rs.shadows) if ts.status != CLOSED]
        entries[model] = RouteEntry(
            rs, upstreams[rs.route.live.address] if old is None else old.live, legs, None if old is None else old.completeness,
            0 if old is None else old.generation + 1, False if old is None else old.sequence_batching, False if old is None else old.decoupled,
        )  # fmt: skip
    router.state.routes = p.routes
    router.routes = entries
    router.settings = front.settings = new
    router.default = upstreams[new.default_live]
    router.shadow_buffer_bytes = new.shadow_buffer_bytes
    router.log_rate, router.log_inputs = new.log.sample_rate, new.log.keep_inputs
    front.watcher.poll_s = new.poll_s
    if router.log is not None:
        router.log.set_routes(new.routes, {m: tuple(ts.target for ts in rs.shadows) for m, rs in p.routes.items()})


async def apply(front, new: Settings) -> list[str]:
    """Apply ``new`` to ``front`` (server.Front): ReloadRefused when a key needs a restart,
    ConfigError when a certificate file does not load (nothing changed then); returns what
    changed, one line each."""
    old = front.settings
    refuse_restart_keys(old, new)
    changes = [f"server.{k}: {getattr(old, k)!r} -> {getattr(new, k)!r}" for k in sorted(RELOADABLE - {"routes", "log", "security"}) if getattr(old, k) != getattr(new, k)]
    changes += [f"log.{k}: {getattr(old.log, k)!r} -> {getattr(new.log, k)!r}" for k in sorted(LOG_RELOADABLE) if getattr(old.log, k) != getattr(new.log, k)]
    if getattr(old, "security", None) != getattr(new, "security", None):
        changes.append("server security keys (token, certificate files, upstream TLS, shadow_metadata_allow) changed")
    async with front.watcher.lock:  # no poll across the swap
        p = plan(front.router.state, new)
        front.settings = new  # reload_tls reads the new config's files, keys and token
        try:
            front.reload_tls()  # everything read and checked before anything is swapped
        except BaseException:
            front.settings = old
            raise
        up = front.router.upstreams
        upstreams = {new.default_live: up.get(new.default_live, "live")}
        for rs in p.routes.values():
            upstreams.setdefault(rs.route.live.address, up.get(rs.route.live.address, "live"))
            for ts in rs.shadows:
                upstreams.setdefault(ts.target.address, up.get(ts.target.address, "shadow"))
        for t in (t for r in new.routes for t in r.shadows):
            upstreams.setdefault(t.address, up.get(t.address, "shadow"))
        _swap(front, new, p, upstreams)
        await front.watcher.poll_held()  # the checks before traffic for the new targets, as at start
    return changes + p.changes


# -- triggers --------------------------------------------------------------------------------------
async def reload_from(front, path: str | None = None, text: str | None = None) -> list[str]:
    """Load (``text``, else ``path``, else the front's ``config_path``) and apply; logs the result.
    ConfigError (ReloadRefused: a restart key, or stopping) when refused: the old config serves on."""
    try:
        new = load(path or (None if text is not None else front.config_path), text)
        changes = await front.reload(new)
    except ConfigError as e:
        log.error("config reload refused: %s (the running config keeps serving)", e)
        raise
    log.info("config reloaded: %s", "; ".join(changes) or "no change")
    return changes


def on_sighup(reload, tasks: set) -> None:
    """SIGHUP: ``reload()`` (a coroutine function) in a task; its refusal is logged by it."""
    task = asyncio.ensure_future(_quiet(reload()))
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _quiet(coro) -> None:
    try:
        await coro
    except ConfigError:
        pass  # logged where it was refused
    except Exception:
        log.exception("config reload failed")


async def reload_rpc(reload, request, context):
    """``ShadowControl.Reload`` on ``reload(path, text)``: ReloadResponse, or the refusal as a status."""
    from .v1 import shadow_pb2 as pb

    src = request.WhichOneof("source")
    try:
        changes = await reload(request.config_path if src == "config_path" else None, request.config_toml if src == "config_toml" else None)
    except ReloadRefused as e:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
    except ConfigError as e:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    return pb.ReloadResponse(applied=True, changes=changes)


# -- serve --workers: the parent -------------------------------------------------------------------
def install_parent(loop, control, settings: Settings, config_path: str | None) -> None:
    """The workers parent (workers.MergedControl ``control``): SIGHUP and its Reload RPC."""
    from functools import partial

    control.settings, control.config_path, control.reloads = settings, config_path, set()
    control.reload_rpc = partial(reload_rpc, partial(parent_reload, control))
    loop.add_signal_handler(signal.SIGHUP, on_sighup, partial(parent_reload, control), control.reloads)


async def parent_reload(control, path: str | None = None, text: str | None = None) -> list[str]:
    """Load and check the config here (TOML errors, bad keys, restart keys, against the parent's own
    config), then send its text to every worker's Reload; ``control.settings`` follows."""
    from .v1 import shadow_pb2 as pb

    try:
        new = load(path or (None if text is not None else control.config_path), text)
        refuse_restart_keys(control.settings, new)
        sec = getattr(new, "security", None)
        if sec is not None and sec.admin_token != control.settings.security.admin_token:  # the parent's admin port and its worker channels hold it
            raise ReloadRefused("server.admin_token_file / admin_token_env: a new admin token needs a restart with serve --workers")
        src = getattr(control, "admin_tls", None)  # the parent's own admin port: its files read and checked now
        prepared = src.prepare(new.security.admin_tls) if src is not None else None
        if text is None:
            with open(path or control.config_path, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        log.error("config reload refused: cannot read %s: %s", path or control.config_path, e)
        raise ConfigError(f"{path or control.config_path}: cannot read config: {e.strerror or e}") from None
    except ConfigError as e:
        log.error("config reload refused: %s (the running config keeps serving)", e)
        raise
    calls = [stub.Reload(pb.ReloadRequest(config_toml=text), timeout=60.0) for stub in control._stubs]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [(w, r) for w, r in zip(control.workers, results) if isinstance(r, BaseException)]
    if failed:
        why = "; ".join(f"worker {w.index} (pid {w.pid}): {getattr(r, 'details', lambda: repr(r))()}" for w, r in failed)
        log.error("config reload: refused by %d of %d workers: %s", len(failed), len(results), why)
        if len(failed) == len(results) and all(isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.INVALID_ARGUMENT for _, r in failed):
            raise ConfigError(why)
        raise ReloadRefused(f"applied by {len(results) - len(failed)} of {len(results)} workers; refused by {why}")
    control.settings = new
    if src is not None:
        src.apply(prepared)  # the next TLS handshake on the parent's admin port gets the new certificate
    if getattr(control, "gate", None) is not None:
        control.gate.reload_tls(new.security.admin_tls)  # the rollout gate (gate_http.py) uses the admin port's certificate
    changes = list(results[0].changes)
    log.info("config reloaded by %d workers: %s", len(results), "; ".join(changes) or "no change")
    return changes

