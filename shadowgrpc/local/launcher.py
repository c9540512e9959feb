"""EmbeddedTriton: one tritonserver on loopback ports, started, watched until ready, stopped."""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .dist import check_numpy, has_nvidia_driver, prepare_server_dir, server_env
from .log import LOG_TAIL_LINES, TritonStartError, log_tail, start_error
from .proc import exit_status, spawn, stop_at_exit, terminate

_LOOPBACK = "127.0.0.1"
_READY_POLL_S = 0.1
_MAX_PORT_ATTEMPTS = 3
# What tritonserver 2.51 prints when a port is taken (gRPC, HTTP and metrics alike):
#   E... main.cc:245] "failed to start GRPC service: Unavailable - Socket '127.0.0.1:P' already in use "
_ADDRESS_IN_USE = re.compile(r"Socket '[^']*:(\d+)' already in use|Address already in use", re.IGNORECASE)


def _free_ports(n: int, exclude: Iterable[int] = ()) -> list[int]:
    ports: list[int] = []
    socks = []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((_LOOPBACK, 0))
            port = s.getsockname()[1]
            if port not in exclude and port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


class EmbeddedTriton:
    """A real tritonserver on loopback, serving ``model_repository`` (context manager).

    Ports 0 mean: pick free loopback ports (and retry with new ones, up to 3 times, if the server
    still finds one taken). ``env`` adds environment variables for the server and its
    Python-backend models. ``extra_args`` are appended to the tritonserver command line.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        *,
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        log_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 180.0,
    ) -> None:
        self._repository = pathlib.Path(model_repository).resolve()
        self._want_ports = {"grpc": int(grpc_port), "http": int(http_port), "metrics": int(metrics_port)}
        for name, port in self._want_ports.items():
            if not 0 <= port <= 65535:
                raise ValueError(f"{name}_port must be in 0..65535, got {port}")
        self._ports = dict(self._want_ports)
        self._log_path = pathlib.Path(log_path).resolve() if log_path is not None else None
        self._env = {str(k): str(v) for k, v in (env or {}).items()}
        self._extra_args = [str(a) for a in extra_args]
        self._startup_timeout = float(startup_timeout)
        self._proc: subprocess.Popen | None = None
        self._returncode: int | None = None
        self._command: list[str] = []
        self._lock = threading.Lock()  # guards _proc
        self._start_lock = threading.Lock()  # one start() at a time
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        self._startup_seconds: float | None = None

    # -- properties ------------------------------------------------------------------------

    @property
    def model_repository(self) -> pathlib.Path:
        return self._repository

    @property
    def grpc_port(self) -> int:
        return self._ports["grpc"]

    @property
    def http_port(self) -> int:
        return self._ports["http"]

    @property
    def metrics_port(self) -> int:
        return self._ports["metrics"]

    @property
    def grpc_address(self) -> str:
        """``127.0.0.1:PORT``, what ``tritonclient.grpc.InferenceServerClient(url=...)`` takes."""
        return f"{_LOOPBACK}:{self._ports['grpc']}"

    @property
    def http_address(self) -> str:
        """``127.0.0.1:PORT`` of the KServe v2 HTTP endpoint (tritonclient.http's ``url``)."""
        return f"{_LOOPBACK}:{self._ports['http']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_LOOPBACK}:{self._ports['metrics']}/metrics"

    @property
    def log_path(self) -> pathlib.Path | None:
        """Where tritonserver's stdout+stderr go (a temp file unless given; kept after stop)."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The tritonserver pid (also its process group id) while running, else None."""
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def command(self) -> list[str]:
        """The tritonserver command line of the last start."""
        return list(self._command)

    @property
    def startup_seconds(self) -> float | None:
        """How long the last successful start() took."""
        return self._startup_seconds

    @property
    def returncode(self) -> int | None:
        """tritonserver's exit status once it has exited (negative: killed by that signal)."""
        proc = self._proc
        return exit_status(proc) if proc is not None else self._returncode

    def is_running(self) -> bool:
        proc = self._proc
        return proc is not None and exit_status(proc) is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self._log_path, lines) if self._log_path is not None else ""

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedTriton:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid} grpc={self.grpc_address}" if self._proc is not None else "stopped"
        return f"<EmbeddedTriton {self._repository} {state}>"

    def start(self) -> EmbeddedTriton:
        """Start tritonserver and wait until it and every model of the repository are ready.

        Raises TritonStartError (message ends with the log tail) when the server exits, a model
        fails to load, or ``startup_timeout`` passes; the process group is stopped first.
        """
        with self._start_lock:
            if self.is_running():
                return self
            self.stop()  # reap a server that exited on its own
            if not self._repository.is_dir():
                raise TritonStartError(f"model repository {self._repository} is not a directory")
            server_dir = prepare_server_dir()
            check_numpy()
            if self._log_path is None:
                fd, name = tempfile.mkstemp(prefix="shadowgrpc-triton-", suffix=".log")
                os.close(fd)
                self._log_path = pathlib.Path(name)
            else:
                self._log_path.parent.mkdir(parents=True, exist_ok=True)
                self._log_path.write_bytes(b"")
            t0 = time.monotonic()
            attempts = _MAX_PORT_ATTEMPTS if 0 in self._want_ports.values() else 1
            for attempt in range(1, attempts + 1):
                self._pick_ports()
                try:
                    self._launch(server_dir)
                    self._wait_ready(t0 + self._startup_timeout)
                    break
                except BaseException as exc:
                    self.stop()
                    if not (
                        isinstance(exc, TritonStartError)
                        and attempt < attempts
                        and self._auto_port_taken(exc.log_tail + "\n" + exc.log_errors)
                    ):
                        raise
                    with open(self._log_path, "ab") as fh:
                        fh.write(f"--- shadowgrpc: port taken, retry {attempt + 1} with new ports ---\n".encode())
            self._startup_seconds = time.monotonic() - t0
            return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM tritonserver, wait up to ``timeout`` s, then SIGKILL its whole process group
        (Python-backend stubs included). Idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
        stop_at_exit(self, remember=False)
        if proc is not None:
            terminate(proc, timeout)
            self._returncode = proc.returncode

    # -- HTTP (KServe v2) ------------------------------------------------------------------

    def repository_index(self) -> list[dict[str, Any]]:
        """The repository index (``POST /v2/repository/index``): name, version, state, reason."""
        return list(self._v2_json("repository index", "/v2/repository/index", b"{}") or [])

    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``: name, version, extensions."""
        return dict(self._v2_json("server metadata", "/v2") or {})

    def _request(self, url: str, body: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
        """(status, body) of a GET (or, with ``body``, a JSON POST) to ``url``, never via a proxy."""
        req = urllib.request.Request(url, data=body, method="GET" if body is None else "POST")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()

    def _v2_json(self, what: str, path: str, body: bytes | None = None) -> Any:
        status, raw = self._request(f"http://{self.http_address}{path}", body)
        if status != 200:
            raise RuntimeError(f"{what}: HTTP {status}: {raw[:200]!r}")
        return json.loads(raw) if raw else None

    # -- start internals -------------------------------------------------------------------

    def _pick_ports(self) -> None:
        fixed = [p for p in self._want_ports.values() if p]
        free = iter(_free_ports(sum(1 for p in self._want_ports.values() if p == 0), exclude=fixed))
        self._ports = {name: (port or next(free)) for name, port in self._want_ports.items()}

    def _launch(self, server_dir: pathlib.Path) -> None:
        assert self._log_path is not None
        self._command = [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={self._repository}",
            f"--backend-directory={server_dir / 'backends'}",
            f"--cache-directory={server_dir / 'caches'}",
            "--model-control-mode=explicit",
            "--load-model=*",
            "--exit-on-error=true",
            "--strict-readiness=true",
        ]
        for name, port in self._ports.items():
            self._command += [f"--{name}-address={_LOOPBACK}", f"--{name}-port={port}"]
        if not has_nvidia_driver() and not any(a.startswith("--allow-gpu-metrics") for a in self._extra_args):
            # No GPU: skip NVML/DCGM probing (harmless errors in the log, ~0.5 s of startup).
            self._command.append("--allow-gpu-metrics=false")
        self._command.extend(self._extra_args)
        env = server_env(self._env)
        with open(self._log_path, "ab") as log:
            log.write(("$ " + " ".join(self._command) + "\n").encode())
            log.flush()
            proc = spawn(self._command, log=log, env=env, cwd=str(server_dir))
        with self._lock:
            self._proc = proc
        stop_at_exit(self)

    def _wait_ready(self, deadline: float) -> None:
        proc = self._proc
        if proc is None:
            raise start_error("tritonserver was stopped during start()", self._log_path)
        while True:
            code = exit_status(proc)
            if code is not None:
                raise start_error(f"tritonserver exited with code {code} before it was ready", self._log_path)
            if self._ready_now():
                return
            if time.monotonic() >= deadline:
                raise start_error(
                    f"tritonserver was not ready after {self._startup_timeout:.0f} s "
                    f"(model repository {self._repository})",
                    self._log_path,
                )
            time.sleep(_READY_POLL_S)

    def _ready_now(self) -> bool:
        if self._proc is None:  # stop() was called meanwhile
            return False
        try:
            status, _ = self._request(f"http://{self.http_address}/v2/health/ready", timeout=1.0)
            index = self.repository_index() if status == 200 else None
        except (OSError, RuntimeError, ValueError):  # URLError is an OSError
            return False
        if index is None:
            return False
        failed = [m for m in index if m.get("state") not in ("READY", "LOADING", None)]
        if failed:
            reasons = "; ".join(
                f"{m.get('name')} v{m.get('version', '?')}: {m.get('state')} {m.get('reason', '')}".strip()
                for m in failed
            )
            raise start_error(f"model(s) failed to load: {reasons}", self._log_path)
        if not all(m.get("state") == "READY" for m in index):
            return False
        # gRPC starts before HTTP (an HTTP answer implies gRPC is up); metrics start last, and a
        # taken metrics port makes tritonserver exit after HTTP is up: ask the metrics endpoint.
        try:
            status, body = self._request(self.metrics_url, timeout=1.0)
        except OSError:
            return False
        return status == 200 and b"nv_" in body

    def _auto_port_taken(self, log_text: str) -> bool:
        """True when the server failed on a taken port that we picked (not one the caller fixed)."""
        auto = {self._ports[name] for name, want in self._want_ports.items() if want == 0}
        matches = list(_ADDRESS_IN_USE.finditer(log_text))
        taken = {int(m.group(1)) for m in matches if m.group(1)}
        if taken:
            return bool(taken & auto)
        return bool(matches) and bool(auto)
