"""Where the client-side mirror hooks into a caller's code: grpc channel interceptors (sync and
grpc.aio) and helpers that install them on a tritonclient ``InferenceServerClient``.

The interceptors see only ``/inference.GRPCInferenceService/ModelInfer`` (every other method goes
through untouched). The live call is made first, exactly as without the mirror; when it has
finished (answer or error) the request, answer, status, latency, timeout and metadata go to
``mirror.observe`` (a sampling decision and an append to a queue: serialization and the shadow
call happen on the mirror's own loop). The caller gets the live outcome untouched: the same
response object, the same exception. Why after, not concurrently: the shadow cannot change the
live answer either way, and starting it after live keeps the shadow's CPU (serialization, its
grpc call) off the live call's time, with one hand-off per call instead of two.

tritonclient keeps its channel and stub in private attributes: the helpers rely on ``_channel``
and ``_client_stub`` (tritonclient 2.x, checked on 2.73):
- ``mirror_tritonclient`` (tritonclient.grpc): replaces the stub's ``ModelInfer`` (the only method
  mirrored) with ``MirroredUnary``, which calls the original and then ``mirror.observe``; the
  channel is untouched. Cheaper per call than ``grpc.intercept_channel``, which builds a call
  details object, a multicallable and an outcome object for every call of every method;
- ``mirror_tritonclient_aio`` (tritonclient.grpc.aio): grpc.aio takes interceptors only when a
  channel is created, and the aio client keeps neither its url nor its options, so the helper
  rebuilds the channel: with ``url`` (and the same ``channel_args`` / ``creds`` /
  ``keepalive_options`` the client was created with, tritonclient's defaults otherwise), a new
  grpc.aio channel with the interceptor replaces ``_channel`` and ``_client_stub`` (the old
  channel is closed). Call it inside the client's event loop.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from .mirror import INFER

_INFER_B = INFER.encode()
_perf = time.perf_counter


def _status(exc: BaseException | None) -> str:
    if exc is None:
        return "OK"
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        try:
            return exc.code().name
        except Exception:
            return "UNKNOWN"
    return "CANCELLED" if isinstance(exc, grpc.FutureCancelledError) else "UNKNOWN"


class MirrorInterceptor(grpc.UnaryUnaryClientInterceptor):
    """For sync channels (``grpc.intercept_channel(channel, MirrorInterceptor(mirror))``); works for
    blocking calls, ``with_call`` and ``future``: the pair is handed over when the call is done (a
    future's callback runs on grpc's thread: the hand-off is thread-safe)."""

    def __init__(self, mirror: Any) -> None:
        self._observe = mirror.observe

    def intercept_unary_unary(self, continuation, client_call_details, request):
        if client_call_details.method != INFER:
            return continuation(client_call_details, request)
        t0 = _perf()
        outcome = continuation(client_call_details, request)
        observe = self._observe

        def done(f) -> None:
            latency = _perf() - t0
            try:
                exc = f.exception()
                response = f.result() if exc is None else None
                observe(request, response, _status(exc), latency, client_call_details.timeout, client_call_details.metadata)
            except Exception:  # nothing of the mirror's ever reaches the caller
                pass

        outcome.add_done_callback(done)
        return outcome


class AioMirrorInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """For grpc.aio channels (``grpc.aio.insecure_channel(url, interceptors=[...])``): awaits the
    live call, hands the pair over (``mirror.observe``), returns the live call itself, so the
    caller's ``await`` gives the same response or raises the same ``AioRpcError``."""

    def __init__(self, mirror: Any) -> None:
        self._observe = mirror.observe

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        method = client_call_details.method
        if method != _INFER_B and method != INFER:
            return await continuation(client_call_details, request)
        t0 = _perf()
        call = await continuation(client_call_details, request)
        response = None
        status = "OK"
        try:
            response = await call
        except grpc.aio.AioRpcError as e:
            status = e.code().name
        except BaseException:  # the caller's own await gets the same outcome from ``call``
            return call
        latency = _perf() - t0
        try:
            self._observe(request, response, status, latency, client_call_details.timeout, client_call_details.metadata)
        except Exception:
            pass
        return call


