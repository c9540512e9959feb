"""The paired-prediction log's background writer: ``PairLog``.

The event loop hands it rows (``pair``, ``outcome``): an O(1) append to a bounded deque, no lock,
no I/O, never an exception; past ``max_queue_rows`` waiting rows (both tables, the batch being
written included) a row is shed and counted. A daemon thread finishes a file per partition every
``flush_rows`` rows or ``flush_s`` seconds, whichever comes first, so a crash (kill -9 included)
loses at most that window; every finished file is complete (temp name, then rename) and the next
start continues the table with new file numbers and removes the dead writer's temp files.

Faults: any OSError while writing (full disk, read-only or vanished folder, a file-size limit)
removes the temp file, logs one ERROR naming the path and the OS error, counts ``write_errors`` and
stops the log for good: later rows are only counted (``rows_dropped``), serving goes on. It does not
retry: a disk that filled once fills again, and an operator who fixed it restarts or reloads the
front (``stats.last_error`` and the counters say why rows are missing). Any other exception (a bug
in turning rows into Arrow) drops that batch, counts ``write_errors``, and the log goes on.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from operator import itemgetter

import numpy as np
import pyarrow as pa

from .._config_log import LogSettings
from ..config import Route
from ..snapshot import _route_config
from . import batch, files
from .redact import redact_table
from .schema import META_ROUTES, META_TABLE, META_VERSION, SCHEMA_VERSION, OutcomeRow, PairRow

log = logging.getLogger("shadowgrpc.pairlog")

CHUNK_ROWS = 1024  # rows turned into Arrow at a time: their short-lived objects die young (cheap GC)
RESCAN_S = 60.0  # the budget re-reads the tables this often (other writers' files)
BAD_ROWS_LOG_S = 60.0  # conversion errors are counted each time, logged at most this often
_ROUTE = itemgetter(0)


@dataclass(frozen=True)
class LogStats:
    rows_written: int = 0  # pairs rows in finished files
    rows_shed: int = 0  # rows (both tables) refused because max_queue_rows were waiting
    rows_dropped: int = 0  # rows (both tables) lost to a write fault, or handed in after close
    outcomes_written: int = 0
    files_written: int = 0
    files_deleted: int = 0  # by the disk budget
    bytes_deleted: int = 0
    bytes_on_disk: int = 0  # both tables, as the budget counts them
    write_errors: int = 0
    last_error: str = ""  # "" when fine
    stopped: bool = False  # a fault stopped the log, or it was closed
    rows_queued: int = 0  # waiting for the writer now (both tables)


class PairLog:
    """The log of one front process. ``pair`` / ``outcome`` on the event loop, ``start`` once,
    ``flush`` when a reader needs everything so far, ``close`` at shutdown."""

    def __init__(self, cfg: LogSettings, routes: tuple[Route, ...], writer_id: str | None = None) -> None:
        if not cfg.path:
            raise ValueError("PairLog needs [log] path")
        self.cfg = cfg
        self.root = os.path.abspath(cfg.path)
        self.host = files.writer_name(socket.gethostname())
        self._own_id = writer_id is None  # host-pid, taken again at start() (a worker forked after __init__)
        self.writer_id = files.writer_name(writer_id if writer_id is not None else f"{socket.gethostname()}-{os.getpid()}")
        self._routes = routes
        self._targets: dict[str, tuple] = {}
        self._info = batch.RouteInfo(routes)
        routes_json = json.dumps([_route_config(r) for r in routes]).encode()
        version = str(SCHEMA_VERSION).encode()
        self._meta = {
            files.PAIRS_DIR: {META_VERSION: version, META_TABLE: b"pairs", META_ROUTES: routes_json},
            files.OUTCOMES_DIR: {META_VERSION: version, META_TABLE: b"outcomes"},
        }
        self._inventory = files.Inventory(self.root, int(cfg.max_disk_mb) * 1024 * 1024)
        self._pairs: deque[PairRow] = deque()
        self._outcomes: deque[OutcomeRow] = deque()
        self._max_queue = int(cfg.max_queue_rows)
        self._flush_rows = int(cfg.flush_rows)
        # The writer wakes when a table holds this many rows (a queue shorter than flush_rows wakes
        # it when full, rather than shedding until flush_s).
        self._wake_at = max(1, min(self._flush_rows, self._max_queue))
        self._in_flight = 0  # rows taken by the writer, not yet written (counted as waiting)
        # Written by the event loop only:
        self._shed = 0
        self._dropped = 0
        # Written by the writer thread (or start / close) only:
        self._dropped_w = 0
        self._rows = self._outcomes_written = self._files = self._deleted = self._freed = 0
        self._errors = 0
        self._last_error = ""
        self._bad_logged = -1e9  # monotonic time of the last conversion error logged
        self._stopped = False
        self._seq = 0
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._flush_req = 0
        self._flush_done = 0
        self._closing = False
        self._thread: threading.Thread | None = None

    # --- the event loop's side: O(1), never blocks, never raises ---------------------------------

    def set_targets(self, route: str, targets) -> None:
        """The route's targets by index changed (auto-shadow windows): rows name them from now on.
        A new lookup table replaces the old one whole (the writer thread reads either)."""
        self._targets = {**self._targets, route: tuple(targets)}
        self._info = batch.RouteInfo(self._routes, self._targets)

    def set_routes(self, routes: tuple[Route, ...], targets: dict[str, tuple]) -> None:
        """A config reload (reload.py): the routes, and each route's targets by index, from now on
        (new files' metadata too). Each table is replaced whole (the writer thread reads either)."""
        self._routes, self._targets = tuple(routes), dict(targets)
        self._info = batch.RouteInfo(self._routes, self._targets)
        routes_json = json.dumps([_route_config(r) for r in self._routes]).encode()
        self._meta = {**self._meta, files.PAIRS_DIR: {**self._meta[files.PAIRS_DIR], META_ROUTES: routes_json}}

    def pair(self, row: PairRow) -> None:
        if self._stopped:
            self._dropped += 1
            return
        q = self._pairs
        if len(q) + len(self._outcomes) + self._in_flight >= self._max_queue:
            self._shed += 1
            return
        q.append(row)
        if len(q) == self._wake_at:
            self._wake.set()

    def outcome(self, row: OutcomeRow) -> None:
        if self._stopped:
            self._dropped += 1
            return
        q = self._outcomes
        if len(q) + len(self._pairs) + self._in_flight >= self._max_queue:
            self._shed += 1
            return
        q.append(row)
        if len(q) == self._wake_at:
            self._wake.set()

    @property
    def stats(self) -> LogStats:
        return LogStats(
            rows_written=self._rows, rows_shed=self._shed, rows_dropped=self._dropped + self._dropped_w,
            outcomes_written=self._outcomes_written, files_written=self._files, files_deleted=self._deleted,
            bytes_deleted=self._freed, bytes_on_disk=self._inventory.total, write_errors=self._errors,
            last_error=self._last_error, stopped=self._stopped,
            rows_queued=len(self._pairs) + len(self._outcomes) + self._in_flight,
        )  # fmt: skip

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the folders, remove dead writers' temp files (this host), start the writer thread.
        A folder that cannot be created stops the log (stats.last_error); nothing is raised."""
        if self._thread is not None or self._stopped:
            return
        if self._own_id:
            self.writer_id = files.writer_name(f"{socket.gethostname()}-{os.getpid()}")
        try:
            for t in files.TABLES:
                os.makedirs(os.path.join(self.root, t), exist_ok=True)
            self._seq, removed = self._inventory.scan(self.writer_id, self.host)
        except OSError as e:
            self._fault(e, self.root)
            return
        if removed:
            log.info("log.path %s: removed %d temp file(s) of dead writers", self.root, len(removed))
        self._thread = threading.Thread(target=self._run, name="shadowgrpc-pairlog", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> None:
        """Finish everything queued so far into complete files (waits at most ``timeout``)."""
        t = self._thread
        if t is None or not t.is_alive():
            return
        with self._cond:
            self._flush_req += 1
            req = self._flush_req
        self._wake.set()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._flush_done < req and t.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(left, 0.1))

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, finish the files and stop the thread (waits at most ``timeout``);
        rows handed in afterwards are counted as dropped."""
        t = self._thread
        self._closing = True
        if t is not None:
            self._wake.set()
            t.join(timeout)
            if t.is_alive() and not self._last_error:
                self._last_error = f"log.path {self.root}: the writer did not finish within {timeout:g} s at close"
                log.error("%s", self._last_error)
        self._stopped = True
        self._dropped_w += self._discard()

    # --- the writer thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        flush_s = float(self.cfg.flush_s)
        next_flush = time.monotonic() + flush_s
        try:
            while not self._stopped:
                self._wake.clear()
                now = time.monotonic()
                closing = self._closing
                req = self._flush_req
                if closing or req > self._flush_done or now >= next_flush:
                    self._drain(minimum=1)
                    next_flush = time.monotonic() + flush_s
                    with self._cond:
                        self._flush_done = max(self._flush_done, req)
                        self._cond.notify_all()
                    if closing:
                        return
                elif len(self._pairs) >= self._wake_at or len(self._outcomes) >= self._wake_at:
                    self._drain(minimum=self._wake_at)  # full files only; the timer keeps its beat, so
                    # a quiet table (outcomes) still gets its file within flush_s of a busy one's
                else:
                    self._wake.wait(max(0.0, next_flush - now))
        except BaseException as e:  # a bug: never let the thread die silently
            self._errors += 1
            self._last_error = f"log.path {self.root}: writer failed: {type(e).__name__}: {e}"
            log.exception("%s", self._last_error)
            self._stopped = True
            self._dropped_w += self._discard()
        finally:
            with self._cond:
                self._cond.notify_all()

    def _drain(self, minimum: int) -> None:
        """Write the rows queued now, ``flush_rows`` at a time, in chunks of ``minimum`` or more. Rows
        that come meanwhile wait for the next call: a table that fills faster than the disk takes it
        never starves the other one, nor the timer."""
        for q, table in ((self._pairs, files.PAIRS_DIR), (self._outcomes, files.OUTCOMES_DIR)):
            todo = len(q)
            while not self._stopped:
                n = min(todo, self._flush_rows)
                if n == 0 or n < minimum:
                    break
                todo -= n
                popleft = q.popleft
                rows = [popleft() for _ in range(n)]
                self._in_flight = n
                try:
                    self._write(table, rows)
                finally:
                    self._in_flight = 0
        if not self._stopped and time.monotonic() - self._inventory.scanned > RESCAN_S:
            try:
                self._inventory.scan(self.writer_id, self.host)
            except OSError as e:
                log.warning("log.path %s: cannot re-read the tables for the disk budget: %s", self.root, e)
            self._enforce_budget()

    def _write(self, table: str, rows: list) -> None:
        """One file per partition of ``rows``. An OSError stops the log (``_fault``); anything else
        (rows the conversion cannot take) drops those rows, counted, and the log goes on."""
        pairs = table == files.PAIRS_DIR
        try:
            groups = _partitions(rows, 4 if pairs else 1, pairs)
        except Exception as e:
            self._bad_rows(table, len(rows), e)
            return
        left = len(rows)
        for (route, hour), part in groups:
            name = files.file_name(self.writer_id, self._seq)
            try:
                directory = files.partition_dir(self.root, table, route, hour)
                arrow = self._arrow(part, pairs).replace_schema_metadata(self._meta[table])
            except Exception as e:
                self._bad_rows(table, len(part), e)
                left -= len(part)
                continue
            try:
                size = files.write_parquet(directory, name, arrow, files.PAIRS_OPTIONS if pairs else files.OUTCOMES_OPTIONS)
            except OSError as e:
                self._dropped_w += left
                self._fault(e, os.path.join(directory, name))
                return
            except Exception as e:  # pyarrow refusing the table: a bug, not the disk
                self._bad_rows(table, len(part), e)
                left -= len(part)
                continue
            self._seq += 1
            self._files += 1
            left -= len(part)
            if pairs:
                self._rows += len(part)
            else:
                self._outcomes_written += len(part)
            self._inventory.add(os.path.join(directory, name), size)
        self._enforce_budget()

    def _bad_rows(self, table: str, n: int, e: Exception) -> None:
        self._errors += 1
        self._dropped_w += n
        self._last_error = f"log.path {self.root}: cannot convert {n} {table} rows: {type(e).__name__}: {e}"
        now = time.monotonic()
        if now - self._bad_logged >= BAD_ROWS_LOG_S:  # a bug that hits every batch logs once a minute
            self._bad_logged = now
            log.error("%s (these rows are dropped; the log goes on)", self._last_error, exc_info=e)

    def _arrow(self, rows: list, pairs: bool) -> pa.Table:
        if not pairs:
            return batch.outcomes_table(rows, self.writer_id)
        parts = [batch.pairs_table(rows[i : i + CHUNK_ROWS], self.writer_id, self._info, self.cfg.sample_rate)
                 for i in range(0, len(rows), CHUNK_ROWS)]  # fmt: skip
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        return table if self.cfg.redact is None else redact_table(table, self.cfg.redact)  # [log.redact]: before any file

    def _enforce_budget(self) -> None:
        count, freed, failed = self._inventory.enforce()
        self._deleted += count
        self._freed += freed
        for path in failed:
            log.warning("log.path %s: disk budget: cannot delete %s", self.root, path)

    def _fault(self, e: OSError, path: str) -> None:
        reason = os.strerror(e.errno) if e.errno else str(e)
        self._errors += 1
        self._last_error = f"log.path {self.root}: cannot write {path}: {reason}"
        log.error("%s; the paired log is stopped (rows are counted as dropped, serving goes on)", self._last_error)
        self._stopped = True
        self._dropped_w += self._discard()
        with self._cond:
            self._cond.notify_all()

    def _discard(self) -> int:
        n = 0
        for q in (self._pairs, self._outcomes):
            while q:
                try:
                    q.popleft()
                except IndexError:
                    break
                n += 1
        return n


def _partitions(rows: list, time_at: int, by_route: bool) -> list[tuple[tuple[str | None, int], list]]:
    """Rows grouped by (route, hour since the epoch, UTC), in arrival order within a group."""
    t = batch.arrivals(rows, time_at)
    bad = ~np.isfinite(t)
    if bad.any():
        t[bad] = time.time()
    hours = np.floor(t / 3600.0).astype(np.int64)
    routes = list(map(_ROUTE, rows)) if by_route else None
    first_route = routes[0] if routes else None
    if hours.min() == hours.max() and (routes is None or routes.count(first_route) == len(routes)):
        return [((first_route, int(hours[0])), rows)]
    groups: dict[tuple[str | None, int], list] = {}
    for key, row in zip(zip(routes or [None] * len(rows), hours.tolist()), rows):
        groups.setdefault(key, []).append(row)
    return list(groups.items())
