"""front_overhead.py, part 3: nginx (Debian's package) as the C-proxy yardstick, in the same run.

  nginx-pass    ``grpc_pass`` to the same Triton for the same model: one hop
  nginx-mirror  ``grpc_pass`` to Triton plus ``mirror`` of every request to a second location that
                ``grpc_pass``es it to Triton again (the same model, fraud v1: nginx cannot rename
                the model, so the mirrored call is a second fraud v1 inference)

nginx is started by the benchmark as a child process (``daemon off``, ``master_process on``,
``worker_processes 1``: one worker does all the proxying, comparable with the front's one process;
the master only waits), in a session of its own, so its process group is the master and its worker
and its CPU time is ``group_cpu_s`` of that group (the same /proc reading as Triton's). Every path it
writes (pid, error log, lock, temp dirs) is in the run's temp dir; it listens on a free loopback
port with an HTTP/2 cleartext listener and keeps up to 32 idle connections to Triton. It is
stopped with SIGQUIT (graceful), then SIGTERM, then SIGKILL of its group.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

if __package__:
    from ._fronts import NGINX_SCENARIOS, LoopbackProcess, triton_model_stats
else:  # run as a script: benchmarks/ is sys.path[0]
    from _fronts import NGINX_SCENARIOS, LoopbackProcess, triton_model_stats

MIRROR_LOCATION = "/_shadowgrpc_bench_mirror"
MAX_BODY = "256m"  # the front's default server.max_message_mb


def nginx_binary() -> str | None:
    """nginx on PATH, or Debian's /usr/sbin/nginx (PATH may lack sbin); None when not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def nginx_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
        return (out.stderr or out.stdout).strip().split("/", 1)[-1]
    except (OSError, subprocess.SubprocessError) as e:
        return f"? ({e})"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_config(scenario: str, triton: str, port: int, prefix: pathlib.Path) -> str:
    """The whole nginx.conf of ``scenario``; every path under ``prefix``."""
    if scenario not in NGINX_SCENARIOS:
        raise ValueError(f"unknown nginx scenario {scenario!r} (expected: {', '.join(NGINX_SCENARIOS)})")
    timeouts = "grpc_connect_timeout 5s;\n            grpc_send_timeout 60s;\n            grpc_read_timeout 60s;"
    mirror = ""
    shadow_location = ""
    if scenario == "nginx-mirror":
        mirror = f"mirror {MIRROR_LOCATION};\n            mirror_request_body on;\n            "
        # A mirror subrequest's URI is the mirror location; gRPC sends the URI as :path, so the
        # original path ($request_uri: /inference.GRPCInferenceService/ModelInfer) is put back.
        shadow_location = f"""
        location = {MIRROR_LOCATION} {{
            internal;
            rewrite ^ $request_uri break;
            grpc_pass grpc://triton;
            {timeouts}
        }}
"""
    user = "user root;\n" if os.geteuid() == 0 else ""  # as root the worker would otherwise be nobody (temp dirs are root's)
    p = prefix
    return f"""# front_overhead.py {scenario}: generated, one run only
daemon off;
master_process on;
worker_processes 1;
{user}pid {p}/nginx.pid;
lock_file {p}/nginx.lock;
error_log {p}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    client_max_body_size {MAX_BODY};
    client_body_buffer_size 1m;
    keepalive_requests 1000000;
    keepalive_timeout 300s;

    upstream triton {{
        server {triton};
        keepalive 32;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}

    server {{
        listen 127.0.0.1:{port} http2;

        location / {{
            {mirror}grpc_pass grpc://triton;
            {timeouts}
        }}
{shadow_location}    }}
}}
"""


