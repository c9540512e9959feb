"""``shadowgrpc`` command line: serve, report, triton, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import __version__
from .client import DEFAULT_MAX_MESSAGE_MB, MAX_MESSAGE_MB_LIMIT, fetch_report
from .config import ConfigError, Settings

log = logging.getLogger("shadowgrpc")


def _run(coro, loop_kind: str = "asyncio"):
    if loop_kind == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


# -- serve ----------------------------------------------------------------------------------------
async def serve(settings: Settings, ready_file: str | None = None, telemetry=None, config_path: str | None = None) -> int:
    """Run the front until SIGTERM/SIGINT; SIGHUP reloads ``config_path``. ``telemetry``: a
    telemetry.TelemetryOptions (default: from SHADOWGRPC_TRACE / SHADOWGRPC_METRICS_PORT)."""
    from .budget import startup_lines
    from .reload import on_sighup
    from .server import Front

    front = Front(settings, telemetry)
    front.config_path = config_path
    await front.start()
    print(f"shadowgrpc {__version__}: KServe v2 gRPC on port {front.port}, ShadowControl on port {front.admin_port}", flush=True)
    print(f"  default live Triton {settings.default_live}; {len(settings.routes)} route(s): "
          + ", ".join(f"{r.model} -> live {r.live.model}:{r.live.version or '*'} + {len(r.shadows)} shadow(s)" for r in settings.routes),
          flush=True)
    if front.telemetry.tracer_provider is not None:
        print("  tracing on: OpenTelemetry spans exported as the OTEL_* environment says", flush=True)
    if front.metrics_port is not None:
        print(f"  Prometheus metrics on http://{front.telemetry.options.metrics_host}:{front.metrics_port}/metrics", flush=True)
    for line in startup_lines(settings.routes):  # budget.py
        print(line, flush=True)
    if front.rollout_gate is not None:
        from .gate_http import startup_line

        print(startup_line(front.rollout_gate), flush=True)
    if ready_file:
        with open(ready_file, "w") as f:
            f.write(f"{front.port} {front.admin_port}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set = set()
    loop.add_signal_handler(signal.SIGHUP, on_sighup, front.reload_from, reloads)
    await stop.wait()
    loop.remove_signal_handler(signal.SIGHUP)
    s = front.settings  # as reloaded
    print(f"shadowgrpc: stopping (grace {s.grace_s:g} s for in-flight requests, {s.shadow_grace_s:g} s for shadows, at most {s.stop_timeout_s:g} s)", flush=True)
    try:
        await asyncio.wait_for(front.stop(), s.stop_timeout_s + 5.0)
    except TimeoutError:
        log.error("stop took longer than server.stop_timeout_s + 5 s: exiting anyway")
        return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses

    from .telemetry import TelemetryError, TelemetryOptions, configure_logging
    from .workers import MAX_WORKERS

    if not 1 <= args.workers <= MAX_WORKERS:
        print(f"shadowgrpc serve: --workers: must be 1 to {MAX_WORKERS}, got {args.workers}", file=sys.stderr)
        return 2
    configure_logging(args.log_format, args.serve_log_level)
    try:
        settings = Settings.load(args.config)
    except ConfigError as e:
        print(f"shadowgrpc serve: bad config: {e}", file=sys.stderr)
        return 2
    try:
        if args.metrics_port is not None and not 0 <= args.metrics_port < 65536:
            raise TelemetryError(f"--metrics-port: must be a port number (0: a free one), got {args.metrics_port}")
        telemetry = TelemetryOptions.from_env()
        flags = {"trace": args.trace or None, "metrics_port": args.metrics_port, "metrics_host": args.metrics_host}
        telemetry = dataclasses.replace(telemetry, **{k: v for k, v in flags.items() if v is not None})
        if args.workers > 1:
            from .workers import run as run_workers

            return run_workers(settings, args.workers, args.ready_file, telemetry, args.loop, args.config)
        return _run(serve(settings, args.ready_file, telemetry, args.config), args.loop)
    except TelemetryError as e:
        print(f"shadowgrpc serve: bad telemetry setting: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"shadowgrpc serve: {e}", file=sys.stderr)
        return 1


# -- report ---------------------------------------------------------------------------------------
def _cmd_report(args: argparse.Namespace) -> int:
    import grpc

    from .report import build_report
    from .report_html import write_html_for
    from .report_text import format_report, report_json
    from .snapshot import SnapshotError, load, merge, snapshot

    if not 0 <= args.max_message_mb <= MAX_MESSAGE_MB_LIMIT:
        print(f"shadowgrpc report: --max-message-mb: must be 0 (no limit) to {MAX_MESSAGE_MB_LIMIT}, got {args.max_message_mb}", file=sys.stderr)
        return 2
    try:
        secured = _admin_client(args)
    except OSError as e:
        print(f"shadowgrpc report: {e}", file=sys.stderr)
        return 2
    targets = args.target or ([] if args.snapshots else ["127.0.0.1:8011"])
    single = len(targets) == 1 and not args.snapshots and not args.save
    views = []
    for t in targets:
        try:
            rep = fetch_report(t, "" if not single else args.model, args.timeout, snapshot=not single or bool(args.html), max_message_mb=args.max_message_mb, **secured)
        except grpc.RpcError as e:
            print(f"shadowgrpc report: {t}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
        if single:
            if args.html:
                try:
                    state = load(rep.snapshot)
                except SnapshotError as e:
                    print(f"shadowgrpc report: --html: {e}", file=sys.stderr)
                    return 1
                if not write_html_for("shadowgrpc report", state, rep, args.html, f"shadowgrpc report: {t}"):
                    return 1
                rep.ClearField("snapshot")
            print(report_json(rep) if args.json else format_report(rep))
            return 0
        try:
            views.append(load(rep.snapshot))
        except SnapshotError as e:
            print(f"shadowgrpc report: {t}: {e}", file=sys.stderr)
            return 1
    for path in args.snapshots:
        try:
            with open(path, "rb") as f:
                views.append(load(f.read()))
        except OSError as e:
            print(f"shadowgrpc report: {path}: cannot read: {e.strerror or e}", file=sys.stderr)
            return 1
        except SnapshotError as e:
            print(f"shadowgrpc report: {path}: {e}", file=sys.stderr)
            return 1
    try:
        view = merge(views)
    except SnapshotError as e:
        print(f"shadowgrpc report: cannot merge: {e}", file=sys.stderr)
        return 1
    if args.model and args.model not in view.routes:
        print(f"shadowgrpc report: no route for model {args.model!r} in the merged state", file=sys.stderr)
        return 1
    if args.save:
        with open(args.save, "wb") as f:
            f.write(snapshot(view, view.costs))
    rep = build_report(view, args.model, view.costs)
    if args.html and not write_html_for("shadowgrpc report", view, rep, args.html, f"shadowgrpc report: {len(views)} fronts merged"):
        return 1
    print(report_json(rep) if args.json else format_report(rep))
    return 0


def _admin_client(args: argparse.Namespace) -> dict:
    """fetch_report's token/credentials from --token-file / SHADOWGRPC_ADMIN_TOKEN and --ca/--cert/--key."""
    import os

    from .client import admin_credentials

    token = os.environ.get("SHADOWGRPC_ADMIN_TOKEN", "").strip()
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise OSError(f"--token-file: cannot read {args.token_file}: {e.strerror or e}") from None
    if bool(args.cert) != bool(args.key):
        raise OSError("--cert and --key go together (a client certificate and its key)")
    creds = None
    if args.ca or args.cert:
        try:
            creds = admin_credentials(args.ca or "", args.cert or "", args.key or "")
        except OSError as e:
            raise OSError(f"--ca/--cert/--key: cannot read {e.filename}: {e.strerror or e}") from None
    return {"token": token, "credentials": creds, "server_name": args.server_name}


