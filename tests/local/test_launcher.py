"""The embedded Triton launcher (shadowgrpc.local) against a real tritonserver: the session server
(fixture ``triton``) is ready on loopback with its models and their Python-backend stubs; start
errors, port retry, stop, the CLI and death with the parent start servers of their own. The models
the session server serves: test_model_repository.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import tritonclient.grpc as grpcclient

from shadowgrpc.local import EmbeddedTriton, TritonStartError, add_triton_parser, example_repository
from tests.fixtures_triton import EXAMPLE_MODELS, ROOT, TEST_MODELS, TritonFixture, copy_models, require_pytriton

pytestmark = [pytest.mark.triton, pytest.mark.once]  # once: the launcher and models, no shadowgrpc twin code

TRITON_PROCESS_NAMES = ("tritonserver", "triton_python_b")  # /proc/PID/comm is cut at 15 chars


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _processes() -> list[dict]:
    """Every process in /proc: pid, pgid, ppid, state, comm, cmdline."""
    procs = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace")
        fields = stat[stat.rindex(b")") + 2 :].split()
        procs.append(
            {
                "pid": int(entry),
                "state": fields[0].decode(),
                "ppid": int(fields[1]),
                "pgid": int(fields[2]),
                "comm": comm,
                "cmdline": cmdline,
            }
        )
    return procs


@contextlib.contextmanager
def _python(code: str, *args: str, stderr: int | None = subprocess.PIPE) -> Iterator[subprocess.Popen]:
    """``python -c code *args`` in the repository root (text stdout piped), killed if still running
    on the way out."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _alive(procs: list[dict]) -> list[dict]:
    """Processes that still run (zombies are dead: they only wait for their parent to reap them)."""
    return [p for p in procs if p["state"] not in ("Z", "X")]


def _triton_processes_of(pgid: int) -> list[dict]:
    return [p for p in _alive(_processes()) if p["pgid"] == pgid or p["pid"] == pgid]


def _triton_processes_serving(repository: pathlib.Path) -> list[dict]:
    """Live tritonserver processes started on ``repository``, and their stub children."""
    servers = [
        p
        for p in _alive(_processes())
        if p["comm"] == "tritonserver" and f"--model-repository={repository}" in p["cmdline"]
    ]
    pgids = {p["pgid"] for p in servers}
    return [p for p in _alive(_processes()) if p["pgid"] in pgids and p["comm"] in TRITON_PROCESS_NAMES]


# ----------------------------------------------------------------------------------------------
# the session server
# ----------------------------------------------------------------------------------------------


def test_server_is_ready_on_loopback(triton: TritonFixture) -> None:
    server = triton.server
    assert server.is_running()
    assert triton.grpc_address.startswith("127.0.0.1:")
    assert server.http_address.startswith("127.0.0.1:")
    assert server.metrics_url.startswith("http://127.0.0.1:")
    assert server.log_path is not None and server.log_path.is_file()
    assert pathlib.Path(f"/proc/{server.pid}").exists()
    assert "--model-control-mode=explicit" in server.command
    with triton.client() as client:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.get_server_metadata().version == "2.51.0"
        for name, version in EXAMPLE_MODELS:
            assert client.is_model_ready(name, version), (name, version)
    index = server.repository_index()
    names = {(m["name"], m["version"]) for m in index}
    assert set(EXAMPLE_MODELS) <= names
    assert {m["name"] for m in index} >= {"fraud_faulty", "fraud_sleepy", "fraud_garbage", "fraud_recorder"}
    assert all(m["state"] == "READY" for m in index), index
    # Python-backend stubs are children of tritonserver, in its process group.
    stubs = [p for p in _triton_processes_of(server.pid) if p["comm"] == "triton_python_b"]
    assert len(stubs) >= len(index)


# ----------------------------------------------------------------------------------------------
# servers of their own: start errors, port retry, stop, CLI
# ----------------------------------------------------------------------------------------------


def test_broken_model_raises_start_error_with_log_tail(tmp_path: pathlib.Path) -> None:
    require_pytriton()
    repo = copy_models(tmp_path / "repo", TEST_MODELS, only=["fraud_faulty"])
    broken = repo / "fraud_faulty" / "1" / "model.py"
    broken.write_text(broken.read_text() + "\nraise RuntimeError('deliberately broken model 7f3a')\n")
    server = EmbeddedTriton(repo, startup_timeout=60, log_path=tmp_path / "triton.log")
    with pytest.raises(TritonStartError) as excinfo:
        server.start()
    message = str(excinfo.value)
    assert "deliberately broken model 7f3a" in message
    assert "fraud_faulty" in message and "UNAVAILABLE" in message
    assert "last lines of the tritonserver log" in message
    assert excinfo.value.log_tail and excinfo.value.log_path == server.log_path
    assert server.pid is None and not server.is_running()
    assert _triton_processes_serving(repo) == []


