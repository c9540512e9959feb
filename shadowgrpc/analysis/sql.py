"""The analysis as SQL: the queries that read the paired-prediction log, written in the subset
that DuckDB and Spark SQL both run unchanged (``make spark-check`` runs them on both).

Each engine exposes two relations, ``pairs`` and ``outcomes`` (the two Hive-partitioned Parquet
tables, pairlog/schema.py), and runs these queries over them. The figures that are plain counts
come out of SQL grouped; the sketches (latency, drift histograms, paired agreement, ground-truth
scores) are fed in Python from the rows the queries select, by the same code the live service runs
(rebuild.py), which is why the offline report equals the online one.

``first_row`` marks each request's first row (its lowest ``target_index``: auto-shadow's windows
make that any index), the row its route-level figures are counted from. The engines' ``pairs``
views give it on every row: version-1 files lack the column, and there it is ``target_index = 0``
(``FIRST_ROW``, applied by the view, engine.py and spark.py).

``where`` is a SQL predicate over the pairs columns (``--where``, ``--since``, ``--until``), applied
once in the ``fp`` (filtered pairs) common table expression that every query reads.
"""

from __future__ import annotations

# Identifiers used below are non-reserved in both dialects; nothing here quotes.

FIRST_ROW = "coalesce(first_row, target_index = 0)"  # the column, or what it was in version-1 files


def filtered(where: str) -> str:
    return f"fp AS (SELECT * FROM pairs WHERE {where or 'TRUE'})"


def route_counts(where: str) -> str:
    """Route-level counts: one row per request (its first row)."""
    return (
        f"WITH {filtered(where)} "
        "SELECT route, live_status, mirror, count(*) AS n FROM fp WHERE first_row "
        "GROUP BY route, live_status, mirror ORDER BY route, live_status, mirror"
    )


def target_counts(where: str) -> str:
    """Per shadow target: what became of each request (sampled, shed, down, sent -> status -> pair)."""
    return (
        f"WITH {filtered(where)} "
        "SELECT route, target_index, mirror, sampled, shadow_status, pair, count(*) AS n FROM fp "
        "GROUP BY route, target_index, mirror, sampled, shadow_status, pair "
        "ORDER BY route, target_index, mirror, sampled, shadow_status NULLS LAST, pair NULLS LAST"  # both engines: Spark puts NULLs first by default
    )


def live_latency(where: str) -> str:
    return (
        f"WITH {filtered(where)} "
        "SELECT route, live_latency_s, front_added_s FROM fp WHERE first_row AND live_status = 'OK'"
    )


def targets() -> str:
    """Each (route, target_index) of the log with the target its rows name: the comparison windows
    the routes' config does not list (auto-shadow's) are known by these. Every row, whatever the
    filter: a window shows (with what the filter leaves of it) as a configured target does."""
    return (
        "SELECT route, target_index, max(target), max(shadow_model), max(shadow_version), max(sample_rate) "
        "FROM pairs GROUP BY route, target_index ORDER BY route, target_index"
    )


def shadow_latency(where: str) -> str:
    return (
        f"WITH {filtered(where)} "
        "SELECT route, target_index, shadow_latency_s FROM fp WHERE shadow_status = 'OK'"
    )


# The first usable outcome per request id (later ones are duplicates), and how many distinct
# compared requests carry each id (more than one: the id was reused, nothing is joined).
_FIRST_OUTCOMES = (
    "fo AS (SELECT request_id, true_labels, true_values FROM ("
    "SELECT request_id, true_labels, true_values, "
    "row_number() OVER (PARTITION BY request_id ORDER BY received, writer) AS rn "
    "FROM outcomes WHERE status <> 'rejected') t WHERE rn = 1)"
)
_ID_REQUESTS = (  # only ids some outcome names: grouping every compared request would cost more
    "ids AS (SELECT request_id, count(DISTINCT concat(writer, ':', CAST(request_seq AS STRING))) AS id_requests "
    "FROM fp WHERE pair = 'compared' AND request_id <> '' AND request_id IN (SELECT request_id FROM outcomes) "
    "GROUP BY request_id)"
)


