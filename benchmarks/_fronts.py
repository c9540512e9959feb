"""front_overhead.py, part 1: what it starts and reads: /proc readings, the model repository, each
scenario's front config and the front process (``python -m shadowgrpc serve``)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pathlib
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_MODELS = REPO_ROOT / "tests" / "models"
SLEEPY_SECONDS = 2.0
DEADLINE_S = 1.0
CONCURRENCY = 8
FRONT_SCENARIOS = ("shadow-off", "one-shadow", "shadow-down", "shadow-slow")  # run once per data plane
NGINX_SCENARIOS = ("nginx-pass", "nginx-mirror")  # benchmarks/_nginx.py
BASE_SCENARIOS = ("direct", *FRONT_SCENARIOS, *NGINX_SCENARIOS)
DATA_PLANES = ("grpcio", "nghttp2")  # [server] data_plane values a row can ask for ("auto" is the default)
# Tracing scenarios: sampler ratio (None: tracing off) on the --trace-base front config.
TRACE_SCENARIOS = {"trace-off": None, "trace-1": 1.0, "trace-0.01": 0.01, "trace-caller": 0.01}
SCENARIOS = BASE_SCENARIOS + tuple(TRACE_SCENARIOS)
SOAK_STATES = ("shadow-down", "shadow-slow")
CLK_TCK = os.sysconf("SC_CLK_TCK")

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_json(path: str, result: dict) -> None:
    """A benchmark's figures as JSON at ``path`` (folders made), and where they went."""
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=2, default=str))
    print(f"JSON: {p}")


