"""Offline analysis of the paired-prediction log: the same report and verdict as the live
service, computed from the Parquet files (DuckDB here; the SQL runs unchanged on Spark SQL).

    state = analyze(["/var/lib/shadowgrpc/pairs"], where="arrival >= TIMESTAMP '2026-12-06 10:00'")
    report = build_report(state)

sql.py: the queries; engine.py: DuckDB views over the files and the routes' config from their
metadata; rebuild.py: rows -> the comparison state; tensors.py: logged tensors -> numpy.
"""

from __future__ import annotations

from ..config import Route
from ..state import FrontState
from .engine import DuckEngine, LogError
from .rebuild import rebuild
from .sql import string, time_window

__all__ = ["DuckEngine", "LogError", "analyze", "slice_filter", "where_clause"]


def where_clause(where: list[str] | None = None, since: str | None = None, until: str | None = None) -> str:
    """The predicates of --where (each in parentheses), --since and --until, ANDed."""
    parts = [f"({w})" for w in where or [] if w.strip()] + time_window(since, until)
    return " AND ".join(parts)


def analyze(
    paths: list[str],
    where: str = "",
    routes: dict[str, Route] | None = None,
    progress=None,
    engine=None,
    outcome_paths: list[str] | None = None,
    slices: list[str] | None = None,
) -> FrontState:
    """The comparison state of the logged rows matching ``where``. ``routes`` overrides the
    routes' config the files carry (a config file's routes, by model name); ``outcome_paths``:
    read the outcomes from these logs instead of ``paths``; ``slices``: "NAME=BUCKET" filters
    (slice_filter)."""
    eng = engine if engine is not None else DuckEngine(paths, outcome_paths=outcome_paths)
    known = eng.routes()
    if routes:
        known.update(routes)
    for sl in slices or []:
        where = " AND ".join(x for x in (where, slice_filter(known, sl)) if x)
    return rebuild(eng, known, where, progress)


def slice_filter(routes: dict[str, Route], spec: str) -> str:
    """``NAME=BUCKET`` (a configured slice and one of its bucket labels) as a predicate: requests
    of the routes with that slice whose rows all fall in the bucket (a request whose rows straddle
    buckets is left out). DuckDB's list functions: analyze's own filter, not part of sql.py."""
    name, sep, bucket = spec.partition("=")
    if not sep or not name or not bucket:
        raise ValueError(f"--slice: expected NAME=BUCKET, got {spec!r}")
    preds, known = [], []
    for model, r in routes.items():
        for i, sl in enumerate(r.slices):
            if sl.name != name:
                continue
            known += [f"{model}: {', '.join(sl.buckets)}"]
            if bucket in sl.buckets:
                b = sl.buckets.index(bucket)
                col = f"slice_buckets[{i + 1}]"
                preds.append(f"(route = {string(model)} AND len({col}) > 0 AND list_min({col}) = {b} AND list_max({col}) = {b})")
    if not preds:
        where = f"; buckets: {'; '.join(known)}" if known else "; no route has a slice of that name"
        raise ValueError(f"--slice {spec}: no such slice bucket{where}")
    return "(" + " OR ".join(preds) + ")"