def _add_admin_client_args(r) -> None:
    """The options of a client of the admin port (report, reload): token and TLS (_admin_client)."""
    r.add_argument("--token-file", metavar="FILE", help="the admin token (server.admin_token_file), sent as 'authorization: Bearer'; also env SHADOWGRPC_ADMIN_TOKEN")
    r.add_argument("--ca", metavar="PEM", help="TLS to the admin port (server.admin_tls): its CA certificate (default: the system's roots when --cert is given)")
    r.add_argument("--cert", metavar="PEM", help="a client certificate for an admin port with mTLS (server.admin_tls.client_ca); with --key")
    r.add_argument("--key", metavar="PEM", help="the client certificate's private key")
    r.add_argument("--server-name", default="", metavar="NAME", help="the name to check in the admin port's certificate (default: the target's host)")


# -- reload ---------------------------------------------------------------------------------------
def _add_reload_parser(sub) -> None:
    r = sub.add_parser(
        "reload",
        help="apply a new config to a running front without a restart (ShadowControl.Reload)",
        description="Apply a config to a running front (or a --workers parent: every worker) without a restart. "
        "The new config is built whole, then swapped in one step: each request sees the old config or the new one. "
        "Routes and shadows can be added, removed or changed (sample rates, deadlines, outputs, gates, slices, "
        "auto-shadow policies); counts of unchanged routes and targets go on. Keys that need a restart (server.listen, "
        "server.admin_listen, server.max_message_mb, log.path, TLS on or off, ...) refuse the reload, naming the key; "
        "a config that does not load refuses it with the error; certificate files and the admin token are read again. "
        "A refused reload changes nothing: the old config keeps serving. Exit status 0 applied, 1 refused or "
        "unreachable, 2 bad arguments. Sending the front SIGHUP re-reads its own --config file the same way.",
    )
    r.add_argument("--target", default="127.0.0.1:8011", metavar="ADDR", help="the front's admin address (server.admin_listen; default 127.0.0.1:8011)")
    r.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML config read HERE and sent as text (default: the front re-reads the file it was started with, "
        "as on SIGHUP); a later SIGHUP re-reads the front's own file again",
    )
    r.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30: the reload includes one repository poll)")
    _add_admin_client_args(r)
    r.set_defaults(func=_cmd_reload)


