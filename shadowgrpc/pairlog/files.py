"""The log's files on disk: Hive partition paths, file names, the temp-then-rename write, the
Parquet options, the disk budget's inventory and the clean-up of dead writers' temp files.

Layout (schema.py): ``PATH/pairs/route=<model>/date=YYYY-MM-DD/hour=HH/part-<writer>-<n>.parquet``
and ``PATH/outcomes/date=.../hour=.../part-<writer>-<n>.parquet``. A file is written as
``.<name>.tmp`` (hidden, and not ``*.parquet``: no reader globs it), fsynced, then renamed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections import deque
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from .schema import OUTCOMES, PAIRS

PAIRS_DIR = "pairs"
OUTCOMES_DIR = "outcomes"
TABLES = (PAIRS_DIR, OUTCOMES_DIR)
PREFIX = "part-"
SUFFIX = ".parquet"
TEMP_SUFFIX = ".parquet.tmp"
STALE_TEMP_S = 3600.0  # a temp file this old is a dead writer's, whatever host wrote it
MAX_COMPONENT = 200  # bytes of an escaped partition value; longer ones are cut and hashed
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"

# ASCII characters kept as they are in a partition value; every other ASCII character is written
# %XX (uppercase hex, as Hive's escapePathName), non-ASCII characters are kept (as Hive does).
# DuckDB, pyarrow (segment_encoding="uri"), Spark and Trino decode %XX.
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_WRITER_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def escape(value: str) -> str:
    """A partition value as Hive writes it in a path: ``a/b=c d`` -> ``a%2Fb%3Dc%20d``."""
    if not value:
        return HIVE_NULL
    out = "".join(c if c in _SAFE or ord(c) > 127 else f"%{ord(c):02X}" for c in value)
    raw = out.encode("utf-8")
    if len(raw) > MAX_COMPONENT:  # a file system's name limit is 255 bytes
        digest = hashlib.sha1(value.encode("utf-8")).hexdigest()[:12]
        cut = raw[: MAX_COMPONENT - 13].decode("utf-8", "ignore")
        cut = cut[: cut.rfind("%")] if "%" in cut[-2:] else cut  # never half an escape
        out = f"{cut}~{digest}"
    return out


def writer_name(value: str) -> str:
    """``value`` made safe for a file name (the writer column keeps the same string)."""
    return _WRITER_UNSAFE.sub("_", value).lstrip(".") or "writer"


def partition_dir(root: str, table: str, route: str | None, hour: int) -> str:
    """The folder of one partition; ``hour`` counts hours since the epoch (UTC)."""
    t = datetime.fromtimestamp(hour * 3600, tz=timezone.utc)
    parts = [root, table]
    if route is not None:
        parts.append(f"route={escape(route)}")
    parts += [f"date={t:%Y-%m-%d}", f"hour={t:%H}"]
    return os.path.join(*parts)


def file_name(writer: str, n: int) -> str:
    return f"{PREFIX}{writer}-{n:08d}{SUFFIX}"


def temp_name(name: str) -> str:
    return f".{name}.tmp"


def _number_of(name: str, writer: str) -> int | None:
    """n of ``part-<writer>-<n>.parquet``, or None for another writer's file."""
    head = f"{PREFIX}{writer}-"
    if not (name.startswith(head) and name.endswith(SUFFIX)):
        return None
    digits = name[len(head) : -len(SUFFIX)]
    return int(digits) if digits.isdigit() else None


# --- Parquet options -------------------------------------------------------------------------------


def _leaves(t: pa.DataType, path: str):
    """(Parquet column path, Arrow type) of every leaf column under ``path``."""
    if pa.types.is_list(t):
        yield from _leaves(t.value_type, f"{path}.list.element")
    elif pa.types.is_struct(t):
        for f in t:
            yield from _leaves(f.type, f"{path}.{f.name}")
    else:
        yield path, t


_UNIQUE = ("request_id", "trace_id")  # near-unique strings: no dictionary


def write_options(schema: pa.Schema) -> dict:
    """pyarrow.parquet options for one of the log's tables, derived from its schema. Measured on
    20,000 FP32 [1,16] live + shadow pairs (128 raw tensor bytes a pair; uuid / counter request
    ids), bytes a pair on disk: pyarrow's defaults 292 / 261 (snappy), 249 / 230 (zstd); these
    options 154 / 135 (1.21x / 1.06x the raw tensor bytes; the FP32 outputs alone 106). zstd at its
    default level: levels 3 and 9 saved 1-2% at 0.85x and 0.5x the write speed. BYTE_STREAM_SPLIT
    for every float column (outputs, latencies): -11 bytes a pair. Dictionaries only for strings
    other than the near-unique request and trace ids (dictionary pages of near-unique values cost
    more than they save). DELTA_BINARY_PACKED for timestamps and the request sequence (nearly sorted
    integers): -2 bytes a pair. Statistics stay on (< 0.3 bytes a pair; readers prune row groups
    on arrival and request_seq with them)."""
    dictionary, encoding = [], {}
    for f in schema:
        for path, t in _leaves(f.type, f.name):
            if pa.types.is_floating(t):
                encoding[path] = "BYTE_STREAM_SPLIT"
            elif pa.types.is_timestamp(t) or path == "request_seq":
                encoding[path] = "DELTA_BINARY_PACKED"
            elif pa.types.is_string(t) and path not in _UNIQUE:
                dictionary.append(path)
    return {"compression": "zstd", "use_dictionary": dictionary, "column_encoding": encoding}


