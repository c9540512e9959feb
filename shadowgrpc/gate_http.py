"""The rollout gate over HTTP/1.1 (``server.gate_listen``; "" = off): the verdict (gate.py) in the
shapes Flagger and Argo Rollouts call, on the front's own asyncio loop (``asyncio.start_server``,
no threads). A single front serves its own report; ``serve --workers N``: the parent, the merged one.

Endpoints (README "Rollout gates"):

- ``GET /gate?route=R[&shadow=S]``: the gate document (gate.py) as JSON, 200 whenever a decision
  was made, whatever it is (an Argo Rollouts ``web`` metric reads it with ``jsonPath`` and tests it
  in ``successCondition``); 4xx/5xx only when no decision could be made.
- ``POST /flagger[?route=R&shadow=S]``: a Flagger webhook (confirm-promotion, pre-rollout,
  confirm-rollout, confirm-traffic-increase, rollout): the body is Flagger's payload
  ``{name, namespace, phase, checksum, metadata}``; route and shadow from the query or from
  ``metadata.route`` / ``metadata.shadow``. 200 when the decision is PASS (proceed), 412 otherwise
  (hold), the body naming the failing (else undecided) gates; Flagger logs it in the canary's events.
- ``POST /flagger/rollback``: a Flagger ``rollback`` hook: 200 (roll back) when the decision is FAIL
  or NOT_COMPARABLE, 412 otherwise.
- ``GET /healthz``: 200 ``{"status": "ok"}``, without auth (like gRPC health on the admin port).

Auth and TLS are the admin API's: with ``server.admin_token_file`` / ``admin_token_env`` every
endpoint but /healthz needs ``Authorization: Bearer <token>`` (compared in constant time; read per
request, so a reload's token applies); Flagger cannot send headers, so its endpoints also accept the
token as ``metadata.token`` in the payload (Flagger's documented pattern). With
``server.admin_tls`` the port speaks TLS with the same certificate, and with ``client_ca`` it
requires client certificates (mTLS). A ``gate_listen`` that is not loopback needs one of them.

Bounds: request line and each header line 8 KiB, at most 64 headers and 16 KiB of them, bodies 64
KiB (Content-Length only, no chunked bodies), 10 s to read a request, 100 requests per keep-alive
connection, 64 connections at once; answers to bad requests are JSON ``{"error", "status"}``: 400
malformed, 401 no/wrong token, 404 unknown path/route/shadow, 405 wrong method, 408 too slow, 411
no Content-Length, 413 body too large, 414/431 line or headers too large, 503 report unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from ._config_security import ServerTls, is_loopback
from .gate import FAIL, NOT_COMPARABLE, REPORT_TIMEOUT_S, GateError, decide, gate_json, hold_message, servicer_report
from .security import bearer_ok

log = logging.getLogger("shadowgrpc.gate")

MAX_LINE = 8192
MAX_HEADERS = 64
MAX_HEAD_BYTES = 16384
MAX_BODY = 65536
REQUEST_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 10.0
MAX_REQUESTS_PER_CONNECTION = 100
MAX_CONNECTIONS = 64
PARAMS = ("route", "shadow")
_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            411: "Length Required", 412: "Precondition Failed", 413: "Content Too Large", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip

Report = Callable[[str], Awaitable[object]]  # route -> shadowgrpc.v1.Report


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class _Closed(Exception):
    """The client closed the connection (between requests, or mid-request)."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def keep_alive(self) -> bool:
        conn = {t.strip().lower() for v in self.header("connection") for t in v.split(",")}
        return "keep-alive" in conn if self.version == "HTTP/1.0" else "close" not in conn


# -- reading a request ----------------------------------------------------------------------------
async def _line(reader: asyncio.StreamReader, status: int, what: str) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(status, f"{what} longer than {MAX_LINE} bytes") from None
    except asyncio.IncompleteReadError:
        raise _Closed() from None
    return line[:-2] if line.endswith(b"\r\n") else line[:-1]


def _token(b: bytes) -> bool:
    return bool(b) and all(c in _TOKEN_CHARS for c in b)