class NginxProcess(LoopbackProcess):
    """nginx for one scenario: ``start()`` (ready when its port accepts and its worker runs),
    ``cpu_s()`` (master + worker, from /proc), ``stop()``."""

    def __init__(self, scenario: str, workdir: pathlib.Path, triton: str, tag: str, binary: str) -> None:
        self.scenario = scenario
        self.prefix = workdir / f"nginx-{tag}"
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.config_path = self.prefix / "nginx.conf"
        self.log_path = self.prefix / "error.log"
        self.triton = triton
        self.binary = binary
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._calls0 = 0

    def _calls(self) -> int:
        return int(triton_model_stats(self.triton).get("fraud:1", {}).get("inference_count", -1))

    def mark(self) -> None:
        """Before the measured phases: Triton's fraud v1 inference count (the load's model)."""
        self._calls0 = self._calls()

    def check_calls(self, sent: int, problem) -> float | None:
        """Triton calls per request since ``mark()``: 1 through nginx-pass, 2 through nginx-mirror
        (the proof that every request was mirrored). Mirrored calls finish after their answer, so a
        few warm-up mirrors may land after ``mark()`` and a few last ones after the phase: 16 either way."""
        n = self._calls() - self._calls0
        want = 2 if self.scenario == "nginx-mirror" else 1
        if not sent:
            return None
        if abs(n - want * sent) > 16:
            problem(f"{self.scenario}: Triton ran {n} fraud v1 inferences for {sent} requests (expected {want} per request)")
        return n / sent

    def start(self, timeout: float = 20.0, tries: int = 3) -> NginxProcess:
        for attempt in range(tries):  # a free port can be taken between our probe and nginx's bind
            self.port = free_port()
            self.config_path.write_text(nginx_config(self.scenario, self.triton, self.port, self.prefix))
            cmd = [self.binary, "-p", f"{self.prefix}/", "-c", str(self.config_path), "-e", str(self.log_path)]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                         cwd=str(self.prefix), start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self._accepts() and len(self.group_pids()) >= 2:
                    return self
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.kill()
                raise RuntimeError(f"nginx ({self.scenario}) not ready after {timeout:.0f} s:\n{self.log_tail()}")
            if "Address already in use" not in self.log_tail() or attempt == tries - 1:
                raise RuntimeError(f"nginx ({self.scenario}) exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
        raise AssertionError("unreachable")

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def group_pids(self) -> list[int]:
        """Live processes of nginx's process group (the master and its worker)."""
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, ValueError):
                    data = pathlib.Path(f"/proc/{entry}/stat").read_bytes()
                    if int(data[data.rfind(b")") + 2 :].split()[2]) == self.pid:
                        out.append(int(entry))
        return out


    def log_problems(self) -> list[str]:
        """error-log lines at level error or worse."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [ln for ln in text.splitlines() if any(f"[{lv}]" in ln for lv in ("error", "crit", "alert", "emerg"))][:20]

    def stop(self, timeout: float = 15.0) -> dict[str, Any]:
        """SIGQUIT (graceful), then SIGTERM, then SIGKILL of the group; {exit_code, stop_s, signal, killed}."""
        assert self.proc is not None
        t0 = time.monotonic()
        used = None
        for sig in (signal.SIGQUIT, signal.SIGTERM):
            if self.proc.poll() is not None:
                break
            used = sig.name
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        killed = self.proc.poll() is None
        if killed:
            self.kill()
        return {"exit_code": self.proc.returncode, "stop_s": time.monotonic() - t0, "signal": used, "killed": killed}

    def finish(self, out: dict[str, Any], problem) -> None:
        """Stop; the stop and the error log's bad lines into ``out``, each fault to ``problem``."""
        out["front_stop"] = st = self.stop()
        if st["killed"] or st["exit_code"] != 0:
            problem(f"{self.scenario}: did not exit cleanly on {st['signal']}: {st}\n{self.log_tail()}")
        out["front_log_problems"] = bad = self.log_problems()
        if bad:
            problem(f"{self.scenario}: errors in its log ({self.log_path}):\n  " + "\n  ".join(bad[:8]))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)