def test_missing_repository_is_a_start_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(TritonStartError, match="not a directory"):
        EmbeddedTriton(tmp_path / "nope").start()


def test_without_pytriton_the_error_says_what_to_install(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from shadowgrpc.local import TritonNotInstalledError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pytriton" else real_find_spec(name, *a)
    )
    with pytest.raises(TritonNotInstalledError, match=r"nvidia-pytriton is not installed.*'local' extra"):
        EmbeddedTriton(tmp_path).start()


def test_port_retry_and_stop_leaves_no_process(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_pytriton()
    import shadowgrpc.local.launcher as server_mod  # where EmbeddedTriton picks its ports

    repo = copy_models(tmp_path / "repo", TEST_MODELS, only=["fraud_faulty"])
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        real_free_ports = server_mod._free_ports
        calls = []

        def first_grpc_port_taken(n, exclude=()):
            ports = real_free_ports(n, exclude=[*exclude, busy_port])
            calls.append(ports)
            return [busy_port, *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(server_mod, "_free_ports", first_grpc_port_taken)
        server = EmbeddedTriton(repo, log_path=tmp_path / "triton.log")
        with server:
            assert len(calls) == 2 and server.grpc_port != busy_port
            assert "port taken, retry 2 with new ports" in server.log_path.read_text()
            pid = server.pid
            assert pid is not None
            members = _triton_processes_of(pid)
            assert {p["comm"] for p in members} == set(TRITON_PROCESS_NAMES), members
            assert len([p for p in members if p["comm"] == "triton_python_b"]) == 1
            with grpcclient.InferenceServerClient(server.grpc_address) as client:
                assert client.is_model_ready("fraud_faulty")
            pids = {p["pid"] for p in members}
        # __exit__ -> stop()
        assert server.pid is None and not server.is_running()
        assert [p for p in _alive(_processes()) if p["pid"] in pids] == []
        assert _triton_processes_of(pid) == []
        assert _triton_processes_serving(repo) == []
        server.stop()  # idempotent
    finally:
        busy.close()


def test_cli_parser_defaults() -> None:
    parser = argparse.ArgumentParser(prog="shadowgrpc")
    add_triton_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["triton"])
    assert args.model_repository == example_repository()
    assert (args.grpc_port, args.http_port, args.metrics_port, args.log_file) == (0, 0, 0, None)
    assert callable(args.func)
    args = parser.parse_args(["triton", "--grpc-port", "8001", "--env", "A=b", "--log-file", "t.log"])
    assert args.grpc_port == 8001 and args.env == ["A=b"] and args.log_file == pathlib.Path("t.log")
    assert (example_repository() / "fraud" / "config.pbtxt").is_file()


def test_cli_runs_until_sigterm(tmp_path: pathlib.Path) -> None:
    require_pytriton()
    repo = copy_models(tmp_path / "repo", TEST_MODELS, only=["fraud_faulty"])
    code = (
        "import argparse, sys\n"
        "from shadowgrpc.local import add_triton_parser\n"
        "p = argparse.ArgumentParser(prog='shadowgrpc')\n"
        "add_triton_parser(p.add_subparsers(dest='command', required=True))\n"
        "a = p.parse_args(sys.argv[1:])\n"
        "sys.exit(a.func(a))\n"
    )
    log_file = tmp_path / "cli-triton.log"
    with _python(code, "triton", "--model-repository", str(repo), "--log-file", str(log_file)) as proc:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        banner = "".join(lines)
        assert "gRPC:" in banner and "127.0.0.1:" in banner, (banner, proc.stderr.read() if proc.stderr else "")
        assert str(log_file) in banner and "fraud_faulty (1)" in banner
        assert len(_triton_processes_serving(repo)) == 2  # tritonserver + one stub
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (out, err)
        assert _triton_processes_serving(repo) == []


def test_server_dies_with_its_parent(tmp_path: pathlib.Path) -> None:
    # PR_SET_PDEATHSIG: SIGKILL the Python process that started Triton; tritonserver dies with it and
    # its Python-backend stubs notice (they poll their parent every 300 ms) and exit too.
    require_pytriton()
    repo = copy_models(tmp_path / "repo", TEST_MODELS, only=["fraud_faulty"])
    code = (
        "import sys, threading, time\n"
        "from shadowgrpc.local import EmbeddedTriton\n"
        "t = EmbeddedTriton(sys.argv[1], log_path=sys.argv[2])\n"
        "th = threading.Thread(target=t.start)\n"  # started from a thread that then ends
        "th.start(); th.join()\n"
        "print(t.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    with _python(code, str(repo), str(tmp_path / "triton.log"), stderr=None) as parent:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        time.sleep(0.5)  # the starting thread is gone by now: the server must still run
        assert {p["comm"] for p in _triton_processes_of(pid)} == set(TRITON_PROCESS_NAMES)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _triton_processes_of(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _triton_processes_of(pid) == []
