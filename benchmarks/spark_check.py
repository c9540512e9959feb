#!/usr/bin/env python3
"""DuckDB == Spark: every query of shadowgrpc/analysis/sql.py, unchanged, on both engines over the
same paired-log files, and the full offline report built from each (``make spark-check``).

1. The log: ``--log PATH`` (a [log] folder holding pairs/ and outcomes/), or else a real one made
   here: the embedded Triton (example models + tests/models' fraud_nan), a front with [log] on
   the routes of tests/pairlog_run.py (fraud with two shadows, one of them
   answering NaN rows, and two slices; merchant_intent; basket_value at sample_rate 0.5), its
   traffic, its outcomes (plus a duplicate, an unknown id, a rejected one
   and a mismatch), flushed.
2. Each query of sql.py (found there: every public function taking ``where`` first, compared for
   every route and target) under each filter (none; a --since/--until window over the
   middle third of the arrivals; a predicate on partition and float columns; each --where given;
   --slice's filter, the one given to Spark rewritten: analysis.slice_filter is DuckDB's dialect)
   on DuckEngine and on SparkEngine (local[2], loopback, UTC). The queries rebuild reads with
   ``rows()`` are compared as Python rows (types included: True is not 1), those it reads with
   ``arrow()`` as Arrow tables: column types equal, values equal in the queries' ORDER BY order,
   floats bit for bit (NaN payloads and -0.0 included), nested lists and structs element by
   element. A query without an ORDER BY of its own is compared as a sorted list of rows.
3. Per filter, ``analyze(paths, where, engine=...)`` -> ``build_report`` from each engine, compared
   with tests/pairlog_run.py's ``diff`` (counts exact, floats 1e-9 relative).

Prints a table of what matched and exits 1 on any difference (2 on bad arguments).

Run:  python benchmarks/spark_check.py [--log PATH | --keep DIR] [--requests 400] [--where SQL]
Needs the ``spark`` extra (pyspark) and Java 17+ (``make spark-check`` installs both).
"""

from __future__ import annotations

