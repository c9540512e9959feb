"""The paired log under faults: kill -9 mid-write (finished files stay readable, at most the flush
window is lost, the next start continues the table and removes the dead writer's temp files), a
read-only folder and a full disk (logging stops with a clear error and a counter; pair() keeps
returning; nothing escapes), a batch that cannot be converted, a log path that cannot be created.
The writer's other behaviour: test_pairlog_writer.py."""

from __future__ import annotations

import glob
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc._config_log import LogSettings
from shadowgrpc.pairlog import files
from shadowgrpc.pairlog.schema import COMPARED, SENT, OutcomeRow, PairRow
from shadowgrpc.pairlog.writer import PairLog

REPO = str(Path(__file__).resolve().parents[2])
T0 = 1_796_601_599.25

# The child's rows: FP32 [1, n] answers, one route, arrival = now (or T0).
ROWS = """
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from shadowgrpc.pairlog.schema import COMPARED, SENT, PairRow

def answer(n, seed=0):
    m = pb.ModelInferResponse(model_name="m")
    m.outputs.add(name="p", datatype="FP32", shape=[1, n])
    m.raw_output_contents.append(np.random.default_rng(seed).random((1, n), dtype=np.float32).tobytes())
    return m.SerializeToString()

def row(seq, arrival, raw):
    return PairRow("m", 0, f"id-{seq}", seq, arrival, arrival, arrival, SENT, True, "OK", "OK", COMPARED,
                   0.001, 0.001, 0.0001, None, None, raw, raw, None)
"""

# Writes rows without end (until killed): ~10k rows/s, a file every 50 ms.
KILLED = ROWS + """
import sys, time
from shadowgrpc._config_log import LogSettings
from shadowgrpc.pairlog.writer import PairLog
lg = PairLog(LogSettings(path=sys.argv[1], flush_s=0.05, flush_rows=100_000), ())  # default writer id: host-pid
lg.start()
raw, seq = answer(64), 0
while True:
    now = time.time()
    for _ in range(20):
        lg.pair(row(seq, now, raw))
        seq += 1
    time.sleep(0.002)
"""

# Writes 10 rows (fine), then breaks the disk (argv[2]) and goes on handing rows in; prints what it saw.
BROKEN = ROWS + """
import dataclasses, json, logging, os, resource, signal, sys, threading
from shadowgrpc._config_log import LogSettings
from shadowgrpc.pairlog.schema import OutcomeRow
from shadowgrpc.pairlog.writer import PairLog
records, escaped = [], []
class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.levelname, record.getMessage()])
logging.getLogger("shadowgrpc.pairlog").addHandler(Keep())
logging.getLogger("shadowgrpc.pairlog").setLevel(logging.INFO)
threading.excepthook = lambda a: escaped.append(repr(a.exc_value))
path, fault = sys.argv[1], sys.argv[2]
lg = PairLog(LogSettings(path=path, flush_s=3600, flush_rows=1000), (), writer_id="w")
lg.start()
small = answer(16)
for i in range(10):
    lg.pair(row(i, 1796601599.25, small))
lg.flush(20)
before = dataclasses.asdict(lg.stats)
if fault == "fsize":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))
else:  # read-only: the folders lose their write bits (this process has no CAP_DAC_OVERRIDE)
    for folder, _, _ in os.walk(path):
        os.chmod(folder, 0o555)
calls = 0
for i in range(10, 110):  # 100 rows x 64 kB of random answers: more than the limit, in a new file
    lg.pair(row(i, 1796601599.25, answer(8192, i)))
    calls += 1
lg.flush(20)
for i in range(110, 1110):
    lg.pair(row(i, 1796601599.25, small))
    lg.outcome(OutcomeRow(f"id-{i}", 1796601599.25, None, None, "unknown", None))
    calls += 2
lg.close(20)
print(json.dumps({"before": before, "after": dataclasses.asdict(lg.stats), "calls": calls, "records": records, "escaped": escaped}))
"""


