"""`shadowgrpc serve` as a real process for the tests that need one (tests/triton/test_serve.py,
test_pairlog_faults_front.py, test_workers.py): a config on loopback ports in front of a Triton,
started with --ready-file and waited for."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def serve(
    tmp_path: Path,
    live: str,
    body: str,
    *,
    name: str = "front",
    args: tuple[str, ...] = (),
    grace_s: float = 8.0,
    output: Path | None = None,
    preexec=None,
    start_s: float = 30.0,
) -> tuple[subprocess.Popen, int, int]:
    """Start ``shadowgrpc serve`` with ``[server]`` on 127.0.0.1:0 (``default_live`` = ``live``)
    plus ``body`` (routes, [log], ...); returns (process, data port, admin port) once it serves.
    Its output goes to a pipe (read it with ``communicate``), or to the file ``output``, which
    can never block a process that writes a lot (workers)."""
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f'[server]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\ndefault_live = "{live}"\ngrace_s = {grace_s}\n' + body)
    ready = tmp_path / f"{name}.ready"
    cmd = [sys.executable, "-m", "shadowgrpc", "serve", *args, "--config", str(cfg), "--ready-file", str(ready)]
    if output is None:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec)
    else:
        with open(output, "w") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, preexec_fn=preexec)
    deadline = time.monotonic() + start_s
    while not ready.exists() or not ready.read_text().endswith("\n"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            said = proc.communicate(timeout=10)[0] if output is None else output.read_text()
            raise AssertionError(f"front did not start: {said}")
        time.sleep(0.05)
    port, admin = map(int, ready.read_text().split())
    return proc, port, admin