import argparse
import inspect
import pathlib
import re
import struct
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # tests.* (routes, traffic, diff, the model copy) live in this checkout
    sys.path.insert(0, str(REPO_ROOT))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    head, rest = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(description=head, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", metavar="PATH", help="check this paired log instead of making one")
    p.add_argument("--keep", metavar="DIR", help="make the log in DIR (kept; default: a temp dir, removed)")
    p.add_argument("--requests", type=int, default=400, help="fraud requests of the made log (default 400; half as many of each other route)")
    p.add_argument("--where", action="append", default=[], metavar="SQL", help="one more filter to check (repeatable; each one alone)")
    p.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    return p.parse_args(argv)


# -- the log ------------------------------------------------------------------------------------
def make_log(log_dir: pathlib.Path, n: int) -> None:
    """A real paired log: embedded Triton, a front logging every pair, traffic and outcomes."""
    import grpc

    from shadowgrpc.local import EmbeddedTriton, example_repository
    from shadowgrpc.v1 import shadow_pb2_grpc
    from tests.fixtures_triton import TEST_MODELS, copy_models
    from tests.frontctl import front_for
    from tests.pairlog_run import ROUTES, outcome_messages, traffic

    work = log_dir.parent / "triton"
    repo = copy_models(work / "repo", example_repository(), TEST_MODELS, only=("fraud", "fraud_nan", "merchant_intent", "basket_value"))
    env = {"SHADOWGRPC_PREFERENCE_CACHE": str(work / "preference_cache.jsonl")}
    t0 = time.perf_counter()
    with EmbeddedTriton(repo, log_path=work / "tritonserver.log", env=env) as triton:
        print(f"spark_check: Triton ready in {time.perf_counter() - t0:.1f} s; logging to {log_dir}", file=sys.stderr, flush=True)
        ft = front_for(triton.grpc_address, ROUTES, log={"path": str(log_dir), "flush_s": 0.5})
        try:
            outcomes, _ = traffic(ft.address, n)
            ft.drain()
            with grpc.insecure_channel(ft.admin_address) as ch:
                shadow_pb2_grpc.ShadowControlStub(ch).RecordOutcomes(iter(outcome_messages(outcomes)), timeout=30)
            ft.flush_log()
        finally:
            ft.stop()
    print(f"spark_check: log made in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


# -- filters ------------------------------------------------------------------------------------
def spark_slice_filter(routes: dict, spec: str) -> str:
    """``analysis.slice_filter`` (--slice NAME=BUCKET) in Spark SQL: that one is DuckDB's dialect
    (``slice_buckets[i + 1]`` is 1-based there, 0-based in Spark; ``len``, ``list_min`` and
    ``list_max`` are DuckDB's names), so Spark is given this rewrite, checked to select the same
    requests: element_at (1-based in Spark), size, array_min, array_max."""
    from shadowgrpc.analysis.sql import string

    name, _, bucket = spec.partition("=")
    preds = []
    for model, r in routes.items():
        for i, sl in enumerate(r.slices):
            if sl.name == name and bucket in sl.buckets:
                b = sl.buckets.index(bucket)
                col = f"element_at(slice_buckets, {i + 1})"
                preds.append(f"(route = {string(model)} AND size({col}) > 0 AND array_min({col}) = {b} AND array_max({col}) = {b})")
    return "(" + " OR ".join(preds) + ")"


def filters(duck, extra: list[str]) -> list[tuple[str, str, str]]:
    """(label, DuckDB's where, Spark's where): none; a time window over the middle third of the
    arrivals (as --since/--until write it); a predicate on partition columns (strings) and a float
    column; each --where given; and, where a route has slices, --slice's filter (DuckDB's own
    dialect: Spark gets spark_slice_filter's rewrite, the one filter not given unchanged)."""
    from shadowgrpc.analysis import slice_filter, where_clause

    lo, hi, date, hour, med = duck.rows(
        "SELECT min(arrival), max(arrival), min(date), min(hour), median(live_latency_s) FROM pairs WHERE first_row"
    )[0]
    third = (hi - lo) / 3
    fmt = "%Y-%m-%dT%H:%M:%S.%f"
    since, until = (lo + third).strftime(fmt), (lo + 2 * third + timedelta(microseconds=1)).strftime(fmt)
    same = [
        ("none", ""),
        ("window", where_clause(None, since, until)),
        # partition columns are strings in both; a double literal (exponent), not a DECIMAL one
        ("predicate", where_clause([f"date = '{date}' AND hour = '{hour}' AND route <> 'basket_value' AND live_latency_s < {med:.17e}"])),
    ]
    same += [(f"where{i + 1}", where_clause([w])) for i, w in enumerate(extra)]
    out = [(label, w, w) for label, w in same]
    routes = duck.routes()
    sliced = [(sl.name, sl.buckets[0]) for r in routes.values() for sl in r.slices]
    if sliced:
        spec = f"{sliced[0][0]}={sliced[0][1]}"
        out.append((f"slice {spec}", slice_filter(routes, spec), spark_slice_filter(routes, spec)))
    return out


# -- comparing ----------------------------------------------------------------------------------
def canon(v: Any) -> Any:
    """A value made comparable exactly: floats by their bits (float32 values reach Python widened,
    which keeps their bits apart), lists and structs element by element."""
    if isinstance(v, float):
        return ("f", struct.pack("<d", v))
    if isinstance(v, dict):
        return tuple((k, canon(x)) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return tuple(canon(x) for x in v)
    return (type(v).__name__, v)  # True is not 1


def first_difference(a: list, b: list) -> str:
    if len(a) != len(b):
        return f"{len(a)} rows on DuckDB, {len(b)} on Spark"
    for i, (x, y) in enumerate(zip(a, b)):
        if canon(x) != canon(y):
            return f"row {i}: DuckDB {_short(x)} | Spark {_short(y)}"
    return ""


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) < 300 else s[:300] + "..."


def ordered(query: str) -> bool:
    """Does the query end in its own ORDER BY (not one inside a window or a subquery)?"""
    return re.search(r"\bORDER BY\b[^)]*$", query) is not None


def _sorted(rows: list) -> list:
    return sorted(rows, key=lambda r: repr(canon(r)))


def compare_rows(name: str, duck, spark, qd: str, qs: str) -> dict:
    t = time.perf_counter()
    a = duck.rows(qd)
    td = time.perf_counter() - t
    t = time.perf_counter()
    b = spark.rows(qs)
    ts = time.perf_counter() - t
    a, b = [tuple(r) for r in a], [tuple(r) for r in b]
    if not ordered(qd):
        a, b = _sorted(a), _sorted(b)
    return {"query": name, "rows": (len(a), len(b)), "types": "-", "diff": first_difference(a, b), "s": (td, ts)}


def compare_arrow(name: str, duck, spark, qd: str, qs: str) -> dict:
    t = time.perf_counter()
    a = duck.arrow(qd)
    td = time.perf_counter() - t
    t = time.perf_counter()
    b = spark.arrow(qs)
    ts = time.perf_counter() - t
    d = ""
    types = "equal"
    if [f.type for f in a.schema] != [f.type for f in b.schema] or a.schema.names != b.schema.names:
        types = "differ"
        d = f"schema: DuckDB {a.schema} | Spark {b.schema}"
    ra, rb = a.to_pylist(), b.to_pylist()
    if not ordered(qd):
        ra, rb = _sorted(ra), _sorted(rb)
    d = d or first_difference(ra, rb)
    return {"query": name, "rows": (a.num_rows, b.num_rows), "types": types, "diff": d, "s": (td, ts)}


# Functions of sql.py that take ``where`` first but are not queries, and the queries rebuild reads
# with rows() (the others it reads with arrow(); so are they compared).
NOT_QUERIES = {"filtered"}
ROWS_QUERIES = {"route_counts", "target_counts", "outcome_counts", "span"}


def sql_queries() -> list[tuple[str, list[str]]]:
    """Every query function of sql.py, found (not listed here): public, defined there, ``where``
    its first parameter; with its parameters."""
    from shadowgrpc.analysis import sql

    out = []
    for name, f in vars(sql).items():
        if name.startswith("_") or name in NOT_QUERIES or not inspect.isfunction(f) or f.__module__ != sql.__name__:
            continue
        params = list(inspect.signature(f).parameters)
        if params[:1] == ["where"]:
            out.append((name, params))
    return out


def check_queries(duck, spark, label: str, wd: str, ws: str) -> list[dict]:
    """Every query of sql.py: DuckDB with ``wd``, Spark with ``ws`` (the same but for --slice).
    Unordered results (no ORDER BY of their own) are compared sorted."""
    from shadowgrpc.analysis import sql

    out = []
    for name, params in sql_queries():
        f = getattr(sql, name)
        calls: list[tuple[str, tuple]] = []
        if params == ["where"]:
            calls = [(name, ())]
        elif params == ["where", "route", "target_index"]:
            calls = [(f"{name} {r}[{i}] {s.name}", (r, i)) for r, route in duck.routes().items() for i, s in enumerate(route.shadows)]
        else:
            out.append({"query": name, "rows": ("", ""), "types": "-", "s": (0.0, 0.0),
                        "diff": f"not checked: spark_check does not know how to call {name}({', '.join(params)})"})  # fmt: skip
            continue
        for title, extra in calls:
            qd, qs = f(wd, *extra), f(ws, *extra)
            title += "" if ordered(qd) else " (unordered)"
            compare = compare_rows if name in ROWS_QUERIES else compare_arrow
            out.append(compare(title, duck, spark, qd, qs))
    for r in out:
        r["filter"] = label
    return out


def check_report(paths: list[str], duck, spark, label: str, wd: str, ws: str) -> dict:
    from shadowgrpc.analysis import analyze
    from shadowgrpc.report import build_report
    from tests.pairlog_run import as_dict, diff

    t = time.perf_counter()
    a = as_dict(build_report(analyze(paths, wd, engine=duck)))
    td = time.perf_counter() - t
    t = time.perf_counter()
    b = as_dict(build_report(analyze(paths, ws, engine=spark)))
    ts = time.perf_counter() - t
    diffs = [d.replace(" online, ", " DuckDB, ").replace(" offline", " Spark") for d in diff(a, b)]
    compared = sum(int(s.get("compared", 0)) for r in a.get("routes", []) for s in r.get("shadows", []))
    truth = sum(int(s.get("ground_truth", {}).get("rows", 0)) for r in a.get("routes", []) for s in r.get("shadows", []))
    requests = sum(int(r.get("requests", 0)) for r in a.get("routes", []))
    return {"filter": label, "query": f"report ({requests} req, {compared} compared, {truth} truth rows)", "rows": ("", ""),
            "types": "-", "diff": "; ".join(diffs[:5]) + (f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""), "s": (td, ts),
            "empty": requests == 0}  # fmt: skip


def print_table(results: list[dict]) -> None:
    w = max(len(r["query"]) for r in results)
    fw = max(len(r["filter"]) for r in results)
    print(f"{'filter':<{fw}} {'query':<{w}} {'rows duck':>9} {'rows spark':>10} {'types':>6} {'duck s':>7} {'spark s':>8}  result")
    for r in results:
        rd, rs = r["rows"]
        td, ts = r["s"]
        res = "MATCH" if not r["diff"] else "DIFFER: " + r["diff"]
        print(f"{r['filter']:<{fw}} {r['query']:<{w}} {rd!s:>9} {rs!s:>10} {r['types']:>6} {td:7.2f} {ts:8.2f}  {res}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_all = time.perf_counter()
    if args.log:
        return check(args, pathlib.Path(args.log), t_all)
    if args.keep:
        make_log(pathlib.Path(args.keep) / "log", args.requests)
        return check(args, pathlib.Path(args.keep) / "log", t_all)
    with tempfile.TemporaryDirectory(prefix="shadowgrpc-spark-check-") as tmp:
        make_log(pathlib.Path(tmp) / "log", args.requests)
        return check(args, pathlib.Path(tmp) / "log", t_all)


def check(args: argparse.Namespace, log_dir: pathlib.Path, t_all: float) -> int:
    from shadowgrpc.analysis.engine import DuckEngine, LogError

    paths = [str(log_dir)]
    try:
        duck = DuckEngine(paths)
    except LogError as e:
        print(f"spark_check: {e}", file=sys.stderr)
        return 2
    t = time.perf_counter()
    from shadowgrpc.analysis.spark import SparkEngine

    spark = SparkEngine(paths, master=args.master)
    version = spark.spark.version
    t_spark = time.perf_counter() - t
    print(f"spark_check: Spark {version} ({args.master}) started and the views registered in {t_spark:.1f} s", file=sys.stderr, flush=True)
    results: list[dict] = []
    try:
        for label, wd, ws in filters(duck, args.where):
            print(f"spark_check: filter {label}: {wd or '(none)'}" + (f" (Spark: {ws})" if ws != wd else ""), file=sys.stderr, flush=True)
            results += check_queries(duck, spark, label, wd, ws)
            rep = check_report(paths, duck, spark, label, wd, ws)
            if rep.pop("empty") and not rep["diff"]:
                rep["diff"] = "no request under this filter: nothing was compared"
            results.append(rep)
    finally:
        spark.close()
    print_table(results)
    bad = [r for r in results if r["diff"]]
    q = [r for r in results if not r["query"].startswith("report")]
    print(
        f"\nspark_check: {len(q) - sum(1 for r in bad if r in q)}/{len(q)} query results and "
        f"{sum(1 for r in results if r not in q and not r['diff'])}/{len(results) - len(q)} reports equal on DuckDB and Spark "
        f"{version}; DuckDB {sum(r['s'][0] for r in results):.1f} s, Spark {sum(r['s'][1] for r in results):.1f} s "
        f"(+{t_spark:.1f} s start); {time.perf_counter() - t_all:.1f} s in all"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
