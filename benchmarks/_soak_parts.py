"""benchmarks/soak.py, its parts: the flaky shadow tritonserver (SIGKILLed and restarted on a
schedule), GetReport over one kept channel, /proc and repository helpers."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import threading
import time
from typing import Any

from _fronts import log

COUNTS = ("sampled", "sent", "ok", "shed", "down", "not_ready", "error")  # the shadow's, from GetReport


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MB (10^6 bytes)."""
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    return None


def fraud_repository(dst: pathlib.Path, version: str) -> pathlib.Path:
    """A repository holding only the example ``fraud`` model, version ``version``."""
    from shadowgrpc.local import example_repository

    src = example_repository() / "fraud"
    (dst / "fraud").mkdir(parents=True)
    shutil.copy(src / "config.pbtxt", dst / "fraud" / "config.pbtxt")
    shutil.copytree(src / version, dst / "fraud" / version, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def shm_regions(pgid: int) -> set[str]:
    """The /dev/shm Python-backend regions mapped by the processes of group ``pgid``."""
    out = set()
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.isdigit() and os.getpgid(int(entry)) == pgid:
                with open(f"/proc/{entry}/maps") as f:
                    out |= {line.split()[-1] for line in f if "/dev/shm/triton_python_backend_shm_region_" in line}
    return out




class FlakyShadow:
    """A tritonserver killed with SIGKILL (its whole process group) and restarted on the same
    ports, on a schedule, in a thread of its own."""

    def __init__(self, repo: pathlib.Path, workdir: pathlib.Path, flap_s: float, down_s: float) -> None:
        from shadowgrpc.local import EmbeddedTriton

        self.repo, self.workdir, self.flap_s, self.down_s = repo, workdir, flap_s, down_s
        self.server = EmbeddedTriton(repo, log_path=workdir / "shadow-triton-0.log", extra_args=["--exit-timeout-secs=5"]).start()
        self.ports = (self.server.grpc_port, self.server.http_port, self.server.metrics_port)
        self.events: list[dict[str, Any]] = []  # {"kill": t, "up": t, "start_s": s} (t from t0)
        self.up = threading.Event()
        self.up.set()
        self.last_up = time.monotonic()  # when it last became ready
        self.stop_flag = threading.Event()
        self.t0 = 0.0
        self.thread: threading.Thread | None = None
        self.error: str | None = None

    @property
    def address(self) -> str:
        return self.server.grpc_address

    def begin(self, t0: float) -> None:
        self.t0 = t0
        self.thread = threading.Thread(target=self._run, name="flaky-shadow", daemon=True)
        self.thread.start()

    def _kill(self) -> None:
        """SIGKILL the process group; then remove the Python-backend shared-memory regions its
        processes had mapped (a killed tritonserver leaves them in /dev/shm, 1 MiB each)."""
        pid, regions = self.server.pid, set()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                pgid = os.getpgid(pid)
                regions = shm_regions(pgid)
                os.killpg(pgid, signal.SIGKILL)
        self.up.clear()
        self.server.stop(timeout=5)  # reaps it (and any stub left in the group)
        for path in regions:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _restart(self, n: int) -> None:
        from shadowgrpc.local import EmbeddedTriton

        g, h, m = self.ports
        self.server = EmbeddedTriton(self.repo, grpc_port=g, http_port=h, metrics_port=m,
                                     log_path=self.workdir / f"shadow-triton-{n}.log", extra_args=["--exit-timeout-secs=5"])
        for attempt in range(5):  # a port can linger a moment after the kill
            try:
                self.server.start()
                break
            except Exception as e:  # noqa: BLE001 - retried, then reported
                self.error = f"restart {n} attempt {attempt + 1}: {type(e).__name__}: {str(e)[:300]}"
                log(f"  shadow {self.error}")
                if self.stop_flag.wait(2.0):
                    return
        else:
            return
        self.last_up = time.monotonic()
        self.up.set()

    def _run(self) -> None:
        n = 0
        due = self.t0 + self.flap_s / 2
        while not self.stop_flag.wait(max(0.0, due - time.monotonic())):
            n += 1
            t_kill = time.monotonic()
            self._kill()
            ev: dict[str, Any] = {"n": n, "kill_s": round(t_kill - self.t0, 1)}
            self.events.append(ev)
            log(f"  [{t_kill - self.t0:6.1f} s] shadow tritonserver killed (SIGKILL #{n})")
            if self.stop_flag.wait(self.down_s):
                return
            t_start = time.monotonic()
            self._restart(n)
            if self.up.is_set():
                ev.update(up_s=round(time.monotonic() - self.t0, 1), start_s=round(time.monotonic() - t_start, 1))
                log(f"  [{time.monotonic() - self.t0:6.1f} s] shadow tritonserver up again ({ev['start_s']} s to start)")
            due += self.flap_s

    def close(self) -> None:
        self.stop_flag.set()
        if self.thread is not None:
            self.thread.join(60)
        self.server.stop()


# -------------------------------------------------------------------------------------------
# The soak
# -------------------------------------------------------------------------------------------


class Reports:
    """GetReport over one admin channel kept open for the whole soak (a channel per call would
    add an accepted socket to the front's fds now and then, and blur the fd readings)."""

    def __init__(self, admin_address: str) -> None:
        import grpc

        from shadowgrpc.v1 import shadow_pb2, shadow_pb2_grpc

        self.channel = grpc.insecure_channel(admin_address)
        self.stub = shadow_pb2_grpc.ShadowControlStub(self.channel)
        self.request = shadow_pb2.GetReportRequest()

    def counts(self) -> dict[str, Any]:
        """The shadow's counters and the route's live counters; {"failed": why} if it could not be read."""
        from shadowgrpc.report_text import report_json

        try:
            rep = json.loads(report_json(self.stub.GetReport(self.request, timeout=5.0)))
        except Exception as e:  # noqa: BLE001 - the report is evidence, not a requirement
            return {"failed": f"{type(e).__name__}: {e}"}
        for route in rep.get("routes", []):
            live_errors = route.get("live_errors", {})
            for s in route.get("shadows", []):
                errors = {k: int(v) for k, v in s.get("errors", {}).items()}
                store = rep.get("outcomes", {})
                return {**{k: int(s.get(k, 0)) for k in COUNTS if k != "error"}, "error": sum(errors.values()), "errors": errors,
                        "pairs_waiting": int(store.get("waiting", 0)), "pairs_bytes": int(store.get("bytes", 0)),
                        "pairs_expired": int(store.get("evicted_expired", 0)),
                        "status": s.get("status"), "internal_errors": int(s.get("internal_errors", 0)),
                        "live_requests": int(route.get("requests", 0)), "live_errors": {k: int(v) for k, v in live_errors.items()}}
        return {"failed": "no shadow in the report"}

    def close(self) -> None:
        self.channel.close()
