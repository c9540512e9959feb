"""``shadowgrpc replay``: the logged requests sent to a new candidate, its answers paired with the
logged live answers and outcomes, the same report and verdict; no production traffic.

Reads the requests' first rows of a paired log written with ``[log] keep_inputs = true`` (request
bytes and live's answer) with DuckDB, in arrival order, a batch at a time (encode.py); sends each
request to the candidate over grpc.aio as raw bytes (``build_request``: model and version
rewritten, the shadow parameter, ``x-shadow-request: 1``), at most ``--concurrency`` in flight and
``--rate`` per second (a token bucket), each call under a deadline; and writes a paired log of its
own under ``--out`` with the front's writer: one row per request, the candidate as the route's only
shadow target, the logged live figures, the candidate's status, latency and answer. The report is
``analyze([OUT], outcome_paths=[PATH])``: the original run's outcomes, joined by request id.

Resume: the replay log keeps each request's key, ``writer`` + ``request_seq``, as the original log
wrote it (encode.ReplayLog), so a rerun anti-joins the source rows with the rows in OUT's finished
files and sends only the others: every request is in the report once. A stop (Ctrl-C, SIGTERM, a
fatal error) writes what has answered; kill -9 loses at most the last ``FLUSH_S`` seconds of
answers, which the rerun sends again. Rows of a trailing run of UNAVAILABLE (or NOT_FOUND, ...) answers
(the candidate went away) are not written either, so the rerun retries them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time

from .encode import FLUSH_S, Plan, ReplayError, ReplayLog, pair_of, plan, read_batch, stream
from .sql import lit

BATCH_ROWS = 512  # source rows read (and live answers re-encoded, off the loop) at a time
MAX_QUEUED = 50_000  # rows waiting for the writers before sending pauses
CONNECT_TIMEOUT_S = 5.0
UNAVAILABLE_STREAK = 50  # this many answers in a row of GONE: the candidate (or its model) went away, stop
FATAL = frozenset({"NOT_FOUND", "UNIMPLEMENTED", "PERMISSION_DENIED", "UNAUTHENTICATED"})  # before any OK answer: stop
GONE = FATAL | {"UNAVAILABLE"}
SIGNALS = ("SIGINT", "SIGTERM")
__all__ = ["FLUSH_S", "Plan", "ReplayError", "TokenBucket", "add_replay_parser", "plan"]


class TokenBucket:
    """At most ``rate`` takes per second on average, in bursts of at most ``burst``; rate <= 0: no limit."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = burst if burst is not None else max(1.0, self.rate / 20.0)
        self.tokens = 1.0
        self.t = time.monotonic()

    async def take(self) -> None:
        if self.rate <= 0:
            return
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
            self.t = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self.tokens) / self.rate)


