"""Client side of shadowgrpc: a running front's admin API (ShadowControl), shared by the CLI and the
demo; the client-side mirror (``mirror``, ``intercept``: grpc channel interceptors and tritonclient
helpers that send each call to live and to a shadow endpoint, then report the pair to a front); the
typed clients (``typed``).

grpc's default receive limit is 4 MiB per message, and a report grows with routes, slices and,
with ``snapshot=True``, the serialized state: the channel here takes messages up to
``max_message_mb`` (default 256, like ``server.max_message_mb``; 0: no limit) both ways.
"""

from __future__ import annotations

DEFAULT_MAX_MESSAGE_MB = 256
MAX_MESSAGE_MB_LIMIT = 2047  # grpc's limits are int32 bytes


def channel_options(max_message_mb: int = DEFAULT_MAX_MESSAGE_MB) -> list[tuple[str, int]]:
    """grpc channel options for messages up to ``max_message_mb`` MiB both ways (0: unlimited)."""
    if not 0 <= max_message_mb <= MAX_MESSAGE_MB_LIMIT:
        raise ValueError(f"max_message_mb: must be 0 (no limit) to {MAX_MESSAGE_MB_LIMIT}, got {max_message_mb}")
    n = -1 if max_message_mb == 0 else max_message_mb * 1024 * 1024
    return [("grpc.max_receive_message_length", n), ("grpc.max_send_message_length", n)]


def fetch_report(
    target: str, model: str = "", timeout: float = 5.0, snapshot: bool = False, max_message_mb: int = DEFAULT_MAX_MESSAGE_MB,
    *, token: str = "", credentials=None, server_name: str = "",
):  # fmt: skip
    """``ShadowControl.GetReport`` of the front whose admin port is ``target`` (a
    ``shadowgrpc.v1.Report``); raises ``grpc.RpcError`` as the call failed. A secured admin port:
    ``token`` (sent as ``authorization: Bearer <token>``; server.admin_token_file/env) and/or
    ``credentials`` (``grpc.ssl_channel_credentials(ca, key, cert)``: TLS, with a client certificate
    for mTLS; ``admin_credentials`` reads them from files); ``server_name``: the name to check in
    the server's certificate when it differs from ``target``'s host."""
    import grpc

    from ..v1 import shadow_pb2, shadow_pb2_grpc

    options = channel_options(max_message_mb) + ([("grpc.ssl_target_name_override", server_name)] if server_name else [])
    ch = grpc.secure_channel(target, credentials, options=options) if credentials is not None else grpc.insecure_channel(target, options=options)
    with ch:
        stub = shadow_pb2_grpc.ShadowControlStub(ch)
        md = (("authorization", f"Bearer {token}"),) if token else None
        return stub.GetReport(shadow_pb2.GetReportRequest(model=model, snapshot=snapshot), timeout=timeout, metadata=md)


def admin_credentials(ca: str = "", cert: str = "", key: str = ""):
    """``grpc.ssl_channel_credentials`` from PEM files: ``ca`` (the admin port's CA; "" = the
    system's roots), ``cert`` + ``key`` (a client certificate, for an admin port with mTLS).
    OSError when a file cannot be read."""
    import grpc

    def read(path: str) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert))


# Imported on first use (module __getattr__): grpc-heavy, and `import shadowgrpc.client` stays cheap.
_LAZY = {
    "TypedClient": "typed",
    "AsyncTypedClient": "typed",
    "ShadowMirror": "mirror",
    "AsyncShadowMirror": "mirror",
    "mirror_interceptor": "intercept",
    "aio_mirror_interceptor": "intercept",
    "mirror_tritonclient": "intercept",
    "mirror_tritonclient_aio": "intercept",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_MAX_MESSAGE_MB",
    "MAX_MESSAGE_MB_LIMIT",
    "AsyncShadowMirror",
    "AsyncTypedClient",
    "ShadowMirror",
    "TypedClient",
    "admin_credentials",
    "aio_mirror_interceptor",
    "channel_options",
    "fetch_report",
    "mirror_interceptor",
    "mirror_tritonclient",
    "mirror_tritonclient_aio",
]
