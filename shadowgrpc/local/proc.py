"""tritonserver's process: it never outlives us, and stopping it stops its whole process group
(its own session, PR_SET_PDEATHSIG, SIGTERM then SIGKILL of the group, stop at exit: see
:mod:`shadowgrpc.local`). The group leader is never reaped before its group is killed, so the
group id cannot be reused meanwhile.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

_PR_SET_PDEATHSIG = 1
_TRITON_COMMS = (b"tritonserver", b"triton_python_b")  # /proc/PID/comm is cut at 15 characters


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


# Sets PR_SET_PDEATHSIG, then execs the command (the setting survives execve): run as the child's
# first program instead of a preexec_fn, because a preexec_fn makes subprocess fork() rather than
# vfork(), which runs gRPC's fork handlers in the child of a process whose gRPC threads are busy:
# they restart a poller thread there, close_fds closes its epoll fd before exec, and the child
# aborts ("epoll_wait error: Bad file descriptor") or segfaults instead of starting tritonserver.
_PDEATHSIG_EXEC = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"libc.prctl(ctypes.c_int({_PR_SET_PDEATHSIG}), ctypes.c_ulong({int(signal.SIGKILL)}), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))\n"
    "if os.getppid() != int(sys.argv[1]): os._exit(1)  # the parent died before prctl took effect\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def _with_pdeathsig(command: Sequence[str], parent_pid: int) -> list[str]:
    """``command`` run so that it gets SIGKILL when the thread that started it dies (Linux)."""
    if _PRCTL is None:
        return list(command)
    return [sys.executable, "-c", _PDEATHSIG_EXEC, str(parent_pid), *command]


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


def spawn(command: Sequence[str], *, log: IO[bytes], env: dict[str, str], cwd: str) -> subprocess.Popen:
    """Start ``command`` with its output in ``log``, in a new session, killed when we die."""
    return _popen(
        _with_pdeathsig(command, os.getpid()),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
        close_fds=True,
    )


def _peek_exit(pid: int) -> os.waitid_result | None:
    """The exit of child ``pid`` (None while it runs), without reaping it; ChildProcessError once
    it was reaped."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)


def exit_status(proc: subprocess.Popen) -> int | None:
    """``proc``'s exit status if it has exited (negative: killed by that signal), else None.

    Never reaps: the server's pid is also its process group id, and an unreaped leader keeps that
    id from being reused until the group is killed. Only terminate() reaps.
    """
    if proc.returncode is not None:
        return proc.returncode
    try:
        info = _peek_exit(proc.pid)
    except ChildProcessError:  # reaped by someone else
        return proc.poll()
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _wait_exit_noreap(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + max(timeout, 0.0)
    with contextlib.suppress(ChildProcessError):
        while _peek_exit(pid) is None and time.monotonic() < deadline:
            time.sleep(0.02)


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


def terminate(proc: subprocess.Popen, timeout: float) -> None:
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


_RUNNING: set[Any] = set()  # what stop_at_exit() was given: objects with stop(timeout=...)
_RUNNING_LOCK = threading.Lock()


def stop_at_exit(server: Any, *, remember: bool = True) -> None:
    """Have ``server.stop(timeout=10)`` called at interpreter exit (or no longer, ``remember=False``)."""
    with _RUNNING_LOCK:
        if remember:
            _RUNNING.add(server)
        else:
            _RUNNING.discard(server)


def _stop_all_at_exit() -> None:
    with _RUNNING_LOCK:
        servers = list(_RUNNING)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout=10)


atexit.register(_stop_all_at_exit)