class Replayer:
    """One run: sends the plan's rows, hands the answers to the replay log, counts."""

    def __init__(self, p: Plan, args: argparse.Namespace, bar) -> None:
        self.p, self.args, self.bar = p, args, bar
        self.log = ReplayLog(p.out, p.route_cfg)
        self.sent = self.errors = self.no_live = self.streak = 0
        self.ok_seen = False
        self.held: list = []  # rows of the current run of UNAVAILABLE answers
        self.stop_reason = ""  # "" | "SIGINT" | "SIGTERM" | a fatal error
        self.stopping = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.t_send = self.t_end = 0.0

    def stop(self, reason: str) -> None:
        if not self.stop_reason:
            self.stop_reason = reason
        self.stopping.set()

    async def run(self, con) -> None:
        from ..backends import Upstream

        if self.p.done >= self.p.total:
            return  # all done: only the report
        up = Upstream(self.p.target, "replay", 256 * 1024 * 1024)
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(getattr(signal, sig), self._signal, sig)
        try:
            await self._check(up)
            await self._send(up, con)
        finally:
            self.t_end = time.perf_counter()
            for sig in SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(getattr(signal, sig))
            await up.close()

    def _signal(self, sig: str) -> None:
        if self.stop_reason in SIGNALS:  # the second one: drop the calls in flight (the rerun sends them)
            for t in self.tasks:
                t.cancel()
            return
        self.stop(sig)
        print(f"\nshadowgrpc replay: {sig}: stopping; the {len(self.tasks)} calls in flight are finished and written "
              "(again to drop them)", file=sys.stderr)  # fmt: skip

    async def _check(self, up) -> None:
        """Fail fast: the target connects within CONNECT_TIMEOUT_S and has the model, ready."""
        import grpc
        from tritonclient.grpc import service_pb2 as kserve

        try:
            await asyncio.wait_for(up.channel.channel_ready(), CONNECT_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ReplayError(f"--target {self.p.target}: UNAVAILABLE: no connection within {CONNECT_TIMEOUT_S:g} s") from None
        what = f"{self.p.model}:{self.p.version or '*'}"
        try:
            raw = kserve.ModelMetadataRequest(name=self.p.model, version=self.p.version).SerializeToString()
            await up.unary["ModelMetadata"](raw, timeout=CONNECT_TIMEOUT_S)
            raw = kserve.ModelReadyRequest(name=self.p.model, version=self.p.version).SerializeToString()
            ready = kserve.ModelReadyResponse.FromString(await up.unary["ModelReady"](raw, timeout=CONNECT_TIMEOUT_S)).ready
        except grpc.aio.AioRpcError as e:
            raise ReplayError(f"--target {self.p.target} has no model {what}: {e.code().name}: {e.details()}") from None
        if not ready:
            raise ReplayError(f"--target {self.p.target}: model {what} is not ready")

    async def _send(self, up, con) -> None:
        reader = await asyncio.to_thread(stream, con, self.p.sql, BATCH_ROWS)
        bucket = TokenBucket(self.args.rate)
        room = asyncio.Semaphore(self.args.concurrency)
        nxt = asyncio.ensure_future(asyncio.to_thread(read_batch, reader, self.p.route_cfg))
        n = 0
        while not self.stopping.is_set():
            items = await nxt
            if items is None:
                break
            nxt = asyncio.ensure_future(asyncio.to_thread(read_batch, reader, self.p.route_cfg))  # the next, meanwhile
            for item in items:
                if item[9] is None:  # no live answer logged (every shadow call of the request failed online)
                    self.no_live += 1
                    if self.bar is not None:
                        self.bar.total -= 1
                    continue
                await room.acquire()
                await bucket.take()
                if self.stopping.is_set():
                    room.release()
                    break
                if not n:
                    self.t_send = time.perf_counter()  # the rate shown: from the first call to the last answer
                t = asyncio.create_task(self._one(up.infer, item))
                self.tasks.add(t)
                t.add_done_callback(lambda t: (self.tasks.discard(t), room.release()))
                n += 1
                if n % 256 == 0:
                    await self._backpressure()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=self.p.deadline_s + 5.0)
            for t in self.tasks:
                t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nxt, 60.0)  # the reader thread ends before the connection closes
        if not self.stop_reason or self.stop_reason in SIGNALS:
            self._release()  # a trailing run of UNAVAILABLE short of the limit: they are errors

    async def _backpressure(self) -> None:
        while not self.stopping.is_set():
            queued, fault = self.log.health()
            if fault:
                self.stop(f"cannot write the replay log: {fault}")
            elif queued > MAX_QUEUED:
                await asyncio.sleep(0.02)
                continue
            return

    async def _one(self, infer, item) -> None:
        import grpc

        from ..codec import SHADOW_METADATA
        from ..packing import build_request
        from ..pairlog.schema import SENT, PairRow

        writer, seq, rid, arrival, answered, latency, added, rate, buckets, live, request = item
        req = build_request(request, self.p.model, self.p.version, True)
        t0 = time.perf_counter()
        try:
            resp = await infer(req, timeout=self.p.deadline_s, metadata=SHADOW_METADATA)
            status, took = "OK", time.perf_counter() - t0
        except grpc.aio.AioRpcError as e:
            resp, status, took = None, e.code().name, None
            if status in FATAL and not self.ok_seen:
                self.stop(f"{self.p.target} answered {status} for {self.p.model}:{self.p.version or '*'}: {e.details()}")
        if self.stop_reason and self.stop_reason not in SIGNALS:
            return  # after a fatal error nothing more is written (the rerun sends it)
        self.sent += 1
        pair = pair_of(live, resp) if resp is not None else None
        row = PairRow(self.p.route, 0, rid, seq, arrival, answered, time.time(), SENT, True, "OK", status, pair, latency, took,
                      added, None, buckets, live, resp, None)  # fmt: skip
        if status in GONE:  # held until another answer comes: a run of them is not written (the rerun retries it)
            self.held.append((row, writer, rate))
            self.streak += 1
            if self.streak >= UNAVAILABLE_STREAK:
                self.stop(f"{self.p.target} stopped answering ({self.streak} {'/'.join(sorted({h[0].shadow_status for h in self.held}))} in a row)")
            return
        self.ok_seen |= status == "OK"
        self._release()
        self._emit(row, writer, rate, status != "OK")

    def _emit(self, row, writer: str, rate: float, error: bool) -> None:
        self.log.pair(row, writer, rate)
        self.errors += error
        if self.bar is not None:
            self.bar.update(1)
            if error:
                self.bar.set_postfix_str(f"errors {self.errors}", refresh=False)

    def _release(self) -> None:
        for row, writer, rate in self.held:
            self._emit(row, writer, rate, True)
        self.held.clear()
        self.streak = 0


