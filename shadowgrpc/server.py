"""The aio servers: the data port (KServe v2 + health + reflection) and the admin port
(ShadowControl + health), and their lifecycle.

Start: bind, then one repository poll (repository.py: every shadow target's contract checked
before it gets traffic), then serve. Shutdown order (STYLE.md 5): health NOT_SERVING, stop the
repository poll, ``server.stop(grace)`` so in-flight live requests
finish, drain shadow tasks with a timeout, flush and close the paired log, close upstream channels, then telemetry (metrics, and
the tracer provider last, so the shadow spans ended by the drain are flushed); all within ``server.stop_timeout_s``.
Reload (``Front.reload``, reload.py): the new config built whole, then swapped in one step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import service_pb2  # noqa: F401  (registers inference.* for reflection)

from .backends import Upstreams
from .codec import SERVICE
from .config import Settings
from .budget_watch import BudgetWatcher
from .cost import CostTracker
from .repository import RepositoryWatcher
from .router import Router
from .security import ServerTlsSource, admin_interceptors, bind, metadata_options, server_source
from .servicer import DrainGate, ShadowControl, inference_handlers
from .telemetry import Telemetry, TelemetryOptions
from .v1 import shadow_pb2, shadow_pb2_grpc

log = logging.getLogger("shadowgrpc.server")

SHADOW_CONTROL = shadow_pb2.DESCRIPTOR.services_by_name["ShadowControl"].full_name


class Front:
    """The front service. ``await start()``, then ``port``/``admin_port`` (and ``metrics_port``
    when Prometheus metrics are on); ``await stop()``. ``telemetry`` defaults to
    ``TelemetryOptions.from_env()`` (SHADOWGRPC_TRACE, SHADOWGRPC_METRICS_PORT)."""

    def __init__(self, settings: Settings, telemetry: TelemetryOptions | None = None) -> None:
        self.settings = settings
        self.upstreams = Upstreams(settings.max_message_bytes, settings.upstream_compression, settings.security, settings.data_plane)
        self.router = Router(settings, self.upstreams)
        self.telemetry = Telemetry(telemetry if telemetry is not None else TelemetryOptions.from_env(), self.router)
        self.router.telemetry = self.telemetry.hooks
        self.cost = CostTracker(self.router)
        self.watcher = RepositoryWatcher(self.router, settings.poll_s)
        self.budgets = BudgetWatcher(self.router)  # budget_watch.py: periods, Triton compute, estimates (every server.poll_s)
        self.pairlog = None
        if settings.log.enabled:
            from .pairlog.writer import PairLog  # pyarrow: imported only when the log is on

            self.pairlog = PairLog(settings.log, settings.routes)
            self.router.log = self.pairlog
        opts = [
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 1),
            *metadata_options(settings.security),  # over it: the call fails before the handler (README "Security")
        ]
        self.server = grpc.aio.server(options=opts)
        self.admin_auth = admin_interceptors(settings.security)
        self.admin = grpc.aio.server(options=[("grpc.so_reuseport", 0)], interceptors=self.admin_auth)
        self.tls = server_source(settings.security.tls)  # certificates read now: a bad file fails here
        self.admin_tls = server_source(settings.security.admin_tls)
        self.health = health.aio.HealthServicer()
        self.admin_health = health.aio.HealthServicer()
        self.port = 0
        self.admin_port = 0
        self._stopped = asyncio.Event()
        self.config_path: str | None = None  # serve --config: what SIGHUP and an empty Reload re-read
        self.pinned: dict = {}  # Settings fields a reload keeps as they are (a worker's listen/admin_listen)
        self._reload_lock = asyncio.Lock()
        self.gate = DrainGate()  # the data port's handlers: refused (UNAVAILABLE) once the stop begins
        self.rollout_gate = None  # server.gate_listen: gate_http.GateServer (Flagger / Argo Rollouts), started in start()

    async def start(self) -> None:
        s = self.settings
        self.server.add_registered_method_handlers(SERVICE, inference_handlers(self.router, self.telemetry.hooks, self.gate))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        control = ShadowControl(self.router, self.cost, self.reload_from)
        shadow_pb2_grpc.add_ShadowControlServicer_to_server(control, self.admin)
        health_pb2_grpc.add_HealthServicer_to_server(self.admin_health, self.admin)
        reflection.enable_server_reflection((SHADOW_CONTROL, health.SERVICE_NAME, reflection.SERVICE_NAME), self.admin)
        self.port = self._bind(self.server, s.listen, "server.listen", self.tls)
        self.admin_port = self._bind(self.admin, s.admin_listen, "server.admin_listen", self.admin_tls)
        if s.gate_listen:  # the rollout gate: the admin API's report, token and TLS, over HTTP (gate_http.py)
            from .gate_http import start_gate

            self.rollout_gate = await start_gate(s, control, shadow_pb2.GetReportRequest, lambda: self.settings.security.admin_token)
        self.telemetry.start()  # the Prometheus endpoint, when asked for
        log.info("data plane to Triton for ModelInfer: %s (%s)", self.upstreams.data_plane, self.upstreams.data_plane_why)
        await self.watcher.start()  # the checks before traffic: no target is sent to before its own
        if self.pairlog is not None:
            self.pairlog.start()  # creates the folders; one that cannot be made stops the log (reported), not the front
            if self.pairlog.stats.stopped:
                log.error("paired log is off: %s", self.pairlog.stats.last_error)
        await self.server.start()
        await self.admin.start()
        for h, names in ((self.health, ("", SERVICE)), (self.admin_health, ("", SHADOW_CONTROL))):
            for n in names:
                await h.set(n, health_pb2.HealthCheckResponse.SERVING)
        await self.cost.start()  # baseline of Triton's statistics; never fails the start
        await self.budgets.start()  # the budgets' compute baselines, then its poll; never fails the start
        log.info("serving KServe v2 on port %d, ShadowControl on port %d", self.port, self.admin_port)

    @property
    def metrics_port(self) -> int | None:
        return self.telemetry.metrics_port

    @staticmethod
    def _bind(server: grpc.aio.Server, address: str, key: str, tls: ServerTlsSource | None = None) -> int:
        return bind(server, address, key, tls)

    def reload_tls(self) -> None:
        """Read every certificate file again (security.py): the data and admin ports' (the next
        TLS handshake uses them; open connections keep theirs) and the upstream Triton channels'
        (new channels; the old ones close when their calls end). Everything is read and checked
        before anything changes: a bad file raises ConfigError naming its key and the old
        credentials stay. Call on the front's event loop (the SIGHUP path)."""
        sec = self.settings.security  # a reloaded config's files, keys and token apply
        for key, t, new in (("server.tls", self.tls, sec.tls), ("server.admin_tls", self.admin_tls, sec.admin_tls)):
            if (t is None) != (new is None):  # a reload refuses this first (reload.py); a direct call is told
                log.warning("%s: TLS turned %s needs a restart; the port keeps its current mode", key, "on" if t is None else "off")
        sources = [(t, new) for t, new in ((self.tls, sec.tls), (self.admin_tls, sec.admin_tls)) if t is not None]
        fresh = [t.prepare(new) for t, new in sources]  # new None (TLS off in the new config): the port keeps its files
        self.upstreams.reload_tls(sec)  # prepares all its channels before swapping any
        for (t, _), prepared in zip(sources, fresh):
            t.apply(prepared)
        for a in self.admin_auth:
            a.token = sec.admin_token
        if self.rollout_gate is not None:
            self.rollout_gate.reload_tls(sec.admin_tls)
        log.info("TLS certificates reloaded (%d server ports)", len(sources))

    async def reload(self, settings: Settings) -> list[str]:
        """Apply ``settings`` atomically (reload.py; the certificate files read again by
        ``reload_tls`` just before the swap); ConfigError / reload.ReloadRefused when refused (a key
        that needs a restart, a certificate that does not load): nothing changed, the old config
        serves on. Returns what changed, one line each."""
        from .reload import ReloadRefused, apply

        if self.pinned:  # a worker: its own listen, admin_listen, security (a callable: of the new value)
            settings = dataclasses.replace(settings, **{k: v(getattr(settings, k)) if callable(v) else v for k, v in self.pinned.items()})
        async with self._reload_lock:
            if self._stopped.is_set():
                raise ReloadRefused("the front is stopping")
            return await apply(self, settings)

    async def reload_from(self, path: str | None = None, text: str | None = None) -> list[str]:
        """Reload from TOML ``text``, the file ``path``, or (neither) ``config_path``; logged."""
        from .reload import reload_from

        return await reload_from(self, path, text)

    async def stop(self, grace: float | None = None) -> None:
        """Drain within ``server.stop_timeout_s`` (README "Reload and shutdown"): refuse new calls
        (UNAVAILABLE), in-flight live calls get ``grace`` (default ``server.grace_s``), then
        in-flight shadow calls ``server.shadow_grace_s`` (the rest are cancelled, counted), then
        the paired log is flushed and closed, upstream channels closed, spans flushed last."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        s = self.settings
        t0 = time.monotonic()

        def left() -> float:
            return max(s.stop_timeout_s - (time.monotonic() - t0), 0.0)

        grace = min(s.grace_s if grace is None else grace, left())
        self.gate.close()  # new calls: UNAVAILABLE; accepted ones run on
        await self.health.enter_graceful_shutdown()
        await self.admin_health.enter_graceful_shutdown()
        await self.watcher.stop()  # no route swaps during shutdown
        await self.budgets.stop()
        await self.gate.idle(grace)  # in-flight live requests finish within grace
        await self.server.stop(max(grace - (time.monotonic() - t0), 0.0))  # then grpc stops listening
        cancelled = await self.router.drain(timeout=max(min(s.shadow_grace_s, left()), 0.01))
        if cancelled:
            log.warning("shutdown: %d shadow calls still in flight after server.shadow_grace_s were cancelled", cancelled)
        if self.pairlog is not None:  # after the drain: the shadows' rows are in; flushed to files
            await asyncio.to_thread(self.pairlog.close, max(left() - min(1.0, left() / 2), 0.1))
            st = self.pairlog.stats
            if st.rows_queued:
                log.error("shutdown: %d paired-log rows not written within server.stop_timeout_s", st.rows_queued)
        if self.rollout_gate is not None:
            await self.rollout_gate.stop()
        await self.admin.stop(min(0.5, left()))
        await self.upstreams.close()
        self.telemetry.shutdown(timeout_s=max(left(), 0.1))  # the tracer provider last
        log.info("stopped in %.2f s (server.stop_timeout_s %g)", time.monotonic() - t0, s.stop_timeout_s)

    async def wait(self) -> None:
        await self.server.wait_for_termination()