async def read_request(reader: asyncio.StreamReader, started: list[bool]) -> Request:
    """One request from ``reader``; HttpError for a bad one, _Closed at EOF. ``started[0]`` is set
    once its first byte arrived (a timeout before that is an idle keep-alive connection)."""
    first = await reader.read(1)
    if not first:
        raise _Closed()
    started[0] = True
    if not b"A" <= first <= b"Z":
        raise HttpError(400, "not an HTTP/1.1 request (TLS to a plaintext port, or garbage?)")
    parts = (first + await _line(reader, 414, "request line")).split(b" ")
    if len(parts) != 3 or not _token(parts[0]) or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpError(400, "malformed request line: expected 'METHOD /path?query HTTP/1.1'")
    method, target, version = parts[0].decode(), parts[1].decode("ascii", "replace"), parts[2].decode()
    headers: list[tuple[str, str]] = []
    size = 0
    while True:
        line = await _line(reader, 431, "a header line")
        if not line:
            break
        size += len(line)
        if len(headers) >= MAX_HEADERS or size > MAX_HEAD_BYTES:
            raise HttpError(431, f"too many headers: at most {MAX_HEADERS} and {MAX_HEAD_BYTES} bytes")
        name, sep, value = line.partition(b":")
        if not sep or not _token(name):
            raise HttpError(400, "malformed header line (folded lines and names with spaces are refused)")
        value = value.strip(b" \t")
        if any(c < 32 and c != 9 or c == 127 for c in value):
            raise HttpError(400, f"control characters in header {name.decode()!r}")
        headers.append((name.decode().lower(), value.decode("latin-1")))
    req = Request(method, "", {}, version, headers)
    if req.header("transfer-encoding"):
        raise HttpError(411, "chunked (Transfer-Encoding) bodies are not accepted: send Content-Length")
    lengths = set(req.header("content-length"))
    if len(lengths) > 1 or any(not v.isdigit() or not v.isascii() for v in lengths):
        raise HttpError(400, "malformed Content-Length")
    n = int(lengths.pop()) if lengths else 0
    if n > MAX_BODY:
        raise HttpError(413, f"body of {n} bytes: at most {MAX_BODY}")
    try:
        req.body = await reader.readexactly(n) if n else b""
    except asyncio.IncompleteReadError:
        raise _Closed() from None
    req.path, req.query = _target(target)
    return req


def _target(target: str) -> tuple[str, dict[str, str]]:
    if not (target.startswith("/") or target.startswith(("http://", "https://"))):
        raise HttpError(400, f"bad request target {target[:80]!r}: expected /path?query")
    u = urlsplit(target)
    try:
        pairs = parse_qsl(u.query, keep_blank_values=True, strict_parsing=bool(u.query), max_num_fields=8)
    except ValueError as e:
        raise HttpError(400, f"bad query string: {e}") from None
    query: dict[str, str] = {}
    for k, v in pairs:
        if k not in PARAMS:
            raise HttpError(400, f"unknown query parameter {k!r}: expected {', '.join(PARAMS)}")
        if k in query:
            raise HttpError(400, f"query parameter {k!r} given twice")
        query[k] = v
    return u.path or "/", query


def _response(status: int, body: dict | str, keep_alive: bool, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"), allow_nan=False)
    data = (text + "\n").encode()
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", "Content-Type: application/json", f"Content-Length: {len(data)}",
            "Cache-Control: no-store", f"Connection: {'keep-alive' if keep_alive else 'close'}", *(f"{k}: {v}" for k, v in headers)]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data


def _error(status: int, message: str) -> dict:
    return {"error": message, "status": status}


async def start_gate(settings, control, request_type, token: Callable[[], str]) -> GateServer | None:
    """The started gate of ``settings.gate_listen`` over a ShadowControl servicer ``control`` (a
    front's, or the workers parent's MergedControl); None when the key is "" (off)."""
    if not settings.gate_listen:
        return None
    gate = GateServer(settings.gate_listen, servicer_report(control, request_type), token, settings.security.admin_tls)
    await gate.start()
    return gate