class MirroredUnary:
    """A stand-in for a sync ``UnaryUnaryMultiCallable`` (blocking call, ``with_call``,
    ``future``): the original call, then ``observe(request, response, status, latency, timeout,
    metadata)``; the caller gets the original's outcome (same response, same exception)."""

    __slots__ = ("_inner", "_observe")

    def __init__(self, inner, mirror: Any) -> None:
        self._inner = inner
        self._observe = mirror.observe

    def __call__(self, request, timeout=None, metadata=None, credentials=None, wait_for_ready=None, compression=None):
        t0 = _perf()
        try:
            response = self._inner(request, timeout, metadata, credentials, wait_for_ready, compression)
        except BaseException as e:
            self._after(request, None, _status(e), t0, timeout, metadata)
            raise
        self._after(request, response, "OK", t0, timeout, metadata)
        return response

    def with_call(self, request, timeout=None, metadata=None, credentials=None, wait_for_ready=None, compression=None):
        t0 = _perf()
        try:
            response, call = self._inner.with_call(request, timeout, metadata, credentials, wait_for_ready, compression)
        except BaseException as e:
            self._after(request, None, _status(e), t0, timeout, metadata)
            raise
        self._after(request, response, "OK", t0, timeout, metadata)
        return response, call

    def future(self, request, timeout=None, metadata=None, credentials=None, wait_for_ready=None, compression=None):
        t0 = _perf()
        fut = self._inner.future(request, timeout, metadata, credentials, wait_for_ready, compression)

        def done(f) -> None:
            try:
                exc = f.exception()
            except BaseException as e:  # cancelled
                exc = e
            self._after(request, f.result() if exc is None else None, _status(exc), t0, timeout, metadata)

        fut.add_done_callback(done)
        return fut

    def _after(self, request, response, status: str, t0: float, timeout, metadata) -> None:
        latency = _perf() - t0
        try:
            self._observe(request, response, status, latency, timeout, metadata)
        except Exception:  # nothing of the mirror's ever reaches the caller
            pass


def mirror_interceptor(mirror: Any) -> MirrorInterceptor:
    """A ``grpc.UnaryUnaryClientInterceptor`` for sync channels that mirrors ModelInfer."""
    return MirrorInterceptor(mirror)


def aio_mirror_interceptor(mirror: Any) -> AioMirrorInterceptor:
    """A ``grpc.aio.UnaryUnaryClientInterceptor`` that mirrors ModelInfer."""
    return AioMirrorInterceptor(mirror)


def mirror_tritonclient(client, mirror: Any):
    """Mirror every ``infer`` / ``async_infer`` of a ``tritonclient.grpc.InferenceServerClient``
    (see the module doc for what it relies on). Returns ``client``."""
    stub = client._client_stub
    stub.ModelInfer = MirroredUnary(stub.ModelInfer, mirror)
    return client


async def mirror_tritonclient_aio(
    client, mirror: Any, url: str, *, creds: grpc.ChannelCredentials | None = None, channel_args=None, keepalive_options=None,
):  # fmt: skip
    """Mirror every ``infer`` of a ``tritonclient.grpc.aio.InferenceServerClient`` created with
    ``url`` (and these ``creds`` / ``channel_args`` / ``keepalive_options``, as given to it; its
    ``ssl=True`` form: pass ``creds=grpc.ssl_channel_credentials(...)``). Returns ``client``."""
    from tritonclient.grpc import service_pb2_grpc

    if channel_args is not None:
        options = list(channel_args)
    else:
        from tritonclient.grpc import KeepAliveOptions
        from tritonclient.grpc._client import MAX_GRPC_MESSAGE_SIZE

        k = keepalive_options or KeepAliveOptions()
        options = [
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", k.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", k.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", k.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", k.http2_max_pings_without_data),
        ]  # tritonclient.grpc.aio's own defaults
    interceptors = [AioMirrorInterceptor(mirror)]
    if creds is not None:
        channel = grpc.aio.secure_channel(url, creds, options=options, interceptors=interceptors)
    else:
        channel = grpc.aio.insecure_channel(url, options=options, interceptors=interceptors)
    old = client._channel
    client._channel = channel
    client._client_stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    await old.close()
    return client


__all__ = [
    "AioMirrorInterceptor",
    "MirroredUnary",
    "MirrorInterceptor",
    "aio_mirror_interceptor",
    "mirror_interceptor",
    "mirror_tritonclient",
    "mirror_tritonclient_aio",
]
