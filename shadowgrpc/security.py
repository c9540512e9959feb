"""Security at run time (the keys: _config_security.py): the admin API's bearer-token check, TLS
credentials of the data and admin ports that ``Front.reload_tls`` swaps without a restart, TLS
credentials of the upstream Triton channels, and the metadata a shadow call may carry.

- Admin auth: ``AdminAuth``, a server interceptor on the admin port (the Front's, and the workers
  parent's). With a token configured every method but health and reflection (which expose only
  service names and SERVING) needs ``authorization: Bearer <token>``, compared with
  ``hmac.compare_digest``; without it: UNAUTHENTICATED. mTLS (``admin_tls.client_ca``) is checked in
  the TLS handshake: a client without a certificate signed by client_ca gets no connection at all
  (UNAVAILABLE on its side). Both set: both needed.
- Reloadable server TLS: ``ServerTlsSource`` gives ``grpc.dynamic_ssl_server_credentials`` a
  fetcher; ``reload()`` reads and checks the files first (a bad file raises and changes nothing),
  then the next TLS handshake gets the new certificate; connections already open keep theirs.
- Shadow metadata: ``shadow_metadata`` keeps only the allow-listed keys of the caller's metadata
  and adds the front's own ``x-shadow-request: 1``: ``authorization``, cookies, API keys never
  reach a shadow.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterable
from typing import Any

import grpc

from ._checks import ConfigError
from ._config_security import ClientTls, Security, ServerTls, check_server_pem
from .codec import SHADOW_METADATA

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


# -- admin auth ------------------------------------------------------------------------------------
class AdminAuth(grpc.aio.ServerInterceptor):
    """Every admin method but health/reflection needs ``authorization: Bearer <token>`` when a token
    is set. ``token`` may be replaced (a config reload): it is read per call."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_service(self, continuation, details):
        token = self.token
        if not token or details.method.startswith(OPEN_PREFIXES):
            return await continuation(details)
        if bearer_ok(details.invocation_metadata, token):
            return await continuation(details)
        handler = await continuation(details)
        return None if handler is None else _deny(handler)


def bearer_ok(metadata: Iterable[tuple[str, Any]] | None, token: str) -> bool:
    want = ("Bearer " + token).encode()
    ok = False
    for k, v in metadata or ():
        if k == "authorization":
            got = v.encode() if isinstance(v, str) else bytes(v)
            ok = hmac.compare_digest(got, want) or ok
    return ok


_DENIED = "ShadowControl needs 'authorization: Bearer <token>' (server.admin_token_file / admin_token_env): missing or wrong"


def _deny(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def unary(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)

    async def streaming(request_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)

    async def unary_stream(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)
        yield  # pragma: no cover

    async def stream_stream(request_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)
        yield  # pragma: no cover

    kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(streaming, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
    return grpc.unary_unary_rpc_method_handler(unary, **kw)


def admin_interceptors(security: Security) -> list[AdminAuth]:
    """The admin server's interceptors: always one AdminAuth (a token set later by a reload applies)."""
    return [AdminAuth(security.admin_token)]


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class _TokenInterceptor(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.StreamUnaryClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every unary and client-streaming call of a grpc.aio channel."""

    def __init__(self, token: str) -> None:
        self.md = token_metadata(token)

    def _details(self, d):
        return d._replace(metadata=grpc.aio.Metadata(*tuple(d.metadata or ()), *self.md))

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(self._details(client_call_details), request_iterator)


def token_interceptors(token: str) -> list:
    """Client interceptors for a grpc.aio channel to an admin port ([] without a token)."""
    return [_TokenInterceptor(token)] if token else []


# -- server TLS, reloadable ------------------------------------------------------------------------
def _read(path: str, where: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror or e}") from None


class ServerTlsSource:
    """The certificate of one server port, from files; ``credentials()`` for ``add_secure_port``;
    ``reload()`` re-reads the files (checked first: a bad file raises ConfigError and the old
    certificate stays)."""

    def __init__(self, tls: ServerTls) -> None:
        self.tls = tls
        self._lock = threading.Lock()
        self._pending = None
        self._config = self._load(tls)

    @staticmethod
    def _load(t: ServerTls):
        check_server_pem(t.cert, t.key, "", t.where)
        check_server_pem("", "", t.client_ca, t.where + ".client_ca")
        pair = (_read(t.key, t.where + ".key"), _read(t.cert, t.where + ".cert"))
        ca = _read(t.client_ca, t.where + ".client_ca") if t.client_ca else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self._config, self._fetch, require_client_authentication=bool(self.tls.client_ca))

    def _fetch(self):  # grpc calls it before each new TLS handshake; None = keep the current one
        with self._lock:
            cfg, self._pending = self._pending, None
        return cfg

    def prepare(self, tls: ServerTls | None = None):
        """Read and check the files of ``tls`` (default: the current ones); (tls, the new
        configuration), not yet in use. Whether clients must present a certificate is fixed when
        the port opens: a reload keeps it."""
        tls = tls if tls is not None else self.tls
        return tls, self._load(tls)

    def apply(self, prepared) -> None:
        tls, cfg = prepared
        with self._lock:
            self.tls = tls
            self._config = self._pending = cfg

    def reload(self) -> None:
        self.apply(self.prepare())


def server_source(tls: ServerTls | None) -> ServerTlsSource | None:
    return ServerTlsSource(tls) if tls is not None else None


def bind(server: grpc.aio.Server, address: str, key: str, source: ServerTlsSource | None) -> int:
    """Listen on ``address`` (TLS when ``source``); OSError naming ``key`` when it cannot."""
    try:
        port = server.add_secure_port(address, source.credentials()) if source is not None else server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"{key}: cannot listen on {address}: {e}") from None
    if port == 0:
        raise OSError(f"{key}: cannot listen on {address} (in use?)")
    return port


# -- client TLS (upstream Triton, admin clients) ---------------------------------------------------
def channel_credentials(tls: ClientTls) -> tuple[grpc.ChannelCredentials, list[tuple[str, Any]]]:
    """(credentials, extra channel options) for a TLS channel; reads the files now (ConfigError
    naming the key when one cannot be read or is not PEM)."""
    check_server_pem(tls.cert, tls.key, "", tls.where)
    check_server_pem("", "", tls.ca, tls.where + ".ca")
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca, tls.where + ".ca") if tls.ca else None,
        private_key=_read(tls.key, tls.where + ".key") if tls.key else None,
        certificate_chain=_read(tls.cert, tls.where + ".cert") if tls.cert else None,
    )
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return creds, options


def metadata_options(security: Security) -> list[tuple[str, int]]:
    """grpc options bounding received metadata (server or channel); [] = grpc's defaults."""
    n = security.max_metadata_bytes
    return [("grpc.max_metadata_size", n), ("grpc.absolute_max_metadata_size", n)] if n else []


# -- shadow metadata -------------------------------------------------------------------------------
def shadow_metadata(metadata: tuple | None, allow: frozenset[str]) -> tuple:
    """What a shadow call carries: the caller's allow-listed keys, then ``x-shadow-request: 1``."""
    if not metadata:
        return SHADOW_METADATA
    kept = tuple((k, v) for k, v in metadata if k in allow and k != "x-shadow-request")
    return kept + SHADOW_METADATA if kept else SHADOW_METADATA


__all__ = [
    "AdminAuth", "ServerTlsSource", "admin_interceptors", "bearer_ok", "bind", "channel_credentials", "metadata_options",
    "server_source", "shadow_metadata", "token_interceptors", "token_metadata",
]  # fmt: skip