def compared(where: str, route: str, target_index: int) -> str:
    """Every compared pair of one shadow target: both answers, the slice buckets, and the keys that
    give the order the front compared them in (sorting the keys alone is the reader's job: an
    ORDER BY here would carry the answers through the sort)."""
    return (
        f"WITH {filtered(where)} "
        "SELECT request_id, shadow_answered, writer, request_seq, slice_buckets, live_outputs, shadow_outputs FROM fp "
        f"WHERE pair = 'compared' AND route = {string(route)} AND target_index = {int(target_index)}"
    )


def joined_outcomes(where: str) -> str:
    """The first usable outcome of each id that compared requests carry, with how many distinct
    requests carry it (more than one: reused, not joined). Joined to the pairs by the reader."""
    return (
        f"WITH {filtered(where)}, {_FIRST_OUTCOMES}, {_ID_REQUESTS} "
        "SELECT fo.request_id, fo.true_labels, fo.true_values, ids.id_requests "
        "FROM fo JOIN ids ON fo.request_id = ids.request_id"
    )


def string(s: str) -> str:
    """A SQL string literal both dialects read alike (quotes doubled; Spark would read a backslash
    as an escape, so names with one are refused)."""
    if "\\" in s:
        raise ValueError(f"route names with a backslash are not supported in SQL literals: {s!r}")
    return lit(s)


def lit(s: str) -> str:
    """A DuckDB string literal (quotes doubled): file paths and settings, never sent to Spark."""
    return "'" + s.replace("'", "''") + "'"


def files_sql(files: list[str], columns: str = "*") -> str:
    """DuckDB: ``columns`` of these log files as one table (partition columns from the Hive paths,
    kept as strings)."""
    listed = ", ".join(lit(f) for f in files)
    return f"SELECT {columns} FROM read_parquet([{listed}], hive_partitioning = true, hive_types_autocast = false, union_by_name = true)"


def outcome_counts(where: str) -> str:
    """Outcome messages: usable ones, distinct ids among them, those whose id no compared request
    carries (unknown) or several do (reused), and the rejected ones by reason."""
    return (
        f"WITH {filtered(where)}, {_ID_REQUESTS}, "
        "ok AS (SELECT request_id FROM outcomes WHERE status <> 'rejected'), "
        "d AS (SELECT DISTINCT request_id FROM ok) "
        "SELECT 'received' AS what, '' AS reason, count(*) AS n FROM ok "
        "UNION ALL SELECT 'distinct', '', count(*) FROM d "
        "UNION ALL SELECT 'unknown', '', count(*) FROM d LEFT JOIN ids ON d.request_id = ids.request_id WHERE ids.request_id IS NULL "
        "UNION ALL SELECT 'reused', '', count(*) FROM d JOIN ids ON d.request_id = ids.request_id WHERE ids.id_requests > 1 "
        "UNION ALL SELECT 'rejected', coalesce(reason, ''), count(*) FROM outcomes WHERE status = 'rejected' GROUP BY reason"
    )


def span(where: str) -> str:
    """The selected requests' first and last arrival."""
    return f"WITH {filtered(where)} SELECT min(arrival), max(arrival), count(*) FROM fp"


def time_window(since: str | None, until: str | None) -> list[str]:
    """--since / --until as predicates on the request's arrival (UTC timestamps, ISO 8601)."""
    out = []
    if since:
        out.append(f"arrival >= TIMESTAMP '{_literal(since)}'")
    if until:
        out.append(f"arrival < TIMESTAMP '{_literal(until)}'")
    return out


def _literal(s: str) -> str:
    if "'" in s or "\\" in s:
        raise ValueError(f"not a timestamp: {s!r}")
    return s
