"""Triton's model repository, polled: the checks before traffic and auto-shadowing.

Every ``server.poll_s`` (default 5 s; once before the front serves), for each route:
1. live's ModelReady / ModelMetadata / ModelConfig (the contract the others are checked against;
   also whether live has a sequence batcher or is decoupled, for the router);
2. each configured shadow target: the same, then the **contract check before traffic**
   (``parity.contract_problems``: input and output names, datatypes, shapes, max batch size). A
   target is sent requests only while it is READY and compatible; otherwise it is NOT_READY or
   INCOMPATIBLE, with the reason in the report and a log line when that changes, and its sampled
   requests are counted ``not_ready`` instead of failing one by one (the per-answer contract
   check stays as a second line). The **parity audit** (``parity.parity_mismatches``: instance
   groups, batching, backend, timeouts, deadlines) is recorded beside it;
3. a route with an auto-shadow policy (``routes[].shadow``, _config_auto.py): RepositoryIndex
   on the shadow's Triton; the newest READY versions that are not live (or the listed ones) are
   the targets. A version that becomes one opens a comparison window (a new ``TargetState``,
   checked like the others); one that stops being one (superseded, unloaded, removed, failed to
   load) has its window closed with the reason, kept in the report. With ``load = true`` (Triton
   in explicit model-control mode) the front lists ``repository/<model>/`` and calls
   RepositoryModelLoad when its version directories change; it refuses to when the model's
   ``version_policy`` would unload live's version.
A change publishes the route's new entry atomically (``Router.publish``, routes.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass

import grpc
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import service_pb2 as kserve

from .config import ShadowTarget
from .parity import ModelView, contract_problems, honours_shadow, model_view, parity_mismatches
from .state import CLOSED, INCOMPATIBLE, MIRRORING, NOT_READY, Candidate, RouteState, TargetState

log = logging.getLogger("shadowgrpc.repository")

CALL_TIMEOUT_S = 5.0
LOAD_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Seen:
    """A model version as read from its Triton: the view, its config dict, and why the config
    could not be read ("" when it could: the contract check needs only the metadata)."""

    view: ModelView
    config: dict
    config_error: str


class RepositoryWatcher:
    """Polls Triton for every route of ``router`` (router.Router) every ``poll_s`` seconds."""

    def __init__(self, router, poll_s: float) -> None:
        self.router = router
        self.poll_s = poll_s
        self._task: asyncio.Task[None] | None = None
        self._dirs: dict[str, tuple] = {}  # route -> signature of its repository's version folders
        self.lock = asyncio.Lock()  # one poll at a time; a config reload (reload.py) holds it while it swaps
        for rs in router.state.routes.values():
            if rs.auto is not None:
                rs.auto.poll_s = poll_s

    async def start(self) -> None:
        """One poll (the checks before traffic), then polling in the background."""
        await self.poll_once()
        self._task = asyncio.create_task(self._loop(), name="repository-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll_once()
            except Exception:  # a poll must never end polling
                log.exception("repository poll failed")

    async def poll_once(self) -> None:
        """One poll of every route; a route's failure is logged and never stops the others (nor
        the front's start: its targets stay as they were, NOT_READY before their first check)."""
        async with self.lock:
            await self.poll_held()

    async def poll_held(self) -> None:
        """``poll_once`` for a caller that holds ``lock``."""
        routes = list(self.router.state.routes.values())
        for rs, r in zip(routes, await asyncio.gather(*(self._route(rs) for rs in routes), return_exceptions=True)):
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                log.error("repository poll of route '%s' failed: %r", rs.route.model, r, exc_info=r)
                if rs.auto is not None:
                    rs.auto.last_error = f"{type(r).__name__}: {r}"

    # -- one route -------------------------------------------------------------------------------
    async def _route(self, rs: RouteState) -> None:
        r = rs.route
        entry = self.router.routes[r.model]
        live, live_err = await self._view(entry.live, r.live.model, r.live.version)
        changed = False
        for ts in rs.shadows:
            if not ts.auto and ts.status != CLOSED:
                view, err = await self._view(self._upstream(ts.target.address), ts.target.model, ts.target.version)
                changed |= self._judge(rs, ts, live, live_err, view, err)
        if r.auto is not None:
            try:
                changed |= await self._auto(rs, live, live_err)
                rs.auto.last_error = ""
            except grpc.aio.AioRpcError as e:
                rs.auto.last_error = f"{e.code().name}: {e.details()}"
            rs.auto.last_poll = time.time()
        seq = live.view.sequence_batching if live is not None else entry.sequence_batching
        dec = live.view.decoupled if live is not None else entry.decoupled
        if changed or (seq, dec) != (entry.sequence_batching, entry.decoupled):
            self.router.publish(r.model, seq, dec)
            if rs.auto is not None and changed:
                rs.auto.swaps += 1

    def _upstream(self, address: str):
        return self.router.upstreams.get(address, "shadow")

    async def _view(self, up, model: str, version: str):
        """(parity.ModelView, "") of ``model``/``version`` on ``up``, or (None, why not)."""
        try:
            ready = kserve.ModelReadyResponse.FromString(
                await up.unary["ModelReady"](kserve.ModelReadyRequest(name=model, version=version).SerializeToString(), timeout=CALL_TIMEOUT_S)
            )
            if not ready.ready:
                return None, f"model '{model}'{_v(version)} is not ready on {up.address}"
            meta = kserve.ModelMetadataResponse.FromString(
                await up.unary["ModelMetadata"](kserve.ModelMetadataRequest(name=model, version=version).SerializeToString(), timeout=CALL_TIMEOUT_S)
            )
        except grpc.aio.AioRpcError as e:
            return None, f"model '{model}'{_v(version)} on {up.address}: {e.code().name}: {e.details()}"
        try:
            cfg = kserve.ModelConfigResponse.FromString(
                await up.unary["ModelConfig"](kserve.ModelConfigRequest(name=model, version=version).SerializeToString(), timeout=CALL_TIMEOUT_S)
            ).config
            config = MessageToDict(cfg, preserving_proto_field_name=True)
            config_err = ""
        except grpc.aio.AioRpcError as e:  # the contract check needs only the metadata
            config, config_err = {}, f"ModelConfig of '{model}'{_v(version)}: {e.code().name}: {e.details()}"
        try:
            view = model_view(MessageToDict(meta, preserving_proto_field_name=True), config)
        except ValueError as e:  # a metadata/config this front cannot read: no traffic, say why
            return None, f"model '{model}'{_v(version)} on {up.address}: unreadable metadata or config: {e}"
        return Seen(view, config, config_err), ""

    def _judge(self, rs: RouteState, ts: TargetState, live, live_err: str, shadow, err: str) -> bool:
        """Set ``ts``'s status from the two views; True when whether it is mirrored changed."""
        before = ts.status
        if live is None:
            ts.status, ts.reason = NOT_READY, f"live's contract is unknown: {live_err}"
        elif shadow is None:
            ts.status, ts.reason = NOT_READY, err
        else:
            lv, lerr, sv, serr = live.view, live.config_error, shadow.view, shadow.config_error
            problems = contract_problems(lv, sv)
            ts.contract = problems
            if problems:
                ts.status, ts.reason = INCOMPATIBLE, "; ".join(problems)
            else:
                ts.status, ts.reason = MIRRORING, ""
            if lerr or serr:
                ts.parity, ts.parity_error, ts.honours_shadow = None, lerr or serr, None
            else:
                live_deadline = rs.route.live.deadline_s
                ts.parity = parity_mismatches(lv, sv, live_deadline, ts.target.deadline_s or live_deadline)
                ts.parity_error, ts.honours_shadow = "", honours_shadow(sv)
        if ts.status != before:
            name = f"route '{rs.route.model}' shadow '{ts.target.name}'"
            if ts.status == MIRRORING:
                log.info("%s: contract checked, mirroring", name)
            elif ts.status == INCOMPATIBLE:
                log.warning("%s: refused before traffic, incompatible with live: %s", name, ts.reason)
            else:
                log.warning("%s: not mirrored: %s", name, ts.reason)
        return (ts.status == MIRRORING) != (before == MIRRORING)  # never called for a CLOSED window, never closes one

    # -- auto-shadow ------------------------------------------------------------------------------
    async def _auto(self, rs: RouteState, live, live_err: str) -> bool:
        r, a, st = rs.route, rs.route.auto, rs.auto
        up = self._upstream(a.address)
        same_model = (a.model, a.address) == (r.live.model, r.live.address)
        index = await self._index(up, a.model)
        if a.load and await self._load_if_changed(rs, up, index, live, same_model):
            index = await self._index(up, a.model)
        now = time.time()
        for v, (state, reason) in index.items():
            c = st.candidates.setdefault(v, Candidate(v, seen=now))
            c.state = state
            if same_model and v == r.live.version:
                c.decision, c.reason = "live", "the live version"
            elif state == "UNAVAILABLE" and reason:
                _decide(c, "failed_to_load", reason.strip().splitlines()[0], now)
        ready = sorted((v for v, (s, _) in index.items() if s == "READY" and not (same_model and v == r.live.version)), key=int, reverse=True)
        wanted = [v for v in a.versions if v in ready] if a.versions else ready[: a.newest]
        changed = False
        open_windows = {ts.target.version: ts for ts in rs.shadows if ts.auto and ts.status != CLOSED}
        for v, ts in open_windows.items():
            if v in wanted:
                continue
            if v not in index:
                why = f"version {v} is no longer in the repository index of {a.address}"
            elif index[v][0] != "READY":
                why = f"version {v} is {index[v][0]}" + (f": {index[v][1].strip().splitlines()[0]}" if index[v][1] else "")
            else:
                why = f"superseded by version {', '.join(wanted)}" if wanted else f"version {v} is no longer selected"
            ts.status, ts.reason, ts.closed, ts.closed_reason = CLOSED, why, now, why
            c = st.candidates.setdefault(v, Candidate(v, seen=now))
            _decide(c, "removed" if v not in index or index[v][0] != "READY" else "not_selected", why, now)
            log.warning("route '%s': stopped mirroring to %s: %s", r.model, ts.target.name, why)
            changed = True
        for v in wanted:
            ts = open_windows.get(v)
            view, err = await self._view(up, a.model, v)
            if ts is None:
                ts = TargetState(self._target(rs, v), auto=True)
                rs.shadows.append(ts)
                self._judge(rs, ts, live, live_err, view, err)
                changed = True
                log.info("route '%s': new shadow window %s (%s)", r.model, ts.target.name, ts.status)
            else:
                changed |= self._judge(rs, ts, live, live_err, view, err)
            c = st.candidates.setdefault(v, Candidate(v, seen=now))
            if ts.status == MIRRORING:
                _decide(c, "shadowed", "", now)
            elif ts.status == INCOMPATIBLE:
                _decide(c, "refused", ts.reason, now)
            else:
                _decide(c, "not_ready", ts.reason, now)
        for v in ready:
            if v not in wanted and st.candidates[v].decision in ("", "shadowed"):
                _decide(st.candidates[v], "not_selected", f"policy {a.policy} selects {', '.join(wanted) or 'none'}", now)
        return changed

    def _target(self, rs: RouteState, version: str) -> ShadowTarget:
        r, a = rs.route, rs.route.auto
        names = {ts.target.name for ts in rs.shadows}
        name = base = f"{a.model}:{version}"
        k = 2
        while name in names:
            name, k = f"{base}#{k}", k + 1
        return ShadowTarget(
            name=name, address=a.address, model=a.model, version=version, sample_rate=a.sample_rate,
            deadline_s=a.deadline_s, max_in_flight=a.max_in_flight, metrics_url=r.live.metrics_url if a.address == r.live.address else "",
        )  # fmt: skip

    @staticmethod
    async def _index(up, model: str) -> dict[str, tuple[str, str]]:
        """Version -> (state, reason) of ``model`` in the repository index of ``up``'s Triton."""
        raw = await up.unary["RepositoryIndex"](kserve.RepositoryIndexRequest(ready=False).SerializeToString(), timeout=CALL_TIMEOUT_S)
        out: dict[str, tuple[str, str]] = {}
        for m in kserve.RepositoryIndexResponse.FromString(raw).models:
            if m.name == model and m.version.isdigit():
                out[m.version] = (m.state, m.reason)
        return out

    async def _load_if_changed(self, rs: RouteState, up, index: dict, live, same_model: bool) -> bool:
        """RepositoryModelLoad when the version folders under repository/<model> changed since the
        last load (or, at the first poll, hold a version the index does not). True when called."""
        r, a, st = rs.route, rs.route.auto, rs.auto
        sig = _folders(os.path.join(a.repository, a.model))
        last = self._dirs.get(r.model)
        if sig == last or (last is None and {v for v, _ in sig} <= set(index)):
            self._dirs[r.model] = sig
            return False
        self._dirs[r.model] = sig
        if same_model and live is not None and not _keeps(live.config, r.live.version, a.newest):
            st.last_error = f"not loading '{a.model}': its version_policy would unload live's version {r.live.version} (use version_policy: {{ all {{ }} }})"
            log.error("route '%s': %s", r.model, st.last_error)
            return False
        t0 = time.monotonic()
        try:
            await up.unary["RepositoryModelLoad"](kserve.RepositoryModelLoadRequest(model_name=a.model).SerializeToString(), timeout=LOAD_TIMEOUT_S)
            log.info("route '%s': loaded '%s' (its version folders changed)", r.model, a.model)
        except grpc.aio.AioRpcError as e:  # e.g. a version that fails to load: the index says which
            log.warning("route '%s': RepositoryModelLoad '%s': %s: %s", r.model, a.model, e.code().name, e.details())
        st.last_load_s = time.monotonic() - t0
        return True


def _v(version: str) -> str:
    return f" version {version}" if version else ""


def _decide(c: Candidate, decision: str, reason: str, now: float) -> None:
    if (c.decision, c.reason) != (decision, reason):
        c.decision, c.reason, c.decided = decision, reason, now


def _folders(path: str) -> tuple:
    """(version, newest mtime of it and its entries) of each numeric folder under ``path``."""
    out = []
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.name.isdigit() and e.is_dir():
                    m = e.stat().st_mtime_ns
                    try:
                        with os.scandir(e.path) as inner:
                            m = max([m, *(f.stat().st_mtime_ns for f in inner)])
                    except OSError:
                        pass
                    out.append((e.name, m))
    except OSError:
        return ()
    return tuple(sorted(out))


def _keeps(config: dict, live_version: str, newest: int) -> bool:
    """Whether reloading the model keeps ``live_version`` loaded under its ``version_policy``
    (ModelConfig as a dict; Triton's default: the newest version only)."""
    policy = config.get("version_policy") or {"latest": {"num_versions": 1}}
    if "all" in policy:
        return True
    if "specific" in policy:
        return live_version in {str(v) for v in policy["specific"].get("versions", ())}
    return int(policy.get("latest", {}).get("num_versions", 1)) > newest