PAIRS_OPTIONS = write_options(PAIRS)
OUTCOMES_OPTIONS = write_options(OUTCOMES)
ROW_GROUP_ROWS = 16_384


def write_parquet(directory: str, name: str, table: pa.Table, options: dict) -> int:
    """Write ``table`` as ``directory/name`` through a temp file (removed on any failure) and return
    the finished file's size. Raises OSError when the disk refuses."""
    tmp = os.path.join(directory, temp_name(name))
    final = os.path.join(directory, name)
    for attempt in (0, 1):
        os.makedirs(directory, exist_ok=True)
        try:
            pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, **options)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            os.rename(tmp, final)
            return size
        except FileNotFoundError:  # the folder went (an empty one removed by a budget pass): once more
            _unlink(tmp)
            if attempt:
                raise
        except BaseException:
            _unlink(tmp)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _walk(root: str):
    for table in TABLES:
        for folder, _dirs, names in os.walk(os.path.join(root, table)):
            for name in names:
                yield folder, name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def stale_temp(name: str, mtime: float, writer: str, host: str, now: float) -> bool:
    """Whether temp file ``name`` is a dead writer's: our own id (we are starting: nothing of ours is
    in flight), a writer ``<host>-<pid>...`` of this host whose pid is gone, or one older than
    STALE_TEMP_S."""
    if not (name.startswith("." + PREFIX) and name.endswith(TEMP_SUFFIX)):
        return False
    owner = name[1 + len(PREFIX) : -len(TEMP_SUFFIX)].rpartition("-")[0]
    if owner == writer or now - mtime > STALE_TEMP_S:
        return True
    head = host + "-"
    if not owner.startswith(head):
        return False
    pid = owner[len(head) :].partition("-")[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    return not _pid_alive(int(pid))


class Inventory:
    """The finished files of both tables, oldest first (by mtime, then name), for the disk budget."""

    def __init__(self, root: str, budget_bytes: int) -> None:
        self.root = root
        self.budget = budget_bytes
        self.files: deque[tuple[int, str, int]] = deque()  # (mtime_ns, path, size)
        self.total = 0
        self.scanned = 0.0

    def scan(self, writer: str, host: str) -> tuple[int, list[str]]:
        """Re-read both tables; remove dead writers' temp files. Returns (the next file number for
        ``writer``, the temp files removed)."""
        found: list[tuple[int, str, int]] = []
        removed: list[str] = []
        top = -1
        now = time.time()
        for folder, name in _walk(self.root):
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:  # gone meanwhile
                continue
            if name.endswith(SUFFIX) and not name.startswith("."):
                found.append((st.st_mtime_ns, path, st.st_size))
                n = _number_of(name, writer)
                if n is not None:
                    top = max(top, n)
            elif stale_temp(name, st.st_mtime, writer, host, now):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed.append(path)
        found.sort()
        self.files = deque(found)
        self.total = sum(f[2] for f in found)
        self.scanned = time.monotonic()
        return top + 1, removed

    def add(self, path: str, size: int) -> None:
        self.files.append((time.time_ns(), path, size))
        self.total += size

    def enforce(self) -> tuple[int, int, list[str]]:
        """Delete the oldest files while over budget, never the newest one. Returns (files deleted,
        bytes deleted, paths that could not be deleted)."""
        count = freed = 0
        failed: list[str] = []
        while self.total > self.budget and len(self.files) > 1:
            _, path, size = self.files.popleft()
            self.total -= size
            try:
                os.unlink(path)
            except FileNotFoundError:  # another writer's budget pass got there first
                continue
            except OSError:
                failed.append(path)
                continue
            count += 1
            freed += size
            _prune(os.path.dirname(path), self.root)
        return count, freed, failed


def _prune(folder: str, root: str) -> None:
    """Remove the emptied hour / date / route folders (never the tables' own folders)."""
    tables = {os.path.join(root, t) for t in TABLES}
    while folder not in tables and folder.startswith(root) and len(folder) > len(root):
        try:
            os.rmdir(folder)
        except OSError:  # not empty (or gone): stop
            return
        folder = os.path.dirname(folder)