def startup_line(gate: GateServer) -> str:
    return f"  rollout gate on {gate.url}: GET /gate?route=R (Argo Rollouts web metric), POST /flagger (Flagger webhook)"


def ssl_context(tls: ServerTls) -> ssl.SSLContext:
    """A server SSLContext from the admin port's files: its certificate, and with ``client_ca``
    client certificates required (mTLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca:
        ctx.load_verify_locations(cafile=tls.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# -- the server -----------------------------------------------------------------------------------
class GateServer:
    """``await start()`` (returns the port; OSError naming server.gate_listen when it cannot
    listen), ``url``, ``await stop()``. ``report``: async route -> Report; ``token``: the admin
    token now ("" = none); ``tls``: the admin port's ServerTls (None: plaintext)."""

    def __init__(self, address: str, report: Report, token: Callable[[], str], tls: ServerTls | None = None) -> None:
        self.address, self.report, self.token, self.tls = address, report, token, tls
        self.ssl = ssl_context(tls) if tls is not None else None
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        host = self.address.rpartition(":")[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host in ("[::]", "::") else host
        return f"{'https' if self.ssl else 'http'}://{host}:{self.port}"

    async def start(self) -> int:
        if not is_loopback(self.address) and not (self.token() or (self.tls is not None and self.tls.client_ca)):
            raise OSError(f"server.gate_listen: {self.address} is not a loopback address and the gate has no authentication: "
                          "set server.admin_token_file, server.admin_token_env or server.admin_tls.client_ca (mTLS)")  # fmt: skip
        host, _, port = self.address.rpartition(":")
        host = host[1:-1] if host.startswith("[") else host
        try:
            self._server = await asyncio.start_server(
                self._connection, host or None, int(port), ssl=self.ssl, limit=MAX_LINE, ssl_handshake_timeout=REQUEST_TIMEOUT_S if self.ssl else None
            )
        except OSError as e:
            raise OSError(f"server.gate_listen: cannot listen on {self.address}: {e.strerror or e}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def reload_tls(self, tls: ServerTls | None) -> None:
        """A reload: the certificate and key read again into the same context (the next handshake
        uses them). A changed client_ca needs a restart (logged)."""
        if self.ssl is None or tls is None:
            return
        try:
            self.ssl.load_cert_chain(tls.cert, tls.key)
        except (ssl.SSLError, OSError) as e:
            log.error("rollout gate: %s: certificate not reloaded, the old one stays: %s", tls.where, e)
            return
        if tls.client_ca != self.tls.client_ca:
            log.warning("server.admin_tls.client_ca changed: the rollout gate keeps the old one until a restart")
        self.tls = ServerTls(tls.cert, tls.key, self.tls.client_ca, tls.where)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=2.0)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        try:
            if len(self._conns) >= MAX_CONNECTIONS:
                await self._send(writer, _response(503, _error(503, f"more than {MAX_CONNECTIONS} connections open: retry"), False))
                return
            self._conns.add(task)
            for n in range(MAX_REQUESTS_PER_CONNECTION):
                started = [False]
                try:
                    req = await asyncio.wait_for(read_request(reader, started), REQUEST_TIMEOUT_S)
                except _Closed:
                    return
                except TimeoutError:
                    if started[0]:
                        await self._send(writer, _response(408, _error(408, f"request not received within {REQUEST_TIMEOUT_S:g} s"), False))
                    return
                except HttpError as e:
                    await self._send(writer, _response(e.status, _error(e.status, e.message), False, e.headers))
                    return
                keep = req.keep_alive and n + 1 < MAX_REQUESTS_PER_CONNECTION
                status, body, headers = await self.handle(req)
                await self._send(writer, _response(status, body, keep, headers))
                if not keep:
                    return
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)

    async def handle(self, req: Request) -> tuple[int, dict | str, tuple[tuple[str, str], ...]]:
        """(status, JSON body, extra headers) for a parsed request."""
        t0 = time.monotonic()
        try:
            status, body, headers = await self._route(req)
        except HttpError as e:
            status, body, headers = e.status, _error(e.status, e.message), e.headers
        except GateError as e:
            status, body, headers = e.status, _error(e.status, e.message), ()
        except Exception:
            log.exception("rollout gate: %s %s failed", req.method, req.path)
            status, body, headers = 500, _error(500, "the gate failed (see the front's log)"), ()
        (log.warning if status >= 500 else log.debug)("rollout gate: %s %s -> %d in %.1f ms", req.method, req.path, status, 1e3 * (time.monotonic() - t0))
        return status, body, headers

    async def _route(self, req: Request):
        endpoints = {"/gate": "GET", "/flagger": "POST", "/flagger/rollback": "POST", "/healthz": "GET"}
        if req.path not in endpoints:
            raise HttpError(404, f"no endpoint {req.path[:80]!r}: GET /gate, POST /flagger, POST /flagger/rollback, GET /healthz")
        if req.method != endpoints[req.path]:
            raise HttpError(405, f"{req.path} takes {endpoints[req.path]}, not {req.method}", (("Allow", endpoints[req.path]),))
        if req.path == "/healthz":
            return 200, {"status": "ok"}, ()
        payload = _flagger_payload(req) if req.method == "POST" else None
        self._authorize(req, payload)
        if payload is None:
            doc = await self._decide(req.query.get("route", ""), req.query.get("shadow", ""))
            return 200, gate_json(doc), ()
        meta = payload.get("metadata") or {}
        route, shadow = (_one(req.query, meta, k) for k in PARAMS)
        doc = await self._decide(route, shadow)
        rollback = req.path == "/flagger/rollback"
        go = doc["decision"] in (FAIL, NOT_COMPARABLE) if rollback else doc["pass"]
        body = {
            "proceed" if not rollback else "rollback": go, "decision": doc["decision"], "message": hold_message(doc),
            "route": doc["route"], "shadow": doc["shadow"], "failing_gates": doc["failing_gates"], "undecided_gates": doc["undecided_gates"],
            "canary": f"{payload.get('namespace', '')}/{payload.get('name', '')}", "phase": payload.get("phase", ""),
        }  # fmt: skip
        return (200 if go else 412), body, ()

    def _authorize(self, req: Request, payload: dict | None) -> None:
        token = self.token()
        if not token or bearer_ok((("authorization", v) for v in req.header("authorization")), token):
            return
        given = ((payload or {}).get("metadata") or {}).get("token", "")
        if payload is not None and given and hmac.compare_digest(given.encode(), token.encode()):
            return
        where = "'Authorization: Bearer <token>'" + (" or metadata.token in the Flagger payload" if payload is not None else "")
        raise HttpError(401, f"the rollout gate needs {where} (server.admin_token_file / admin_token_env): missing or wrong", (("WWW-Authenticate", 'Bearer realm="shadowgrpc"'),))

    async def _decide(self, route: str, shadow: str) -> dict:
        if not route:
            raise HttpError(400, "no route: add ?route=<model> (and optionally &shadow=<name>)")
        try:
            rep = await asyncio.wait_for(self.report(route), REPORT_TIMEOUT_S)
        except TimeoutError:
            raise GateError(503, f"the report took longer than {REPORT_TIMEOUT_S:g} s") from None
        return decide(rep, route, shadow)


def _flagger_payload(req: Request) -> dict:
    try:
        payload = json.loads(req.body) if req.body.strip() else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise HttpError(400, f"the body is not JSON (a Flagger webhook payload): {e}") from None
    if not isinstance(payload, dict):
        raise HttpError(400, "the body must be a JSON object {name, namespace, phase, checksum, metadata}")
    meta = payload.get("metadata")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise HttpError(400, "metadata must be an object of strings (Flagger's webhook metadata)")
    return payload


def _one(query: dict[str, str], meta: dict[str, str], key: str) -> str:
    q, m = query.get(key, ""), meta.get(key, "")
    if q and m and q != m:
        raise HttpError(400, f"{key}: {q!r} in the query but {m!r} in the payload's metadata")
    return q or m


__all__ = ["GateServer", "HttpError", "read_request", "ssl_context", "start_gate", "startup_line"]
