"""Spark SQL over the paired log: the engine ``make spark-check`` runs the queries of sql.py on,
unchanged, to show they give DuckDB's answer (benchmarks/spark_check.py).

The same interface as ``DuckEngine``: ``rows(query)``, ``arrow(query)``, ``routes()``, and the
same two views, ``pairs`` and ``outcomes``, over the same files (those ``DuckEngine`` reads),
with Hive partition discovery from each log folder's table root (``basePath``) and the partition
columns kept as strings, as DuckDB keeps them. A local session (``local[2]`` by default) on
loopback only, no UI, its session time zone UTC (``TIMESTAMP '...'`` literals are UTC, as the
``--since``/``--until`` predicates mean them). Needs the ``spark`` extra (pyspark) and Java 17+.

On a cluster, point Spark at the log folder directly (the README's Spark example); this class is
for checking and for running the offline report with Spark in one process:

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

# Spark SQL types of the outcomes table, for a log that has none yet (an empty view, as DuckDB's).
_OUTCOMES_DDL = "request_id STRING, writer STRING, received TIMESTAMP, true_labels ARRAY<BIGINT>, true_values ARRAY<DOUBLE>, status STRING, reason STRING"

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

    def __init__(self, paths: list[str], master: str = "local[2]", conf: dict[str, str] | None = None, spark: Any = None) -> None:
        self.paths = paths
        self.files = pair_files(paths)
        if spark is None:
            from pyspark.sql import SparkSession

            b = SparkSession.builder.master(master).appName("shadowgrpc-analysis")
            for k, v in {**CONF, **(conf or {})}.items():
                b = b.config(k, v)
            spark = b.getOrCreate()
            spark.sparkContext.setLogLevel("ERROR")
            self._own = True
        else:
            self._own = False
        self.spark = spark
        self._register("pairs", _by_root(paths, self.files, "pairs"))
        outs = _by_root(paths, outcome_files(paths), "outcomes")
        if outs:
            self._register("outcomes", outs)
        else:
            spark.createDataFrame([], _OUTCOMES_DDL).createOrReplaceTempView("outcomes")
        assert [f.name for f in OUTCOMES] == [c.split()[0] for c in _OUTCOMES_DDL.split(", ")]

    def _register(self, view: str, roots: list[tuple[str, list[str]]]) -> None:
        df = None
        for root, files in roots:
            part = self.spark.read.option("basePath", root).option("mergeSchema", "true").parquet(*files)
            df = part if df is None else df.unionByName(part, allowMissingColumns=True)
        df.createOrReplaceTempView(view)

    def rows(self, query: str) -> list[tuple]:
        return [tuple(r) for r in self.spark.sql(query).collect()]

    def arrow(self, query: str) -> pa.Table:
        return self.spark.sql(query).toArrow()

    def routes(self) -> dict[str, Route]:
        return routes_from_metadata(self.files)

    def close(self) -> None:
        if self._own:
            self.spark.stop()

    def __enter__(self) -> SparkEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