def _cmd_reload(args) -> int:
    import grpc

    from .v1 import shadow_pb2, shadow_pb2_grpc

    try:
        sec = _admin_client(args)  # token, credentials, server_name: as `shadowgrpc report`
    except OSError as e:
        print(f"shadowgrpc reload: {e}", file=sys.stderr)
        return 2
    req = shadow_pb2.ReloadRequest()
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                req.config_toml = f.read()
        except OSError as e:
            print(f"shadowgrpc reload: --config {args.config}: cannot read: {e.strerror or e}", file=sys.stderr)
            return 1
    options = [("grpc.ssl_target_name_override", sec["server_name"])] if sec["server_name"] else []
    creds = sec["credentials"]
    md = (("authorization", f"Bearer {sec['token']}"),) if sec["token"] else None
    with grpc.secure_channel(args.target, creds, options=options) if creds is not None else grpc.insecure_channel(args.target) as ch:
        try:
            resp = shadow_pb2_grpc.ShadowControlStub(ch).Reload(req, timeout=args.timeout, metadata=md)
        except grpc.RpcError as e:
            print(f"shadowgrpc reload: {args.target}: refused: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    print(f"shadowgrpc reload: {args.target}: applied" + ("" if resp.changes else " (no change)"))
    for c in resp.changes:
        print(f"  {c}")
    return 0


def _default_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


# -- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shadowgrpc",
        description="gRPC shadow-inference front for NVIDIA Triton: callers get the live model's answer; "
        "shadow models get a mirrored copy whose answers are compared, never returned.",
    )
    p.add_argument("--version", action="version", version=f"shadowgrpc {__version__}")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (default INFO)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "serve",
        help="run the front (KServe v2 gRPC drop-in for Triton)",
        description="Run the front: a drop-in for Triton's gRPC endpoint. Point existing Triton clients at "
        "server.listen; ShadowControl (reports) is served on server.admin_listen. SIGTERM/SIGINT stop it "
        "gracefully: new calls are refused, in-flight live requests finish within server.grace_s, shadows get "
        "server.shadow_grace_s, the paired log and spans are flushed, all within server.stop_timeout_s. SIGHUP re-reads "
        "--config and applies it without a restart (see `shadowgrpc reload --help`).",
    )
    s.add_argument("--config", required=True, metavar="FILE", help="TOML config (see shadowgrpc/examples/shadow.toml)")
    s.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default=_default_loop(),
        help="event loop (default: uvloop when installed; it cut the front's CPU per request by 60-140 us in benchmarks/front_overhead.py)",
    )
    s.add_argument("--ready-file", metavar="FILE", help="write '<port> <admin_port>' here once serving")
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N data-plane processes sharing server.listen (SO_REUSEPORT; the kernel spreads connections over them) "
        "behind one ShadowControl on server.admin_listen whose report merges theirs exactly (default 1: one process)",
    )
    s.add_argument(
        "--trace",
        action="store_true",
        help="OpenTelemetry tracing (and OTLP metrics), configured by the standard OTEL_* variables: OTEL_EXPORTER_OTLP_ENDPOINT, "
        "OTEL_EXPORTER_OTLP_PROTOCOL (grpc | http/protobuf), OTEL_TRACES_SAMPLER(_ARG), OTEL_SERVICE_NAME, ... (also SHADOWGRPC_TRACE=1)",
    )
    s.add_argument("--metrics-port", type=int, metavar="P", help="serve Prometheus metrics on http://HOST:P/metrics (0: a free port; also SHADOWGRPC_METRICS_PORT)")
    s.add_argument("--metrics-host", metavar="HOST", help="address for --metrics-port (default 127.0.0.1; also SHADOWGRPC_METRICS_HOST)")
    s.add_argument("--log-format", choices=["text", "json"], default="text", help="json: one JSON object per line, with trace_id/span_id inside a span")
    s.add_argument("--log-level", dest="serve_log_level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (overrides the global --log-level)")
    s.set_defaults(func=_cmd_serve)

    r = sub.add_parser(
        "report",
        help="print the shadow report of a running front (or of several, merged)",
        description="Fetch ShadowControl.GetReport from a running front's admin port and print it, verdict first. "
        "With several --target and/or --from, each front's state snapshot is fetched (or read) and merged exactly "
        "(counts, latency and paired sketches, slices, ground truth) before the report is built.",
    )
    r.add_argument(
        "--target",
        action="append",
        metavar="ADDR",
        help="a front's admin address (default 127.0.0.1:8011); repeat it to merge the reports of several replicas exactly",
    )
    r.add_argument(
        "--from",
        dest="snapshots",
        action="append",
        default=[],
        metavar="FILE",
        help="a snapshot saved with --save (repeatable; merged with each other and with any --target)",
    )
    r.add_argument("--save", metavar="FILE", help="also write the (merged) state as a snapshot file, for a later --from")
    r.add_argument("--model", default="", help="only this route")
    r.add_argument("--json", action="store_true", help="print JSON (proto3 JSON mapping of shadowgrpc.v1.Report)")
    r.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report (plots embedded; needs the 'html' extra: matplotlib)")
    r.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    r.add_argument(
        "--max-message-mb",
        type=int,
        default=DEFAULT_MAX_MESSAGE_MB,
        metavar="MB",
        help=f"largest report accepted, in MiB (default {DEFAULT_MAX_MESSAGE_MB}, like server.max_message_mb; 0: no limit); "
        "grpc's own default would be 4",
    )
    _add_admin_client_args(r)
    r.set_defaults(func=_cmd_report)

    _add_reload_parser(sub)
    from .gate import add_gate_parser

    add_gate_parser(sub, _add_admin_client_args, _admin_client)
    try:
        from .local import add_triton_parser
    except ImportError:  # pragma: no cover - the module itself has no hard dependency on pytriton
        pass
    else:
        add_triton_parser(sub)

    from .analysis.cli import add_analysis_parsers
    from .local.demo import add_demo_parser

    add_analysis_parsers(sub)
    add_demo_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from .gate import EXIT_UNDECIDED, argv_is_gate

    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # `shadowgrpc gate`'s argument errors: 3 (could not decide), not argparse's 2
        if e.code == 2 and argv_is_gate(argv):
            raise SystemExit(EXIT_UNDECIDED) from None
        raise
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
