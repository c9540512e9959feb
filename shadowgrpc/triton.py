"""The embedded Triton: a real ``tritonserver`` (2.51, CPU, Python backend) started from the
``nvidia-pytriton`` wheel (the ``local`` extra), for demos, tests and benchmarks.

Nothing else in shadowgrpc depends on this module: in production the service talks to the user's
own Triton (GPU, any backend) over gRPC.

How the server is started
-------------------------
* The wheel's ``pytriton/tritonserver`` directory (binary, Python backend, local cache) is copied
  once into a cache directory (``$XDG_CACHE_HOME/shadowgrpc/tritonserver-<pytriton>-py<X.Y>``,
  else ``~/.cache/...``, else the temp dir) with the Python backend stub matching the running
  interpreter added as ``backends/python/triton_python_backend_stub``. The copy is built in a temp
  dir and renamed into place, so concurrent first starts are safe; site-packages is never modified.
* ``LD_LIBRARY_PATH`` gets the wheel's bundled libraries (``nvidia_pytriton.libs``) and the
  running interpreter's ``libpython``; ``PATH`` starts with the directory of ``sys.executable`` so
  that the Python-backend models run in this environment (which must have ``numpy<2``: with
  numpy 2 a Python-backend model returned empty outputs without any error).
* Model control mode is ``explicit`` with ``--load-model=*``: every model of the repository is
  loaded at start, and the ``RepositoryModelLoad`` / ``RepositoryModelUnload`` RPCs work (in the
  default ``none`` mode they are refused).
* gRPC, HTTP and metrics listen on 127.0.0.1 only, on free ports unless given.
* The server runs in its own session / process group (Python-backend stub processes are its
  children), with ``PR_SET_PDEATHSIG=SIGKILL`` so that it dies with its parent (even one killed
  with SIGKILL); ``stop()`` sends SIGTERM, waits, then SIGKILLs the whole group; running servers
  are stopped at interpreter exit. The stubs exit on their own ~0.3 s after tritonserver is gone
  (they poll ``kill(ppid, 0)``), which needs the dead server to be reaped: by its parent (stop()),
  or by init once the parent is dead (in a container, run an init that reaps, e.g. ``--init``).

Environment
-----------
* read: ``XDG_CACHE_HOME`` (where the tritonserver copy goes).
* given to tritonserver and its models: this process's environment, plus ``env=``, plus
  ``PATH`` (``sys.executable``'s directory first) and ``LD_LIBRARY_PATH`` (libpython and the
  wheel's libraries first). The backend stub embeds Python with an *isolated* config, so
  ``PYTHON*`` variables do not reach the models (the stub writes ``__pycache__`` next to each
  ``model.py`` whatever ``PYTHONDONTWRITEBYTECODE`` says); plain variables do.
* the example models read ``SHADOWGRPC_PREFERENCE_CACHE`` (merchant_intent's side-effect file);
  the test models read ``SHADOWGRPC_RECORDER_PATH`` and ``SHADOWGRPC_SLEEPY_SECONDS``: pass them
  with ``env=`` (or ``shadowgrpc triton --env KEY=VALUE``).

Good to know: startup takes ~2 s for one Python-backend model and ~6-8 s for the example
repository plus the test models on 2 CPU cores (one stub process per model instance, each
importing numpy); a graceful stop takes 2-4 s (tritonserver polls its model unloads once per
second). On a host without an NVIDIA driver the log has harmless CUDA warnings ("Unable to
allocate pinned system memory", "CudaDriverHelper has not been initialized").

Use::

    from shadowgrpc.triton import EmbeddedTriton, example_repository

    with EmbeddedTriton(example_repository()) as triton:
        client = tritonclient.grpc.InferenceServerClient(triton.grpc_address)
        ...

or from the command line: ``shadowgrpc triton --model-repository DIR``.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import contextlib
import ctypes
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "EmbeddedTriton",
    "TritonNotInstalledError",
    "TritonStartError",
    "add_triton_parser",
    "example_repository",
    "prepare_server_dir",
]

_LOOPBACK = "127.0.0.1"
_LOG_TAIL_LINES = 60
_READY_POLL_S = 0.1
_MAX_PORT_ATTEMPTS = 3
# What tritonserver 2.51 prints when a port is taken (gRPC, HTTP and metrics alike):
#   E... main.cc:245] "failed to start GRPC service: Unavailable - Socket '127.0.0.1:P' already in use "
_ADDRESS_IN_USE = re.compile(r"Socket '[^']*:(\d+)' already in use|Address already in use", re.IGNORECASE)
_STATE_FILE = ".shadowgrpc-complete"
# Errors tritonserver logs on hosts without a GPU / NVIDIA driver; they change nothing.
_HARMLESS_ERRORS = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML")
_PR_SET_PDEATHSIG = 1


class TritonStartError(RuntimeError):
    """tritonserver did not become ready (exited, timed out, or a model failed to load).

    The message ends with the tail of the server log; ``log_path`` and ``log_tail`` hold them too.
    """

    def __init__(
        self, message: str, *, log_path: pathlib.Path | None = None, log_tail: str = "", log_errors: str = ""
    ) -> None:
        text = message
        if log_path is not None:
            text += f"\n(log: {log_path})"
        if log_errors:
            text += f"\n--- errors in the tritonserver log ---\n{log_errors.rstrip()}"
        if log_tail:
            text += f"\n--- last lines of the tritonserver log ---\n{log_tail.rstrip()}\n---"
        super().__init__(text)
        self.log_path = log_path
        self.log_tail = log_tail
        self.log_errors = log_errors


class TritonNotInstalledError(TritonStartError):
    """nvidia-pytriton (the ``local`` extra), which ships tritonserver, is not installed."""


def example_repository() -> pathlib.Path:
    """The example model repository shipped in the package (fraud, basket_value, merchant_intent)."""
    return pathlib.Path(__file__).resolve().parent / "examples" / "model_repository"


# --------------------------------------------------------------------------------------------
# The tritonserver distribution (binary + backends) from the nvidia-pytriton wheel
# --------------------------------------------------------------------------------------------


def _pytriton_root() -> pathlib.Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalledError(
            "nvidia-pytriton is not installed: it ships the tritonserver binary that the embedded "
            "Triton runs. Install the 'local' extra: pip install 'shadowgrpc[local]' "
            "(nvidia-pytriton==0.7.0, numpy<2)."
        )
    return pathlib.Path(next(iter(spec.submodule_search_locations))).resolve()


def _libs_path() -> pathlib.Path:
    try:
        from pytriton.utils.distribution import get_libs_path

        return pathlib.Path(get_libs_path())
    except Exception:  # pragma: no cover - fallback if pytriton's layout changes
        return _pytriton_root().parent / "nvidia_pytriton.libs"


def _pytriton_version() -> str:
    try:
        return importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - editable/odd installs
        return "unknown"


def _cache_root() -> pathlib.Path:
    candidates = []
    if os.environ.get("XDG_CACHE_HOME"):
        candidates.append(pathlib.Path(os.environ["XDG_CACHE_HOME"]) / "shadowgrpc")
    with contextlib.suppress(RuntimeError):
        candidates.append(pathlib.Path.home() / ".cache" / "shadowgrpc")
    candidates.append(pathlib.Path(tempfile.gettempdir()) / f"shadowgrpc-{os.getuid()}")
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    raise OSError(f"no writable cache directory among {[str(c) for c in candidates]}")


def prepare_server_dir() -> pathlib.Path:
    """Return a ready tritonserver directory (``bin/``, ``backends/``, ``caches/``) for this Python.

    Built once per (nvidia-pytriton version, Python major.minor) by copying the wheel's
    ``pytriton/tritonserver`` and adding the matching Python backend stub; built in a temp dir and
    renamed into place, so concurrent callers never see a half-built directory.
    """
    root = _pytriton_root()
    src = root / "tritonserver"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not (src / "bin" / "tritonserver").is_file():
        raise TritonNotInstalledError(f"no tritonserver binary in {src} (nvidia-pytriton install is incomplete)")
    if not stub.is_file():
        raise TritonNotInstalledError(
            f"nvidia-pytriton {_pytriton_version()} has no Python backend stub for Python {py} ({stub})"
        )
    cache = _cache_root()
    target = cache / f"tritonserver-{_pytriton_version()}-py{py}"
    if (target / _STATE_FILE).is_file():
        return target

    for stale in cache.glob(".tritonserver-build-*"):  # left by a process killed mid-copy
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".tritonserver-build-", dir=cache))
    try:
        shutil.copytree(
            src,
            tmp,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"),
        )
        dst_stub = tmp / "backends" / "python" / "triton_python_backend_stub"
        shutil.copy2(stub, dst_stub)
        dst_stub.chmod(0o755)
        (tmp / "bin" / "tritonserver").chmod(0o755)
        (tmp / _STATE_FILE).write_text(
            json.dumps({"source": str(src), "pytriton": _pytriton_version(), "python": py}) + "\n"
        )
        for _ in range(2):
            try:
                os.rename(tmp, target)
                return target
            except OSError:
                if (target / _STATE_FILE).is_file():  # another process won the race
                    return target
                if target.exists():  # a stale, incomplete directory: move it aside, retry once
                    with contextlib.suppress(OSError):
                        os.rename(target, cache / f".stale-{target.name}-{os.getpid()}-{time.time_ns()}")
                    continue
                raise
        raise OSError(f"could not install the tritonserver directory at {target}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Process handling: no orphan, ever
# --------------------------------------------------------------------------------------------


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()


def _make_preexec(parent_pid: int) -> Any:
    if _PRCTL is None:
        return None
    prctl = _PRCTL
    sigkill = int(signal.SIGKILL)

    def _child() -> None:  # runs in the child between fork and exec: keep it minimal
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return _child


_spawner_lock = threading.Lock()
_spawner_queue: queue.SimpleQueue | None = None


def _spawner_loop(q: queue.SimpleQueue) -> None:
    while True:
        future, args, kwargs = q.get()
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(subprocess.Popen(args, **kwargs))
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)


def _popen(args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """Popen from a thread that lives as long as the process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a server
    started from a short-lived worker thread would be killed with it. Starts from the main thread
    fork directly; others are handed to one daemon spawner thread.
    """
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(args, **kwargs)
    global _spawner_queue
    with _spawner_lock:
        if _spawner_queue is None:
            _spawner_queue = queue.SimpleQueue()
            threading.Thread(
                target=_spawner_loop, args=(_spawner_queue,), name="shadowgrpc-triton-spawner", daemon=True
            ).start()
        q = _spawner_queue
    future: concurrent.futures.Future = concurrent.futures.Future()
    q.put((future, list(args), kwargs))
    return future.result()


def _exit_status(proc: subprocess.Popen) -> int | None:
    """``proc``'s exit status if it has exited (negative: killed by that signal), else None.

    Never reaps: the server's pid is also its process group id, and an unreaped leader keeps that
    id from being reused until stop() has killed the group. Only _terminate() reaps.
    """
    if proc.returncode is not None:
        return proc.returncode
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped by someone else
        return proc.poll()
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _wait_exit_noreap(pid: int, timeout: float) -> bool:
    """Wait until child ``pid`` has exited, without reaping it (so its pid, which is also the
    process group id, cannot be reused before the group is killed)."""
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


_TRITON_COMMS = (b"tritonserver", b"triton_python_b")  # /proc/PID/comm is cut at 15 characters


def _group_members(pgid: int, comms: Sequence[bytes] | None = None) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid`` (optionally only those named
    ``comms``), from /proc."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # pragma: no cover - not Linux
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        alive = len(fields) > 2 and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid
        if alive and (comms is None or stat[stat.find(b"(") + 1 : stat.rfind(b")")] in comms):
            members.append(int(entry))
    return members


def _terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the server, wait up to ``timeout``, SIGKILL its process group, reap it."""
    pid = proc.pid
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        _wait_exit_noreap(pid, timeout)
        # The leader is alive or an unreaped zombie: the group id cannot have been reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be ignored
            proc.wait(timeout=10)
    # Stragglers (stubs of a server that died on its own and was already reaped): only Triton's
    # own processes, one by one, since the group id is no longer guaranteed to be ours.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        members = _group_members(pid, _TRITON_COMMS)
        if not members:
            break
        for member in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signal.SIGKILL)
        time.sleep(0.05)


