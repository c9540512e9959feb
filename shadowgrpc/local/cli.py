"""``shadowgrpc triton``: run the embedded Triton on loopback until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from .dist import example_repository
from .log import TritonStartError
from .launcher import EmbeddedTriton


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
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda _signum, _frame: stop.set())
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
    for name, what in (("grpc", "gRPC"), ("http", "HTTP"), ("metrics", "Prometheus metrics")):
        parser.add_argument(
            f"--{name}-port", type=_port, default=0, metavar="P", help=f"{what} port (default 0: pick a free one)"
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
