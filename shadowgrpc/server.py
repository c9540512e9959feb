"""The aio servers: the data port (KServe v2 + health + reflection) and the admin port
(ShadowControl + health), and their lifecycle.

Start: bind, then one repository poll (repository.py: every shadow target's contract checked
before it gets traffic), then serve. Shutdown order (STYLE.md 5): health NOT_SERVING, stop the
repository poll, ``server.stop(grace)`` so in-flight live requests
finish, drain shadow tasks with a timeout, flush and close the paired log, close upstream channels, then telemetry (metrics, and
the tracer provider last, so the shadow spans ended by the drain are flushed).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import service_pb2  # noqa: F401  (registers inference.* for reflection)

from .backends import Upstreams
from .codec import SERVICE
from .config import Settings
from .cost import CostTracker
from .repository import RepositoryWatcher
from .router import Router
from .servicer import ShadowControl, inference_handlers
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
        self.upstreams = Upstreams(settings.max_message_bytes, settings.upstream_compression)
        self.router = Router(settings, self.upstreams)
        self.telemetry = Telemetry(telemetry if telemetry is not None else TelemetryOptions.from_env(), self.router)
        self.router.telemetry = self.telemetry.hooks
        self.cost = CostTracker(self.router)
        self.watcher = RepositoryWatcher(self.router, settings.poll_s)
        self.pairlog = None
        if settings.log.enabled:
            from .pairlog.writer import PairLog  # pyarrow: imported only when the log is on

            self.pairlog = PairLog(settings.log, settings.routes)
            self.router.log = self.pairlog
        opts = [
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 1),
        ]
        self.server = grpc.aio.server(options=opts)
        self.admin = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self.health = health.aio.HealthServicer()
        self.admin_health = health.aio.HealthServicer()
        self.port = 0
        self.admin_port = 0
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        s = self.settings
        self.server.add_registered_method_handlers(SERVICE, inference_handlers(self.router, self.telemetry.hooks))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        shadow_pb2_grpc.add_ShadowControlServicer_to_server(ShadowControl(self.router, self.cost), self.admin)
        health_pb2_grpc.add_HealthServicer_to_server(self.admin_health, self.admin)
        reflection.enable_server_reflection((SHADOW_CONTROL, health.SERVICE_NAME, reflection.SERVICE_NAME), self.admin)
        self.port = self._bind(self.server, s.listen, "server.listen")
        self.admin_port = self._bind(self.admin, s.admin_listen, "server.admin_listen")
        self.telemetry.start()  # the Prometheus endpoint, when asked for
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
        log.info("serving KServe v2 on port %d, ShadowControl on port %d", self.port, self.admin_port)

    @property
    def metrics_port(self) -> int | None:
        return self.telemetry.metrics_port

    @staticmethod
    def _bind(server: grpc.aio.Server, address: str, key: str) -> int:
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise OSError(f"{key}: cannot listen on {address}: {e}") from None
        if port == 0:
            raise OSError(f"{key}: cannot listen on {address} (in use?)")
        return port

    async def stop(self, grace: float | None = None) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.grace_s if grace is None else grace
        await self.health.enter_graceful_shutdown()
        await self.admin_health.enter_graceful_shutdown()
        await self.watcher.stop()  # no route swaps during shutdown
        await self.server.stop(grace)  # in-flight live requests finish within grace
        cancelled = await self.router.drain(timeout=max(grace, 0.1))
        if cancelled:
            log.warning("shutdown: %d shadow calls still in flight were cancelled", cancelled)
        if self.pairlog is not None:  # after the drain: the shadows' rows are in; flushed to files
            await asyncio.to_thread(self.pairlog.close, max(grace, 5.0))
        await self.admin.stop(0.5)
        await self.upstreams.close()
        self.telemetry.shutdown(timeout_s=max(grace, 1.0))  # the tracer provider last

    async def wait(self) -> None:
        await self.server.wait_for_termination()