# -------------------------------------------------------------------------------------------
# /proc readings
# -------------------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def group_cpu_s(pgid: int) -> float:
    """utime + stime summed over the live processes of process group ``pgid`` (Triton and its
    Python-backend stubs)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 12 and int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def proc_mem_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MB (MiB)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024.0  # kB -> MiB
    return out


# -------------------------------------------------------------------------------------------
# Triton and the front
# -------------------------------------------------------------------------------------------


def build_repository(dst: pathlib.Path) -> pathlib.Path:
    from shadowgrpc.local import example_repository

    dst.mkdir(parents=True, exist_ok=True)
    for source in (example_repository(), TEST_MODELS):
        for model in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            shutil.copytree(model, dst / model.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def closed_port() -> tuple[socket.socket, int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), never listening."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def data_plane_support() -> tuple[bool, bool]:
    """(the front's config knows ``[server] data_plane``, the compiled plane ``shadowgrpc._h2_c`` imports)."""
    from shadowgrpc.config import ConfigError, Settings

    try:
        Settings.from_dict({"server": {"data_plane": "grpcio"}})
        key = True
    except ConfigError:
        key = False
    try:
        importlib.import_module("shadowgrpc._h2_c")
        compiled = True
    except ImportError:
        compiled = False
    return key, compiled


def row_label(base: str, plane: str | None) -> str:
    """A table row: ``shadow-off[nghttp2]`` for a front on a chosen data plane, else the scenario."""
    return f"{base}[{plane}]" if plane else base


def split_label(label: str) -> tuple[str, str | None]:
    base, _, plane = label.partition("[")
    return base, (plane.rstrip("]") or None)


def plan_rows(args: argparse.Namespace, error) -> None:
    """``args.rows``: the table's rows in run order (each front scenario once per data plane of
    ``--data-plane``), ``args.plane_labels`` (None: rows without a plane suffix, when the front has no
    ``data_plane`` key), ``args.skipped`` (nginx rows without nginx). ``error``: the parser's."""
    key, compiled = data_plane_support()
    planes = [x.strip() for x in (args.data_plane or ("grpcio,nghttp2" if key and compiled else "grpcio")).split(",") if x.strip()]
    for pl in planes:
        if pl not in DATA_PLANES:
            error(f"--data-plane: unknown data plane {pl!r} (expected: {', '.join(DATA_PLANES)})")
        if pl != "grpcio" and not key:
            error(f"--data-plane {pl}: this front's config has no [server] data_plane key (only grpcio can run)")
        if pl == "nghttp2" and not compiled:
            error("--data-plane nghttp2: the compiled data plane shadowgrpc._h2_c does not import (run `make build`)")
    args.data_planes = planes
    args.plane_labels = list(dict.fromkeys(planes)) if key else [None]
    args.rows = [row_label(sc, pl) for sc in args.scenario_list for pl in (args.plane_labels if sc in FRONT_SCENARIOS else [None])]
    args.nginx = args.nginx or None  # --nginx "": run without the nginx rows
    args.skipped = [r for r in args.rows if r in NGINX_SCENARIOS] if args.nginx is None else []
    args.rows = [r for r in args.rows if r not in args.skipped]


def front_config(scenario: str, triton: str, down_port: int, data_plane: str | None = None) -> str:
    plane = f'data_plane = "{data_plane}"\n' if data_plane and data_plane != "auto" else ""  # only when asked: older fronts lack the key
    head = f"""[server]
{plane}listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
default_live = "{triton}"
grace_s = 5.0

[[routes]]
model = "fraud"
live = {{ version = "1" }}
"""
    shadow = {
        "shadow-off": None,
        "one-shadow": ("fraud-v2", "fraud", "2", None),
        "shadow-down": ("fraud-v2-down", "fraud", "2", f"127.0.0.1:{down_port}"),
        "shadow-slow": ("fraud-sleepy", "fraud_sleepy", "1", None),
    }[scenario]
    if shadow is None:
        return head
    name, model, version, address = shadow
    text = head + f"""
[[routes.shadows]]
name = "{name}"
model = "{model}"
version = "{version}"
sample_rate = 1.0
"""
    if address:
        text += f'address = "{address}"\n'
    return text


class LoopbackProcess:
    """A server the benchmark runs as a child process on a loopback port: ``proc``, ``port`` and
    ``log_path`` are set by the subclass."""

    proc: subprocess.Popen | None = None
    port = 0
    log_path: pathlib.Path

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class FrontProcess(LoopbackProcess):
    """``python -m shadowgrpc serve`` as a child process, on loopback, free ports."""

    def __init__(self, scenario: str, workdir: pathlib.Path, config_text: str, loop: str, tag: str) -> None:
        self.scenario = scenario
        self.config_path = workdir / f"front-{tag}.toml"
        self.ready_path = workdir / f"front-{tag}.ready"
        self.log_path = workdir / f"front-{tag}.log"
        self.config_path.write_text(config_text)
        self.loop = loop
        self.proc: subprocess.Popen | None = None
        self.port = self.admin_port = 0

    def start(self, timeout: float = 60.0, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> FrontProcess:
        with contextlib.suppress(FileNotFoundError):
            self.ready_path.unlink()
        cmd = [sys.executable, "-m", "shadowgrpc", "--log-level", "WARNING", "serve", "--config", str(self.config_path),
               "--ready-file", str(self.ready_path), "--loop", self.loop, *extra_args]
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT),
                                         env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"front ({self.scenario}) exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
            with contextlib.suppress(FileNotFoundError):
                text = self.ready_path.read_text()
                if text.endswith("\n"):
                    self.port, self.admin_port = (int(x) for x in text.split())
                    return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"front ({self.scenario}) not ready after {timeout:.0f} s:\n{self.log_tail()}")

    @property
    def admin_address(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def report(self) -> dict[str, Any] | None:
        try:
            from shadowgrpc.client import fetch_report
            from shadowgrpc.report_text import report_json

            return json.loads(report_json(fetch_report(self.admin_address, "", 5.0)))
        except Exception as e:  # noqa: BLE001 - the report is evidence, not a requirement
            return {"error": f"{type(e).__name__}: {e}"}

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM, wait; returns {exit_code, stop_s, killed}."""
        assert self.proc is not None
        t0 = time.monotonic()
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                self.proc.kill()
                self.proc.wait(10)
        return {"exit_code": self.proc.returncode, "stop_s": time.monotonic() - t0, "killed": killed}

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def log_problems(text: str) -> list[str]:
    keys = ("Traceback", "ERROR", "Exception", "CRITICAL")
    return [line for line in text.splitlines() if any(k in line for k in keys)][:20]


def otlp_receiver():
    """The OTLP collector of the tracing scenarios: tests/otlp.py's real receiver, counting only."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))
    from tests.otlp import OtlpReceiver

    return OtlpReceiver(keep_spans=False)


def machine_info(args: argparse.Namespace, triton) -> dict[str, Any]:
    import grpc

    import shadowgrpc
    from shadowgrpc import packing

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "shadowgrpc": getattr(shadowgrpc, "__version__", "?"),
        "packing": packing.IMPLEMENTATION,
        "front_loop": args.loop,
        "client_loop": "asyncio",
        "loadavg_start": os.getloadavg(),
    }
    with contextlib.suppress(Exception):
        import uvloop

        info["uvloop"] = uvloop.__version__
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(Exception):
        info["triton"] = triton.server_metadata().get("version")
    return info


def triton_model_stats(address: str) -> dict[str, Any]:
    try:
        import tritonclient.grpc as tc

        with tc.InferenceServerClient(address) as c:
            stats = c.get_inference_statistics(as_json=True)
        out = {}
        for m in stats.get("model_stats", []):
            inf = m.get("inference_stats", {})
            out[f"{m['name']}:{m['version']}"] = {
                "inference_count": int(m.get("inference_count", 0)),
                "success": int(inf.get("success", {}).get("count", 0)),
                "fail": int(inf.get("fail", {}).get("count", 0)),
                "cancel": int(inf.get("cancel", {}).get("count", 0)),
            }
        return out
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}

