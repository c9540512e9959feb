"""``shadowgrpc analyze``: the report and verdict of a shadow run from its paired log."""

from __future__ import annotations

import argparse
import sys


def _cmd_analyze(args: argparse.Namespace) -> int:
    import time

    from ..config import ConfigError, Settings
    from ..report import build_report
    from ..report_text import format_report, report_json
    from . import DuckEngine, LogError, analyze, where_clause

    routes = None
    if args.config:
        try:
            routes = {r.model: r for r in Settings.load(args.config).routes}
        except ConfigError as e:
            print(f"shadowgrpc analyze: bad config: {e}", file=sys.stderr)
            return 2
    try:
        where = where_clause(args.where, args.since, args.until)
    except ValueError as e:
        print(f"shadowgrpc analyze: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        bar = _bar(args)
        engine = DuckEngine(args.paths)
        for why in engine.skipped:
            print(f"shadowgrpc analyze: skipped {why}", file=sys.stderr)
        state = analyze(args.paths, where, routes, progress=bar.update if bar is not None else None, engine=engine, slices=args.slice)
        if bar is not None:
            bar.close()
    except LogError as e:
        print(f"shadowgrpc analyze: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # --slice
        print(f"shadowgrpc analyze: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # DuckDB's own errors: a bad --where, unreadable files
        if type(e).__module__.startswith("duckdb") or type(e).__module__.startswith("_duckdb"):
            print(f"shadowgrpc analyze: {type(e).__name__}: {e}", file=sys.stderr)
            return 1 if "Parser" not in type(e).__name__ and "Binder" not in type(e).__name__ else 2
        raise
    if args.model and args.model not in state.routes:
        print(f"shadowgrpc analyze: no route {args.model!r} in the log (routes: {', '.join(sorted(state.routes)) or 'none'})", file=sys.stderr)
        return 1
    rep = build_report(state, args.model)
    rep.source = f"paired log {', '.join(args.paths)}" + (f" where {where}" if where else "")
    if engine.skipped:
        rep.source += f" ({len(engine.skipped)} unreadable files skipped)"
    if args.html:
        from ..report_html import write_html_for

        if not write_html_for("shadowgrpc analyze", state, rep, args.html, f"shadowgrpc offline report: {', '.join(args.paths)}"):
            return 1
    print(report_json(rep) if args.json else format_report(rep))
    n = sum(rs.stats.requests for rs in state.routes.values())
    print(f"shadowgrpc analyze: {n} logged requests in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0


def _bar(args: argparse.Namespace):
    if args.json or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(desc="compared pairs", unit=" pairs", file=sys.stderr)


def add_analysis_parsers(sub) -> None:
    a = sub.add_parser(
        "analyze",
        help="the report and verdict of a shadow run, from its paired-prediction log (DuckDB over Parquet)",
        description="Compute the same report and verdict as the live service from the paired-prediction log "
        "([log] path), outcomes joined by request id, with DuckDB over the Parquet files. Filters the online "
        "report cannot apply: --where (any SQL predicate over the pairs columns, see the README's schema), "
        "--since/--until (a time window on arrival), --slice (one bucket of a configured slice).",
        epilog="examples:\n"
        "  shadowgrpc analyze /var/lib/shadowgrpc/log\n"
        "  shadowgrpc analyze LOG --since 2026-12-06T10:00:00 --until 2026-12-06T11:00:00\n"
        "  shadowgrpc analyze LOG --slice amount=2000_plus\n"
        "  shadowgrpc analyze LOG --where \"target = 'v2' AND live_status = 'OK'\"\n"
        "  shadowgrpc analyze LOG --json > report.json; shadowgrpc analyze LOG --html report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("paths", nargs="+", metavar="PATH", help="a paired-log folder ([log] path: holds pairs/ and outcomes/); several are read as one table")
    a.add_argument("--where", action="append", metavar="SQL", help="keep only pairs rows matching this SQL predicate (repeatable: ANDed)")
    a.add_argument("--since", metavar="TIME", help="requests that arrived at or after TIME (UTC, e.g. 2026-12-06T10:00:00)")
    a.add_argument("--until", metavar="TIME", help="requests that arrived before TIME (UTC)")
    a.add_argument(
        "--slice",
        action="append",
        metavar="NAME=BUCKET",
        help="only requests whose rows all fall in this bucket of a configured slice, e.g. amount=2000_plus (repeatable: ANDed)",
    )
    a.add_argument("--model", default="", help="only this route")
    a.add_argument("--config", metavar="FILE", help="judge with this config's routes (gates, output kinds) instead of the config the files recorded")
    a.add_argument("--json", action="store_true", help="print JSON (proto3 JSON mapping of shadowgrpc.v1.Report)")
    a.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report (plots embedded)")
    a.set_defaults(func=_cmd_analyze)

    from .replay import add_replay_parser

    add_replay_parser(sub)