_RUNNING: set[EmbeddedTriton] = set()
_RUNNING_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _RUNNING_LOCK:
        servers = list(_RUNNING)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout=10)


atexit.register(_stop_all_at_exit)


# --------------------------------------------------------------------------------------------
# EmbeddedTriton
# --------------------------------------------------------------------------------------------


def _has_nvidia_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia/version")


def _check_numpy() -> None:
    try:
        major = int(importlib.metadata.version("numpy").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return
    if major >= 2:
        warnings.warn(
            "numpy >= 2 is installed in the environment that the embedded Triton's Python-backend "
            "models run in: with numpy 2 the backend stub of nvidia-pytriton 0.7.0 was seen to return "
            "empty outputs without any error. Install numpy<2 (the 'local' extra pins it).",
            RuntimeWarning,
            stacklevel=3,
        )


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


def _tail(path: pathlib.Path, lines: int = _LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def _log_errors(path: pathlib.Path, max_lines: int = 30, max_bytes: int = 4 * 1024 * 1024) -> str:
    """Error lines of a tritonserver log: ``E...`` records, ``error:`` lines, and the rows of the
    model status table that are not READY (with the first line of their reason)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    found: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if re.match(r"^E\d{4} ", stripped) or stripped.lower().startswith("error:"):
            if any(harmless in stripped for harmless in _HARMLESS_ERRORS):
                continue
            found.append(stripped)
        elif stripped.startswith("|") and "UNAVAILABLE" in stripped:
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            found.append("model " + " ".join(c for c in cells if c))
    return "\n".join(found[-max_lines:])


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
        if proc is not None:
            return _exit_status(proc)
        return self._returncode

    def is_running(self) -> bool:
        proc = self._proc
        return proc is not None and _exit_status(proc) is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return _tail(self._log_path, lines) if self._log_path is not None else ""

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
            _check_numpy()
            if self._log_path is None:
                fd, name = tempfile.mkstemp(prefix="shadowgrpc-triton-", suffix=".log")
                os.close(fd)
                self._log_path = pathlib.Path(name)
            else:
                self._log_path.parent.mkdir(parents=True, exist_ok=True)
                self._log_path.write_bytes(b"")
            t0 = time.monotonic()
            auto_ports = any(port == 0 for port in self._want_ports.values())
            attempts = _MAX_PORT_ATTEMPTS if auto_ports else 1
            for attempt in range(1, attempts + 1):
                self._pick_ports()
                try:
                    self._launch(server_dir)
                    self._wait_ready(t0 + self._startup_timeout)
                except TritonStartError as exc:
                    self.stop()
                    if attempt < attempts and self._auto_port_taken(exc.log_tail + "\n" + exc.log_errors):
                        with open(self._log_path, "ab") as fh:
                            fh.write(f"--- shadowgrpc: port taken, retry {attempt + 1} with new ports ---\n".encode())
                        continue
                    raise
                except BaseException:
                    self.stop()
                    raise
                self._startup_seconds = time.monotonic() - t0
                return self
            raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM tritonserver, wait up to ``timeout`` s, then SIGKILL its whole process group
        (Python-backend stubs included). Idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
        with _RUNNING_LOCK:
            _RUNNING.discard(self)
        if proc is not None:
            _terminate(proc, timeout)
            self._returncode = proc.returncode

    # -- internals -------------------------------------------------------------------------

    def _pick_ports(self) -> None:
        fixed = [p for p in self._want_ports.values() if p]
        free = iter(_free_ports(sum(1 for p in self._want_ports.values() if p == 0), exclude=fixed))
        self._ports = {name: (port or next(free)) for name, port in self._want_ports.items()}

    def _build_env(self, server_dir: pathlib.Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self._env)
        lib_dirs = [str(_libs_path())]
        libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
        if libdir and soname and (pathlib.Path(libdir) / soname).exists():
            lib_dirs.insert(0, libdir)  # the stub links the running Python's libpython first
        if env.get("LD_LIBRARY_PATH"):
            lib_dirs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs)
        # Python-backend models run the first `python3` environment on PATH: this one (numpy<2).
        bin_dir = os.path.dirname(os.path.abspath(sys.executable))
        env["PATH"] = os.pathsep.join([bin_dir] + [p for p in env.get("PATH", "").split(os.pathsep) if p])
        env.pop("PYTHONHOME", None)
        return env

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
            f"--grpc-address={_LOOPBACK}",
            f"--grpc-port={self._ports['grpc']}",
            f"--http-address={_LOOPBACK}",
            f"--http-port={self._ports['http']}",
            f"--metrics-address={_LOOPBACK}",
            f"--metrics-port={self._ports['metrics']}",
        ]
        if not _has_nvidia_driver() and not any(a.startswith("--allow-gpu-metrics") for a in self._extra_args):
            # No GPU: skip NVML/DCGM probing (harmless errors in the log, ~0.5 s of startup).
            self._command.append("--allow-gpu-metrics=false")
        self._command.extend(self._extra_args)
        env = self._build_env(server_dir)
        with open(self._log_path, "ab") as log:
            log.write(("$ " + " ".join(self._command) + "\n").encode())
            log.flush()
            proc = _popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(server_dir),
                start_new_session=True,
                preexec_fn=_make_preexec(os.getpid()),
                close_fds=True,
            )
        with self._lock:
            self._proc = proc
        with _RUNNING_LOCK:
            _RUNNING.add(self)

    def _http(self, method: str, path: str, body: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://{self.http_address}{path}", data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()

    def repository_index(self) -> list[dict[str, Any]]:
        """The repository index (``POST /v2/repository/index``): name, version, state, reason."""
        status, body = self._http("POST", "/v2/repository/index", b"{}")
        if status != 200:
            raise RuntimeError(f"repository index: HTTP {status}: {body[:200]!r}")
        return list(json.loads(body or b"[]"))

    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``: name, version, extensions."""
        status, body = self._http("GET", "/v2")
        if status != 200:
            raise RuntimeError(f"server metadata: HTTP {status}: {body[:200]!r}")
        return dict(json.loads(body))

    def _fail(self, message: str) -> TritonStartError:
        time.sleep(0.1)  # let the last lines reach the log
        errors = _log_errors(self._log_path) if self._log_path is not None else ""
        return TritonStartError(message, log_path=self._log_path, log_tail=self.log_tail(), log_errors=errors)

    def _wait_ready(self, deadline: float) -> None:
        proc = self._proc
        if proc is None:
            raise self._fail("tritonserver was stopped during start()")
        while True:
            code = _exit_status(proc)
            if code is not None:
                raise self._fail(f"tritonserver exited with code {code} before it was ready")
            if self._ready_now():
                return
            if time.monotonic() >= deadline:
                raise self._fail(
                    f"tritonserver was not ready after {self._startup_timeout:.0f} s "
                    f"(model repository {self._repository})"
                )
            time.sleep(_READY_POLL_S)

    def _ready_now(self) -> bool:
        if self._proc is None:  # stop() was called meanwhile
            return False
        try:
            status, _ = self._http("GET", "/v2/health/ready", timeout=1.0)
        except (OSError, urllib.error.URLError):
            return False
        if status != 200:
            return False
        try:
            index = self.repository_index()
        except (OSError, RuntimeError, ValueError):
            return False
        failed = [m for m in index if m.get("state") not in ("READY", "LOADING", None)]
        if failed:
            reasons = "; ".join(
                f"{m.get('name')} v{m.get('version', '?')}: {m.get('state')} {m.get('reason', '')}".strip()
                for m in failed
            )
            raise self._fail(f"model(s) failed to load: {reasons}")
        if not all(m.get("state") == "READY" for m in index):
            return False
        # gRPC starts before HTTP (an HTTP answer implies gRPC is up); metrics start last, and a
        # taken metrics port makes tritonserver exit after HTTP is up: ask the metrics endpoint.
        try:
            req = urllib.request.Request(self.metrics_url, method="GET")
            with self._opener.open(req, timeout=1.0) as resp:
                return resp.status == 200 and b"nv_" in resp.read()
        except (OSError, urllib.error.URLError):
            return False

    def _auto_port_taken(self, log_text: str) -> bool:
        """True when the server failed on a taken port that we picked (not one the caller fixed)."""
        auto = {self._ports[name] for name, want in self._want_ports.items() if want == 0}
        matches = list(_ADDRESS_IN_USE.finditer(log_text))
        taken = {int(m.group(1)) for m in matches if m.group(1)}
        if taken:
            return bool(taken & auto)
        return bool(matches) and bool(auto)


# --------------------------------------------------------------------------------------------
# CLI: shadowgrpc triton
# --------------------------------------------------------------------------------------------


def _parse_env(items: Sequence[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--env expects KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535 (0 = pick a free one), got {value}")
    return value


def _models_summary(index: list[dict[str, Any]]) -> str:
    versions: dict[str, list[str]] = {}
    for entry in index:
        versions.setdefault(str(entry.get("name")), []).append(str(entry.get("version", "?")))
    return ", ".join(f"{name} ({', '.join(sorted(v))})" for name, v in sorted(versions.items()))


def _run_triton(args: argparse.Namespace) -> int:
    try:
        env = _parse_env(args.env or [])
    except argparse.ArgumentTypeError as exc:
        print(f"shadowgrpc triton: {exc}", file=sys.stderr)
        return 2
    server = EmbeddedTriton(
        args.model_repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_path=args.log_file,
        env=env,
        startup_timeout=args.startup_timeout,
    )
    print(f"starting tritonserver on {args.model_repository} ...", file=sys.stderr, flush=True)
    try:
        server.start()
    except TritonStartError as exc:
        print(f"shadowgrpc triton: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        server.stop()
        return 130

    stop = threading.Event()
    received: list[int] = []

    def _on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        try:
            models = _models_summary(server.repository_index())
            version = server.server_metadata().get("version", "?")
        except (OSError, RuntimeError, ValueError):
            models, version = "?", "?"
        print(
            f"tritonserver {version} ready in {server.startup_seconds or 0:.1f} s (pid {server.pid})\n"
            f"  model repository: {server.model_repository}\n"
            f"  models:           {models}\n"
            f"  gRPC:             {server.grpc_address}\n"
            f"  HTTP:             http://{server.http_address}\n"
            f"  metrics:          {server.metrics_url}\n"
            f"  log:              {server.log_path}\n"
            "Ctrl-C (SIGINT) or SIGTERM stops it.",
            flush=True,
        )
        while not stop.wait(0.5):
            if not server.is_running():
                print(
                    f"shadowgrpc triton: tritonserver exited unexpectedly (status {server.returncode}); "
                    f"log: {server.log_path}\n"
                    f"{server.log_tail(20)}",
                    file=sys.stderr,
                )
                return 1
        print("stopping tritonserver ...", file=sys.stderr, flush=True)
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_triton_parser(subparsers: Any) -> None:
    """Register ``shadowgrpc triton`` on an argparse subparsers object (``func=`` is set)."""
    parser = subparsers.add_parser(
        "triton",
        help="run an embedded tritonserver (CPU, Python backend) on loopback",
        description=(
            "Run a real tritonserver 2.51 (shipped in the nvidia-pytriton wheel: install the "
            "'local' extra) on 127.0.0.1, serving a model repository. Every model is loaded at "
            "start (model control mode 'explicit' with --load-model=*, so the repository "
            "load/unload RPCs work). Prints the gRPC/HTTP/metrics addresses and the log path, then "
            "runs until SIGINT (Ctrl-C) or SIGTERM. Without --model-repository it serves the "
            "shipped example repository: fraud (versions 1 and 2), basket_value, merchant_intent."
        ),
    )
    parser.add_argument(
        "--model-repository",
        type=pathlib.Path,
        default=example_repository(),
        metavar="DIR",
        help="Triton model repository to serve (default: the shipped example repository, %(default)s)",
    )
    parser.add_argument(
        "--grpc-port", type=_port, default=0, metavar="P", help="gRPC port (default 0: pick a free one)"
    )
    parser.add_argument(
        "--http-port", type=_port, default=0, metavar="P", help="HTTP port (default 0: pick a free one)"
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=0,
        metavar="P",
        help="Prometheus metrics port (default 0: pick a free one)",
    )
    parser.add_argument(
        "--log-file",
        type=pathlib.Path,
        default=None,
        metavar="F",
        help="write tritonserver's output (stdout and stderr) here (default: a new temp file, printed at start)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment variable for the server and its Python-backend models, e.g. "
        "SHADOWGRPC_PREFERENCE_CACHE=/tmp/prefs.jsonl (repeatable)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=180.0,
        metavar="S",
        help="seconds to wait for the server and all models to be ready (default: %(default)s)",
    )
    parser.set_defaults(func=_run_triton)
