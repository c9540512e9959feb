"""DuckDB over the paired log: the two tables as views, the routes' config from the files'
metadata. (Spark runs the same queries: benchmarks/../spark_check, see ``make spark-check``.)"""

from __future__ import annotations

import glob
import json
import os
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from ..config import Route
from ..pairlog.schema import META_ROUTES, META_TABLE, META_VERSION, OUTCOMES, SCHEMA_VERSION
from ..snapshot import _unroute_config
from .sql import FIRST_ROW, files_sql


MATERIALIZE_BYTES = 1 << 30
SMALL_FILE_BYTES = 1 << 20  # average file size below which the files are read once into tables


class LogError(ValueError):
    """The paths hold no readable paired log, or a file of a newer schema."""


def pair_files(paths: list[str]) -> list[str]:
    files: list[str] = []
    for p in paths:
        if not os.path.isdir(p):
            raise LogError(f"{p}: not a folder (give the [log] path: the folder holding pairs/ and outcomes/)")
        files += glob.glob(os.path.join(glob.escape(p), "pairs", "**", "*.parquet"), recursive=True)
    if not files:
        raise LogError(f"no paired-log files under {', '.join(paths)} (expected PATH/pairs/route=*/date=*/hour=*/*.parquet)")
    return sorted(files)


def outcome_files(paths: list[str]) -> list[str]:
    files: list[str] = []
    for p in paths:
        files += glob.glob(os.path.join(glob.escape(p), "outcomes", "**", "*.parquet"), recursive=True)
    return sorted(files)


def readable(files: list[str], table: bytes) -> tuple[list[str], list[str]]:
    """The files whose Parquet footer reads and says they are this table of the log, and why the
    others are left out ("PATH: reason"): one torn or foreign file never stops an analysis."""
    ok, bad = [], []
    for f in files:
        try:
            meta = pq.read_metadata(f).metadata or {}
        except (OSError, pa.ArrowException) as e:
            bad.append(f"{f}: not a readable Parquet file ({e})")
            continue
        if meta.get(META_TABLE) not in (table, None):
            bad.append(f"{f}: a {meta.get(META_TABLE, b'?').decode(errors='replace')} file, not {table.decode()}")
            continue
        ok.append(f)
    return ok, bad


def _route_of(path: str) -> str:
    for part in path.split(os.sep):
        if part.startswith("route="):
            return unquote(part[len("route=") :])
    return ""


def routes_from_metadata(files: list[str]) -> dict[str, Route]:
    """Each route's config as the newest file of its partition recorded it (by modification time)."""
    newest: dict[str, tuple[float, str]] = {}
    for f in files:
        r = _route_of(f)
        t = os.path.getmtime(f)
        if r not in newest or t > newest[r][0]:
            newest[r] = (t, f)
    found: dict[str, tuple[int, Route]] = {}  # route -> (its position in the config, its config)
    for r, (_, f) in newest.items():
        meta = pq.read_schema(f).metadata or {}
        v = int(meta.get(META_VERSION, b"0") or 0)
        if v > SCHEMA_VERSION:
            raise LogError(f"{f}: schema version {v} is newer than this shadowgrpc reads ({SCHEMA_VERSION}): upgrade shadowgrpc")
        for i, d in enumerate(json.loads(meta.get(META_ROUTES, b"[]"))):
            route = _unroute_config(d)  # its auto-shadow policy included (windows offline take their settings from it)
            if route.model == r:
                found[r] = (i, route)
    return {r: route for r, (_, route) in sorted(found.items(), key=lambda kv: (kv[1][0], kv[0]))}  # the config's order


def pairs_sql(con, files: list[str]) -> str:
    """DuckDB: the pairs files as one table (``files_sql``) with ``first_row`` on every row: from
    version-1 files, which lack the column, it is ``target_index = 0`` (sql.FIRST_ROW)."""
    raw = files_sql(files)
    if "first_row" in {r[0] for r in con.execute(f"DESCRIBE {raw}").fetchall()}:
        return f"SELECT * REPLACE ({FIRST_ROW} AS first_row) FROM ({raw})"
    return f"SELECT *, target_index = 0 AS first_row FROM ({raw})"


class DuckEngine:
    """The log's tables as DuckDB views ``pairs`` and ``outcomes`` (partition columns from the
    Hive paths, kept as strings)."""

    def __init__(self, paths: list[str], threads: int | None = None, outcome_paths: list[str] | None = None) -> None:
        """``outcome_paths``: where the outcomes table is read (default: ``paths``), e.g. a replay's
        own pairs joined with the original run's outcomes."""
        import duckdb

        self.paths = paths
        self.files, self.skipped = readable(pair_files(paths), b"pairs")
        if not self.files:
            raise LogError(f"no readable paired-log file under {', '.join(paths)}: {'; '.join(self.skipped[:3])}")
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")  # --since/--until and TIMESTAMP literals are UTC
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        # The file list is fixed now: files a running writer finishes later are not half-seen.
        # Many small files (short flush_s, light traffic) are read once into DuckDB tables, since
        # opening a file costs every query ~20 ms; big files are read through views, each query
        # reading only its columns (copying the answers into a table costs more than it saves).
        outs, bad = readable(outcome_files(paths if outcome_paths is None else outcome_paths), b"outcomes")
        self.skipped += bad
        files = self.files + outs
        size = sum(os.path.getsize(f) for f in files)
        kind = "TEMP TABLE" if len(files) > 16 and size <= SMALL_FILE_BYTES * len(files) and size <= MATERIALIZE_BYTES else "VIEW"
        self.con.execute(f"CREATE {kind} pairs AS {pairs_sql(self.con, self.files)}")
        if outs:
            self.con.execute(f"CREATE {kind} outcomes AS {files_sql(outs)}")
        else:
            self._empty = pa.table({f.name: pa.array([], f.type) for f in OUTCOMES})
            self.con.register("outcomes", self._empty)

    def rows(self, query: str) -> list[tuple]:
        return self.con.execute(query).fetchall()

    def arrow(self, query: str) -> pa.Table:
        rel = self.con.sql(query)
        return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()  # duckdb 2 / 1.x

    def routes(self) -> dict[str, Route]:
        return routes_from_metadata(self.files)
