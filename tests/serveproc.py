"""`shadowgrpc serve` as a real process for the tests that need one (tests/triton/test_serve.py,
test_pairlog_faults_front.py, test_workers.py): a config on loopback ports in front of a Triton,
started with --ready-file and waited for."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


# A full disk's stand-in: the front runs under RLIMIT_FSIZE of 8 KiB (smaller than any Parquet file
# the log writes), SIGXFSZ ignored, so writes past it fail with EFBIG. Set by a wrapper that execs
# the front, never by a preexec_fn: forking a test process whose gRPC threads are running can break
# the child (gRPC skips its fork handlers; seen as "epoll_wait error: Bad file descriptor").
FULL_DISK = (
    sys.executable, "-c",
    "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192)); os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
)  # fmt: skip


def serve(
    tmp_path: Path,
    live: str,
    body: str,
    *,
    name: str = "front",
    args: tuple[str, ...] = (),
    grace_s: float = 8.0,
    output: Path | None = None,
    wrap: tuple[str, ...] = (),
    start_s: float = 30.0,
) -> tuple[subprocess.Popen, int, int]:
    """Start ``shadowgrpc serve`` with ``[server]`` on 127.0.0.1:0 (``default_live`` = ``live``)
    plus ``body`` (routes, [log], ...); returns (process, data port, admin port) once it serves.
    Its output goes to a pipe (read it with ``communicate``), or to the file ``output``, which
    can never block a process that writes a lot (workers). ``wrap``: the interpreter command that
    runs ``-m shadowgrpc`` (default this Python; ``FULL_DISK``: under a file-size limit)."""
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f'[server]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\ndefault_live = "{live}"\ngrace_s = {grace_s}\n' + body)
    ready = tmp_path / f"{name}.ready"
    cmd = [*(wrap or (sys.executable,)), "-m", "shadowgrpc", "serve", *args, "--config", str(cfg), "--ready-file", str(ready)]
    if output is None:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    else:
        with open(output, "w") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + start_s
    while not ready.exists() or not ready.read_text().endswith("\n"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            said = proc.communicate(timeout=10)[0] if output is None else output.read_text()
            raise AssertionError(f"front did not start: {said}")
        time.sleep(0.05)
    port, admin = map(int, ready.read_text().split())
    return proc, port, admin