def _lock(out: str):
    """An exclusive lock on OUT for the run: two replays never write the same log."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    f = open(os.path.join(out, ".replay.lock"), "w")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ReplayError(f"{out}: another replay is writing there") from None
    return f


def _fail(msg: str, code: int) -> int:
    print(f"shadowgrpc replay: {msg}", file=sys.stderr)
    return code


def _cmd_replay(args: argparse.Namespace) -> int:
    import duckdb

    if args.rate < 0 or args.concurrency < 1 or (args.limit is not None and args.limit < 1) or (args.deadline_ms is not None and args.deadline_ms <= 0):
        return _fail("--rate must be >= 0; --concurrency, --limit and --deadline-ms > 0", 2)
    con = duckdb.connect()
    try:
        p = plan(args, con)
        created = not os.path.exists(p.out)
        os.makedirs(p.out, exist_ok=True)
        lock = _lock(p.out)
        con.execute(f"SET temp_directory = {lit(os.path.join(p.out, '.tmp'))}")  # the arrival-order sort may spill
    except ReplayError as e:
        return _fail(str(e), e.code)
    except duckdb.Error as e:  # a bad --where, unreadable files
        return _fail(f"{type(e).__name__}: {e}", 2 if "Parser" in type(e).__name__ or "Binder" in type(e).__name__ else 1)
    bar = None
    if not (args.json or args.no_progress or not sys.stderr.isatty()) and p.total > p.done:
        from tqdm import tqdm

        total = min(p.total, p.done + args.limit) if args.limit else p.total
        bar = tqdm(total=total, initial=p.done, desc=f"replay {p.route} -> {p.name}", unit=" req", file=sys.stderr, postfix="errors 0")
    r = Replayer(p, args, bar)
    error = None
    try:
        asyncio.run(r.run(con))
    except ReplayError as e:
        error = e
    finally:
        lost = r.log.close()
        if bar is not None:
            bar.close()
        con.close()
        if lock is not None:
            lock.close()
        shutil.rmtree(os.path.join(p.out, ".tmp"), ignore_errors=True)
        if created and os.listdir(p.out) == [".replay.lock"]:  # nothing written: no empty OUT left behind
            os.remove(os.path.join(p.out, ".replay.lock"))
            os.rmdir(p.out)
    if error is not None:
        return _fail(str(error), error.code)
    written = r.sent - len(r.held)
    took = r.t_end - r.t_send if r.t_send else 0.0
    said = f"{written} requests replayed this run in {took:.1f} s ({written / took if took > 0 else 0:.0f}/s), {r.errors} errors"
    resume = f"rerun the same command to resume: the {p.done + written} requests in {p.out} are not sent again"
    if r.stop_reason in SIGNALS:
        return _fail(f"interrupted ({r.stop_reason}) after {said}; {resume}", 128 + int(getattr(signal, r.stop_reason)))
    if r.stop_reason:
        return _fail(f"{r.stop_reason}; stopped" + (f" after {said}; {resume}" if written else ""), 1)
    if lost:
        return _fail(f"{lost} rows could not be written to {p.out} (see above); rerun to send them again", 1)
    return _report(args, p, r, said)


def _report(args: argparse.Namespace, p: Plan, r: Replayer, said: str) -> int:
    from ..report import build_report
    from ..report_text import format_report, report_json
    from . import LogError, analyze

    try:
        state = analyze([p.out], outcome_paths=[p.path])
    except LogError as e:
        return _fail(f"nothing replayed ({e})", 1)
    rep = build_report(state, p.route)
    rep.source = f"replay of paired log {p.path} to {p.model}:{p.version or '*'} at {p.target} (answers in {p.out})"
    if args.html:
        from ..report_html import write_html_for

        if not write_html_for("shadowgrpc replay", state, rep, args.html, f"shadowgrpc replay: {p.path} -> {p.name} at {p.target}"):
            return 1
    print(report_json(rep) if args.json else format_report(rep))  # verdicts first, the source on its second line
    n = sum(rs.stats.requests for rs in state.routes.values())
    notes = [said, f"{n} of {p.total} selected requests in {p.out}"]
    if n < p.total - r.no_live:
        notes.append(f"{p.total - r.no_live - n} left: rerun the same command to continue")
    if r.no_live:
        notes.append(f"{r.no_live} not replayed: no live answer logged (every shadow call of theirs failed online)")
    print("shadowgrpc replay: " + "; ".join(notes), file=sys.stderr)
    return 0


def add_replay_parser(sub) -> None:
    r = sub.add_parser(
        "replay",
        help="send a paired log's requests to a candidate model and judge it against the logged live answers",
        description="Replay the requests of a paired-prediction log written with [log] keep_inputs = true to a candidate "
        "model on a Triton, pair its answers with the logged live answers and the run's outcomes (by request id), and "
        "print the same report and verdict as a shadow run, without production traffic. The answers are written as a "
        "paired log of their own (--out): rerun the same command after an interruption and only the requests not yet "
        "there are sent.",
        epilog="examples:\n"
        "  shadowgrpc replay /var/lib/shadowgrpc/log --target triton-b:8001 --model fraud --version 3\n"
        "  shadowgrpc replay LOG --target 127.0.0.1:8001 --model fraud_xgb --route fraud --rate 500 --since 2026-12-06T10:00:00\n"
        "  shadowgrpc replay LOG --target 127.0.0.1:8001 --model fraud --version 3 --json > replay.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = r.add_argument
    a("path", metavar="PATH", help="the paired-log folder ([log] path) of the original run")
    a("--target", required=True, metavar="ADDR", help="the candidate's Triton gRPC address (host:port)")
    a("--model", required=True, metavar="NAME", help="the candidate model's name on --target")
    a("--version", default="", help="its version (default: the one Triton's version policy picks)")
    a("--rate", type=float, default=100.0, metavar="R", help="at most R requests per second (default 100; 0: no limit)")
    a("--concurrency", type=int, default=8, metavar="N", help="requests in flight at most (default 8)")
    a("--deadline-ms", type=float, metavar="MS", help="each call's deadline (default: the route's live deadline, else 1000)")
    a("--out", metavar="DIR", help="the replay's own paired log (default PATH/replays/NAME[-VERSION]); a rerun resumes it")
    a("--route", help="the logged route to replay (default: the only one with request bytes, or the one named --model)")
    a("--where", action="append", metavar="SQL", help="only requests whose pairs row matches this SQL predicate (repeatable: ANDed)")
    a("--since", metavar="TIME", help="requests that arrived at or after TIME (UTC, e.g. 2026-12-06T10:00:00)")
    a("--until", metavar="TIME", help="requests that arrived before TIME (UTC)")
    a("--limit", type=int, metavar="N", help="send at most N requests this run (a rerun continues)")
    a("--json", action="store_true", help="print the report as JSON (proto3 JSON mapping of shadowgrpc.v1.Report)")
    a("--html", metavar="FILE", help="also write a self-contained HTML report")
    a("--no-progress", action="store_true", help="no progress bar (there is none either when stderr is not a terminal, or with --json)")
    r.set_defaults(func=_cmd_replay)
