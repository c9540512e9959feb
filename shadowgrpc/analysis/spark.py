"""Spark SQL over the paired log: the engine ``make spark-check`` runs the queries of sql.py on,
unchanged, to show they give DuckDB's answer (benchmarks/spark_check.py).

The same interface as ``DuckEngine``: ``rows(query)``, ``arrow(query)``, ``routes()``, and the
same two views, ``pairs`` and ``outcomes``, over the same files (those ``DuckEngine`` reads),
with Hive partition discovery from each log folder's table root (``basePath``) and the partition
columns kept as strings, as DuckDB keeps them. A local session (``local[2]`` by default) on
loopback only, no UI, its session time zone UTC (``TIMESTAMP '...'`` literals are UTC, as the
``--since``/``--until`` predicates mean them). Needs the ``spark`` extra (pyspark) and Java 17+.
``rows()`` goes through Arrow like ``arrow()``, so its values are DuckDB's: timestamps aware (UTC),
structs as dicts. Spark older than 4.3 reads the files with its row reader (VECTORIZED_BSS).

Only the SQL runs in Spark: rebuild collects each target's compared rows to this process and
feeds the sketches there. On a cluster, point Spark at the log folder directly (the README's
Spark example) for SQL of your own; this class is for the check and for the offline report with
Spark in one process:

    from shadowgrpc.analysis import analyze
    from shadowgrpc.analysis.spark import SparkEngine
    with SparkEngine([log]) as eng:
        state = analyze([log], where, engine=eng)
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa

from ..config import Route
from ..pairlog.schema import OUTCOMES
from .engine import outcome_files, pair_files, routes_from_metadata
from .sql import FIRST_ROW

_SPARK_TYPES = {pa.string(): "STRING", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN"}


def _ddl_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_list(t):
        return f"ARRAY<{_ddl_type(t.value_type)}>"
    return _SPARK_TYPES[t]


def ddl(schema: pa.Schema) -> str:
    """A Spark SQL schema string for an Arrow schema of the types the outcomes table uses."""
    return ", ".join(f"{f.name} {_ddl_type(f.type)}" for f in schema)


CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    "spark.sql.shuffle.partitions": "4",  # a few hundred thousand rows, not the default 200 tasks
    "spark.driver.memory": "2g",
    "spark.ui.showConsoleProgress": "false",
}
# The vectorized Parquet reader of Spark before VECTORIZED_BSS refuses BYTE_STREAM_SPLIT, the
# encoding of the log's float columns (pairlog/files.py): "Unsupported encoding:
# BYTE_STREAM_SPLIT" (seen on 3.5.7, 4.0.1, 4.1.0, 4.2.1; 4.3.0 reads it). Its row reader (parquet-mr) decodes it.
VECTORIZED_BSS = (4, 3)
ROW_READER = {"spark.sql.parquet.enableVectorizedReader": "false"}


def _version(v: str) -> tuple[int, int]:
    """(major, minor) of a Spark version string ("4.2.1", "3.5.0-SNAPSHOT")."""
    major, minor = (v.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _by_root(paths: list[str], files: list[str], table: str) -> list[tuple[str, list[str]]]:
    """The files grouped by the table root they lie under (PATH/pairs, PATH/outcomes): Spark's
    ``basePath`` is one folder per read."""
    out = []
    for p in dict.fromkeys(paths):
        root = os.path.join(p, table)
        mine = [f for f in files if f.startswith(root + os.sep)]
        if mine:
            out.append((root, mine))
    return out


class SparkEngine:
    """The log's tables as Spark SQL temporary views ``pairs`` and ``outcomes``."""

    def __init__(
        self,
        paths: list[str],
        master: str = "local[2]",
        conf: dict[str, str] | None = None,
        spark: Any = None,
        outcome_paths: list[str] | None = None,
    ) -> None:
        """``conf``: more Spark settings (over CONF); ``spark``: use this session instead of starting
        one (it is then not stopped by close(); on a Spark older than VECTORIZED_BSS its session
        gets ROW_READER, without which the files cannot be read); ``outcome_paths``: as
        DuckEngine's."""
        self.paths = paths
        self.files = pair_files(paths)
        if spark is None:
            from pyspark.sql import SparkSession

            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # the JVM's own address: loopback too
            b = SparkSession.builder.master(master).appName("shadowgrpc-analysis")
            for k, v in {**CONF, **(conf or {})}.items():
                b = b.config(k, v)
            spark = b.getOrCreate()
            spark.sparkContext.setLogLevel("ERROR")
            self._own = True
        else:
            self._own = False
        self.spark = spark
        if _version(spark.version) < VECTORIZED_BSS:
            for k, v in ROW_READER.items():
                spark.conf.set(k, v)
        self._register("pairs", _by_root(paths, self.files, "pairs"))
        opaths = paths if outcome_paths is None else outcome_paths
        outs = _by_root(opaths, outcome_files(opaths), "outcomes")
        if outs:
            self._register("outcomes", outs)
        else:
            # no outcomes (yet): an empty view, as DuckDB's
            spark.createDataFrame([], ddl(OUTCOMES)).createOrReplaceTempView("outcomes")

    def _register(self, view: str, roots: list[tuple[str, list[str]]]) -> None:
        df = None
        for root, files in roots:
            part = self.spark.read.option("basePath", root).option("mergeSchema", "true").parquet(*files)
            df = part if df is None else df.unionByName(part, allowMissingColumns=True)
        if view == "pairs":  # first_row on every row, as DuckEngine's view (version-1 files lack it)
            from pyspark.sql import functions as F

            df = df.withColumn("first_row", F.expr(FIRST_ROW if "first_row" in df.columns else "target_index = 0"))
        df.createOrReplaceTempView(view)

    def rows(self, query: str) -> list[tuple]:
        """As DuckDB's fetchall: through Arrow, so timestamps come back aware (UTC) and structs as
        dicts (collect() gives naive local times and Row objects)."""
        t = self.arrow(query)
        return list(zip(*(c.to_pylist() for c in t.columns))) if t.num_columns else []

    def arrow(self, query: str) -> pa.Table:
        df = self.spark.sql(query)
        if hasattr(df, "toArrow"):  # pyspark 4
            return df.toArrow()
        from pyspark.sql.pandas.types import to_arrow_schema  # pyspark 3.5: what 4's toArrow does

        schema = to_arrow_schema(df.schema)
        batches = df._collect_as_arrow()
        return pa.Table.from_batches(batches).cast(schema) if batches else schema.empty_table()

    def routes(self) -> dict[str, Route]:
        return routes_from_metadata(self.files)

    def close(self) -> None:
        if self._own:
            self.spark.stop()

    def __enter__(self) -> SparkEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
