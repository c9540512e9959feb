"""Processes for the fault tests (tests/triton/test_faults.py) and benchmarks/faults.py: fronts as
``shadowgrpc serve`` processes started side by side (their output drained, never blocking), a
``[[routes]]`` TOML writer, and a tritonserver that can be SIGKILLed and restarted on its ports."""

from __future__ import annotations

import collections
import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any


# -------------------------------------------------------------------------------------------
# fronts as processes (``shadowgrpc serve``), started side by side
# -------------------------------------------------------------------------------------------


class ServedFront:
    """One ``shadowgrpc serve`` process; its output is drained by a thread (the last 400 lines kept),
    so a front that logs a lot never blocks on its pipe."""

    def __init__(self, workdir: pathlib.Path, name: str, live: str, body: str, env: Mapping[str, str] | None, wrap, grace_s: float,
                 server: str = "") -> None:
        cfg = workdir / f"{name}.toml"
        cfg.write_text(f'[server]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\ndefault_live = "{live}"\ngrace_s = {grace_s}\n' + server + body)
        self.name = name
        self.ready = workdir / f"{name}.ready"
        self.ready.unlink(missing_ok=True)
        cmd = [*(wrap or (sys.executable,)), "-m", "shadowgrpc", "--log-level", "WARNING", "serve", "--config", str(cfg), "--ready-file", str(self.ready)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self.lines: collections.deque[str] = collections.deque(maxlen=400)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.port = self.admin_port = 0
        self._terminated = False

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, deadline: float) -> None:
        while not self.ready.exists() or not self.ready.read_text().endswith("\n"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"front {self.name} did not start: {self.output()[-3000:]}")
            time.sleep(0.05)
        self.port, self.admin_port = map(int, self.ready.read_text().split())

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin_address(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def report(self, model: str = ""):
        from shadowgrpc.client import fetch_report

        return fetch_report(self.admin_address, model, 5.0)

    def terminate(self) -> None:
        """One SIGTERM (a second one would end the front at once)."""
        if not self._terminated and self.proc.poll() is None:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait; the exit code (the process is killed past ``timeout``)."""
        self.terminate()
        try:
            self.proc.wait(timeout)
        except Exception:
            self.kill()
            raise
        self._close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        self._reader.join(5)
        if not self._reader.is_alive():
            self.proc.stdout.close()


def serve_fronts(workdir: pathlib.Path, live: str, specs: Mapping[str, Mapping[str, Any]], start_s: float = 60.0,
                 grace_s: float = 2.0) -> dict[str, ServedFront]:
    """Start one front per ``specs`` entry (name -> {"body": TOML after [server], "server": more
    [server] keys, "env": extra environment, "wrap": serveproc.FULL_DISK or ()}) side by side, and wait until
    every one serves."""
    fronts = {name: ServedFront(workdir, name, live, sp["body"], sp.get("env"), sp.get("wrap"), grace_s, sp.get("server", ""))
              for name, sp in specs.items()}
    deadline = time.monotonic() + start_s
    try:
        for f in fronts.values():
            f.wait_ready(deadline)
    except BaseException:
        for f in fronts.values():
            f.kill()
        raise
    return fronts


def route_toml(*shadows: Mapping[str, Any], live: Mapping[str, Any] | None = None, model: str = "fraud") -> str:
    """A ``[[routes]]`` table for ``model`` (live version 1 unless ``live`` says otherwise) and its shadows."""
    def table(d: Mapping[str, Any]) -> str:
        return "{ " + ", ".join(f"{k} = {v!r}" if isinstance(v, (int, float)) else f'{k} = "{v}"' for k, v in d.items()) + " }"

    text = f'[[routes]]\nmodel = "{model}"\nlive = {table({"version": "1", **(live or {})})}\n'
    for sh in shadows:
        text += "[[routes.shadows]]\n" + "".join(f"{k} = {v!r}\n" if isinstance(v, (int, float)) else f'{k} = "{v}"\n' for k, v in sh.items())
    return text


# -------------------------------------------------------------------------------------------
# a tritonserver to kill
# -------------------------------------------------------------------------------------------


class KillableTriton:
    """An EmbeddedTriton on ``repo``; ``kill()`` SIGKILLs its process group (the Python-backend
    stubs too), ``restart()`` starts a new one on the same three ports."""

    def __init__(self, repo: pathlib.Path, workdir: pathlib.Path, env: Mapping[str, str] | None = None) -> None:
        self.repo, self.workdir, self.env = repo, workdir, dict(env or {})
        self.starts = 0
        self.ports = (0, 0, 0)
        self.server = self._start()
        self.ports = (self.server.grpc_port, self.server.http_port, self.server.metrics_port)

    def _start(self):
        from shadowgrpc.local import EmbeddedTriton

        self.starts += 1
        g, h, m = self.ports
        t = EmbeddedTriton(self.repo, grpc_port=g, http_port=h, metrics_port=m, env=self.env,
                           log_path=self.workdir / f"tritonserver-{self.starts}.log", extra_args=["--exit-timeout-secs=2"])
        return t.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    def kill(self) -> None:
        pid = self.server.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.server.stop(timeout=5.0)  # reaps

    def kill_later(self, delay_s: float) -> threading.Timer:
        t = threading.Timer(delay_s, self.kill)
        t.start()
        return t

    def restart(self) -> float:
        """Start again on the same ports; returns how long the start took."""
        t0 = time.monotonic()
        self.server = self._start()
        return time.monotonic() - t0

    def close(self) -> None:
        self.kill()