def _child(script: str, *args: str, wrap: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([*wrap, sys.executable, "-c", textwrap.dedent(script), *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def parquet_files(root) -> list[str]:
    return sorted(glob.glob(os.path.join(str(root), "**", "*.parquet"), recursive=True))


def temp_files(root) -> list[str]:
    return sorted(glob.glob(os.path.join(str(root), "**", ".*.tmp"), recursive=True))


def _seqs_and_newest(root, writer: str) -> tuple[list[int], float]:
    """The request_seq of ``writer``'s rows in order, and the arrival of its newest one."""
    for p in parquet_files(root):  # every finished file is complete on its own
        assert pq.read_metadata(p).num_rows > 0
    rel = duckdb.connect().sql(f"select request_seq, epoch_us(arrival) from read_parquet('{root}/pairs/**/*.parquet', hive_partitioning=true) where writer = '{writer}' order by 1")
    got = rel.fetchall()
    return [s for s, _ in got], max(t for _, t in got) / 1e6


def _kill_mid_write(root) -> tuple[int, float]:
    """Start a child writing without end, kill -9 it once it has finished a few files; its pid and
    the kill time."""
    before = len(parquet_files(root))
    proc = _child(KILLED, str(root))
    try:
        deadline = time.monotonic() + 60
        while len(parquet_files(root)) < before + 5:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the child wrote no files"
            time.sleep(0.01)
        time.sleep(0.3)
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    return proc.pid, killed_at


def test_kill_9_loses_at_most_the_flush_window_and_the_next_start_continues(tmp_path):
    host = files.writer_name(socket.gethostname())
    dead_pids, counted = [], 0  # counted: rows the children left on disk
    for _ in range(2):  # the second child starts on the first one's leftovers
        pid, killed_at = _kill_mid_write(tmp_path)
        dead_pids.append(pid)
        mine, newest = _seqs_and_newest(tmp_path, files.writer_name(f"{host}-{pid}"))
        assert mine == list(range(len(mine))) and len(mine) > 0  # no hole: only the newest rows are lost
        assert killed_at - newest < 0.05 + 2.0  # flush_s + slack for a busy machine
        counted += len(mine)
    partition = os.path.dirname(parquet_files(tmp_path)[0])
    dead = os.path.join(partition, files.temp_name(files.file_name(f"{host}-{dead_pids[0]}", 999)))
    alive = os.path.join(partition, files.temp_name(files.file_name(f"{host}-1", 5)))  # pid 1 lives
    Path(dead).write_bytes(b"PAR1 torn")
    Path(alive).write_bytes(b"PAR1 in flight")
    lg = PairLog(LogSettings(path=str(tmp_path), flush_s=3600), ())
    lg.start()
    try:
        left = [os.path.basename(p) for p in temp_files(tmp_path)]
        assert left == [os.path.basename(alive)]  # the dead writers' temp files are gone, the live one's kept
        raw = pb.ModelInferResponse(model_name="m")
        for i in range(5):
            lg.pair(PairRow("m", 0, f"new-{i}", i, time.time(), None, None, SENT, True, "OK", "OK", COMPARED,
                            None, None, None, None, None, raw.SerializeToString(), None, None))  # fmt: skip
        lg.flush()
    finally:
        lg.close()
    con = duckdb.connect()
    rows = con.sql(f"select writer, count(*) from read_parquet('{tmp_path}/pairs/**/*.parquet') group by 1 order by 2").fetchall()
    assert rows[0] == (lg.writer_id, 5) and len(rows) == 3 and sum(n for _, n in rows) == counted + 5


# Drops the capabilities that let root ignore file modes from the bounding set, then execs the
# child (the drop applies from that exec on): a wrapper, not a preexec_fn, which would make
# subprocess fork() a process that may have gRPC threads running (see tests/serveproc.py FULL_DISK).
DROP_DAC_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER (PR_CAPBSET_DROP = 24)
    if libc.prctl(24, cap, 0, 0, 0) != 0:
        os._exit(97)
os.execv(sys.argv[1], sys.argv[1:])
"""


def _broken(tmp_path, fault: str) -> dict:
    wrap = (sys.executable, "-c", DROP_DAC_EXEC) if fault == "readonly" and os.geteuid() == 0 else ()
    proc = _child(BROKEN, str(tmp_path), fault, wrap=wrap)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    if proc.returncode == 97:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here: root ignores a read-only folder")
    assert proc.returncode == 0, err
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("readonly", "Permission denied"),  # chmod 0o555 (as root: with CAP_DAC_OVERRIDE dropped)
        ("fsize", "File too large"),  # RLIMIT_FSIZE: the kernel refuses the write like a full disk (EFBIG, not ENOSPC)
    ],
)
def test_a_disk_that_refuses_stops_logging_with_a_clear_error_and_serving_goes_on(tmp_path, fault, reason):
    got = _broken(tmp_path, fault)
    before, after = got["before"], got["after"]
    assert (before["rows_written"], before["files_written"], before["write_errors"], before["stopped"]) == (10, 1, 0, False)
    assert got["calls"] == 2100 and got["escaped"] == []  # every pair()/outcome() returned, no thread died
    assert after["write_errors"] == 1 and after["stopped"] and after["rows_written"] == 10
    assert after["rows_dropped"] == 2100  # the 100 of the failed file, then everything handed in afterwards
    assert after["last_error"].startswith(f"log.path {tmp_path}: cannot write {tmp_path}/pairs/route=m/")
    assert after["last_error"].endswith(f".parquet: {reason}")
    errors = [m for level, m in got["records"] if level == "ERROR"]
    assert len(errors) == 1 and after["last_error"] in errors[0]  # logged once
    assert temp_files(tmp_path) == []  # the failed file's temp is removed
    assert [pq.read_metadata(p).num_rows for p in parquet_files(tmp_path)] == [10]  # the finished file is intact


def test_a_full_disk_enospc_stops_logging_once(tmp_path, caplog):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    lg = PairLog(LogSettings(path=str(tmp_path), flush_s=3600), (), writer_id="w")
    lg.start()
    raw = pb.ModelInferResponse(model_name="m").SerializeToString()
    r = PairRow("m", 0, "a", 0, T0, None, None, SENT, True, "OK", "OK", COMPARED, None, None, None, None, None, raw, raw, None)
    folder = files.partition_dir(str(tmp_path), "pairs", "m", int(T0 // 3600))
    final = os.path.join(folder, files.file_name("w", 0))
    os.makedirs(folder)
    os.symlink("/dev/full", os.path.join(folder, files.temp_name(files.file_name("w", 0))))  # writes there: ENOSPC
    with caplog.at_level(logging.ERROR, logger="shadowgrpc.pairlog"):
        lg.pair(r)
        lg.flush()
        for _ in range(3):
            lg.pair(r)
            lg.outcome(OutcomeRow("a", T0, None, None, "unknown", None))
        lg.flush()
        lg.close()
    st = lg.stats
    assert st.last_error == f"log.path {tmp_path}: cannot write {final}: No space left on device"
    assert (st.write_errors, st.rows_dropped, st.rows_written, st.stopped) == (1, 7, 0, True)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"{st.last_error}; the paired log is stopped (rows are counted as dropped, serving goes on)"
    ]
    assert os.listdir(folder) == []  # the temp (here: the link) removed, no torn file


def test_a_batch_that_cannot_be_converted_is_dropped_and_counted_and_logging_goes_on(tmp_path, caplog):
    lg = PairLog(LogSettings(path=str(tmp_path), flush_s=3600), (), writer_id="w")
    lg.start()
    good = PairRow("m", 0, "a", 0, T0, None, None, SENT, True, "OK", "OK", None, None, None, None, None, None, None, None, None)
    with caplog.at_level(logging.ERROR, logger="shadowgrpc.pairlog"):
        lg.pair(good._replace(slice_buckets=[object()]))  # not an array of buckets
        lg.flush()
    lg.pair(good._replace(request_seq=1))
    lg.flush()
    lg.close()
    st = lg.stats
    assert (st.write_errors, st.rows_dropped, st.rows_written) == (1, 1, 1) and "cannot convert 1 pairs rows" in st.last_error
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert [pq.read_metadata(p).num_rows for p in parquet_files(tmp_path)] == [1]


def test_rows_after_close_are_counted_not_raised(tmp_path):
    lg = PairLog(LogSettings(path=str(tmp_path)), (), writer_id="w")
    lg.start()
    lg.close()
    lg.pair(PairRow("m", 0, "a", 0, T0, None, None, SENT, True, "OK", "OK", None, None, None, None, None, None, None, None, None))
    lg.outcome(OutcomeRow("x", T0, None, None, "unknown", None))
    assert lg.stats.rows_dropped == 2 and lg.stats.stopped and lg.stats.last_error == ""


def test_a_log_path_that_cannot_be_created_stops_the_log_without_raising(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    lg = PairLog(LogSettings(path=str(blocker)), (), writer_id="w")
    lg.start()
    lg.pair(PairRow("m", 0, "a", 0, T0, None, None, SENT, True, "OK", "OK", None, None, None, None, None, None, None, None, None))
    lg.flush(timeout=1)
    lg.close(timeout=1)
    st = lg.stats
    assert st.stopped and st.write_errors == 1 and st.rows_dropped == 1
    assert st.last_error == f"log.path {blocker}: cannot write {blocker}: Not a directory"
    assert np.isscalar(st.bytes_on_disk)
