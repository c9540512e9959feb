"""Run a Front in a background thread with its own event loop, so that sync clients
(tritonclient.grpc, generated stubs) can call it from tests and benchmarks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from shadowgrpc.config import Settings
from shadowgrpc.server import Front


class FrontThread:
    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.settings = Settings.from_dict(cfg)
        self.loop = asyncio.new_event_loop()
        self.front: Front | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="front", daemon=True)

    def start(self) -> FrontThread:
        self._thread.start()

        async def go() -> Front:
            f = Front(self.settings)
            await f.start()
            return f

        self.front = self.call(go())
        return self

    def call(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def address(self) -> str:
        assert self.front is not None
        return f"127.0.0.1:{self.front.port}"

    @property
    def admin_address(self) -> str:
        assert self.front is not None
        return f"127.0.0.1:{self.front.admin_port}"

    @property
    def router(self):
        assert self.front is not None
        return self.front.router

    def drain(self, timeout: float = 10.0) -> int:
        return self.call(self.router.drain(timeout), timeout + 5)

    def flush_log(self, timeout: float = 10.0) -> None:
        """Finish the paired log's queued rows into files ([log] on), off the front's loop."""
        assert self.front is not None and self.front.pairlog is not None
        self.call(asyncio.to_thread(self.front.pairlog.flush, timeout), timeout + 5)

    def stop(self) -> None:
        if self.front is not None:
            self.call(self.front.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def front_for(triton_address: str, routes: list[dict], log: dict | None = None, **server: Any) -> FrontThread:
    """A started FrontThread on loopback ports in front of ``triton_address`` (``log``: a [log] table)."""
    cfg = {"server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "default_live": triton_address, **server}, "routes": routes}
    if log is not None:
        cfg["log"] = log
    return FrontThread(cfg).start()
