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


async def stream_infer(routes: Mapping[str, Any], default: Upstream, counted: Callable[[], None], requests, context: grpc.aio.ServicerContext):
    """ModelStreamInfer: a bidirectional pass-through. Each message is routed by its own model
    name (a stream may mix models, as Triton allows) and renamed/pinned like a ModelInfer to
    that route's live Triton, over one upstream stream per live Triton (opened on first use);
    the responses of all of them go back as they come (several per request and sequences work
    as on Triton). The first upstream stream to end with an error status ends the caller's
    with that status. Stream messages are not mirrored (counted in ``stream_messages``)."""
    md = forward_metadata(context)
    timeout = context.time_remaining()
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
                    model, version, _, _ = scan_request(msg)
                    rs = routes.get(model)
                except ValueError:
                    rs, version = None, None  # Triton answers it on the default stream
                call = call_for(rs.live if rs is not None else default)
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
                yield item
            elif kind == "done":
                finished += 1
            elif kind == "pumped":
                pumped = True
            else:
                code, details, trailing = item
                await context.abort(code, details, trailing)
    finally:
        pump_task.cancel()
        for r in readers:
            r.cancel()
        for call in calls.values():
            if not call.done():
                call.cancel()
