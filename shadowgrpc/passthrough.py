"""Calls passed through to live Triton: the caller's metadata forwarded, Triton's exact status,
message and trailing metadata given back, and the ModelStreamInfer pass-through (each message
routed by its own model name).

Used by router.py; imports nothing of it (the router is passed in).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from .backends import Upstream
from .packing import scan_request

# Metadata grpc sets itself on the upstream call; everything else the caller sent is forwarded.
_DROP_METADATA = frozenset({"user-agent"})
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def forward_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, Any], ...] | None:
    md = context.invocation_metadata()
    if not md or (len(md) == 1 and md[0][0] in _DROP_METADATA):
        return None  # the common case: nothing but grpc's own user-agent
    return tuple((k, v) for k, v in md if k not in _DROP_METADATA)


async def abort_like(context: grpc.aio.ServicerContext, err: BaseException) -> None:
    """Give the caller exactly the status an upstream Triton gave (or UNAVAILABLE if none)."""
    if isinstance(err, grpc.aio.AioRpcError):
        await context.abort(err.code(), err.details() or "", _trailing(err.trailing_metadata()))
    await context.abort(_UNAVAILABLE, f"upstream Triton call failed: {err!r}")


def _trailing(md) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in md) if md else ()


async def stream_infer(
    routes: Mapping[str, Any] | Callable[[], Mapping[str, Any]], default: Upstream, counted: Callable[[], None], requests,
    context: grpc.aio.ServicerContext, mirror: Callable[[tuple | None, float | None], Any] | None = None,
):  # fmt: skip
    """ModelStreamInfer: a bidirectional pass-through. Each message is routed by its own model
    name (a stream may mix models, as Triton allows) and renamed/pinned like a ModelInfer to
    that route's live Triton, over one upstream stream per live Triton (opened on first use);
    the responses of all of them go back as they come (several per request and sequences work
    as on Triton). The first upstream stream to end with an error status ends the caller's
    with that status. Every message is counted (``counted``). ``routes``: the route table, or a
    callable returning the current one (read per message, so a published change applies).
    ``mirror(metadata, timeout)``: makes this stream's streams.StreamMirror, which is told of
    each routed message as it goes to live, of each live answer before the caller gets it, and
    of the end; it never blocks or fails the caller's stream (streams.py)."""
    md = forward_metadata(context)
    timeout = context.time_remaining()
    table = routes if callable(routes) else (lambda: routes)
    sm = mirror(md, timeout) if mirror is not None else None
    ended_ok = False
    calls: dict[int, Any] = {}
    readers: list[asyncio.Task[None]] = []
    out: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=64)

    async def read(call) -> None:
        try:
            async for response in call:
                await out.put(("msg", response))
            code = await call.code()
            if code != grpc.StatusCode.OK:
                await out.put(("status", (code, await call.details() or "", _trailing(await call.trailing_metadata()))))
        except grpc.aio.AioRpcError as e:
            await out.put(("status", (e.code(), e.details() or "", _trailing(e.trailing_metadata()))))
        finally:
            await out.put(("done", None))

    def call_for(up: Upstream):
        call = calls.get(id(up))
        if call is None:
            call = calls[id(up)] = up.stream_infer(metadata=md, timeout=timeout)
            readers.append(asyncio.create_task(read(call)))
        return call

    async def pump() -> None:
        try:
            async for msg in requests:
                counted()
                try:
                    model, version, rid, shm = scan_request(msg)
                    rs = table().get(model)
                except ValueError:
                    rs, version = None, None  # Triton answers it on the default stream
                call = call_for(rs.live if rs is not None else default)
                if sm is not None and rs is not None:
                    sm.request(msg, rs, version, rid, shm)  # before the write: live may answer at once
                await call.write(rs.live_request(msg, version) if rs is not None else msg)
            for call in list(calls.values()):
                await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # an upstream call already ended: its status reaches the caller below
        finally:
            await out.put(("pumped", None))

    pump_task = asyncio.create_task(pump())
    pumped, finished = False, 0
    try:
        while not (pumped and finished == len(readers)):
            kind, item = await out.get()
            if kind == "msg":
                if sm is not None:
                    sm.live_response(item)
                yield item
            elif kind == "done":
                finished += 1
            elif kind == "pumped":
                pumped = True
            else:
                code, details, trailing = item
                await context.abort(code, details, trailing)
        ended_ok = True
    finally:
        if sm is not None:
            sm.finish(ended_ok)
        pump_task.cancel()
        for r in readers:
            r.cancel()
        for call in calls.values():
            if not call.done():
                call.cancel()
