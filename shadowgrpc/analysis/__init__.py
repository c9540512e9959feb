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
from .sql import time_window

__all__ = ["LogError", "analyze", "where_clause"]


def where_clause(where: list[str] | None = None, since: str | None = None, until: str | None = None) -> str:
    """The predicates of --where (each in parentheses), --since and --until, ANDed."""
    parts = [f"({w})" for w in where or [] if w.strip()] + time_window(since, until)
    return " AND ".join(parts)


def analyze(
    paths: list[str], where: str = "", routes: dict[str, Route] | None = None, progress=None, engine=None, outcome_paths: list[str] | None = None
) -> FrontState:
    """The comparison state of the logged rows matching ``where``. ``routes`` overrides the
    routes' config the files carry (a config file's routes, by model name); ``outcome_paths``:
    read the outcomes from these logs instead of ``paths``."""
    eng = engine if engine is not None else DuckEngine(paths, outcome_paths=outcome_paths)
    known = eng.routes()
    if routes:
        known.update(routes)
    state = rebuild(eng, known, where, progress)
    return state
