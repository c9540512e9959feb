# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Unary gRPC calls over HTTP/2 in C: libnghttp2's sans-IO session driven by an asyncio (uvloop)
protocol, with the gRPC framing (5-byte message prefix, trailers, ``grpc-status`` /
``grpc-message``, ``grpc-timeout``) done here, so a call costs one Python future and one
completion instead of grpc.aio's completion-queue events, tasks and call objects.

``Connection`` is the protocol of one HTTP/2 connection. The Python side (shadowgrpc/h2.py) owns
connecting, reconnecting, the channel state and the error type; this module only speaks the
protocol:

- ``submit(path, payload, metadata, timeout_s, future)`` opens a stream; the request is pulled by
  nghttp2's data provider straight from ``payload`` (flow control for messages of any size is
  nghttp2's); writes of all calls started in one loop iteration leave in one ``transport.write``.
- Responses: one message per call, written into a ``bytes`` of its exact length as DATA arrives;
  more than ``max_message`` is RESOURCE_EXHAUSTED (RST_STREAM CANCEL), as in grpc-core.
- Status as grpc-core gives it: ``grpc-status`` / percent-decoded ``grpc-message`` from the
  trailers (or a trailers-only answer), else from the HTTP status or the RST_STREAM code.
- Deadlines: ``grpc-timeout`` is sent, and one timer per connection (not one per call) fires at
  the earliest deadline: expired calls get RST_STREAM CANCEL and DEADLINE_EXCEEDED.
- GOAWAY: streams the server did not take are closed REFUSED_STREAM (UNAVAILABLE, and
  ``refused=True`` so the caller may retry them on a new connection); the connection takes no new
  calls (``usable`` False). Connection lost: every call open on it fails UNAVAILABLE.

Every outcome reaches the caller's future exactly once: ``fail(code, details, initial,
trailing, refused)`` (a Python callable) makes the exception.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.stdio cimport snprintf

from shadowgrpc._h2_common cimport *
from shadowgrpc._nghttp2 cimport *

import base64
import heapq
import time
from urllib.parse import unquote_to_bytes

cdef object _monotonic = time.monotonic
cdef object _b64encode = base64.b64encode
cdef bytes _EMPTY = b""

# Headers grpc-core keeps out of the metadata it gives the application.
cdef frozenset _RESERVED = frozenset({b"content-type", b"grpc-encoding", b"grpc-accept-encoding", b"grpc-status",
                                      b"grpc-message", b"te", b"user-agent"})

# HTTP status -> gRPC code when an answer has no grpc-status (grpc-core's mapping).
cdef dict _HTTP_TO_GRPC = {400: INTERNAL, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED, 404: UNIMPLEMENTED,
                           429: UNAVAILABLE, 502: UNAVAILABLE, 503: UNAVAILABLE, 504: UNAVAILABLE}
# RST_STREAM / GOAWAY error code -> gRPC code (grpc-core's mapping).
cdef dict _H2_TO_GRPC = {NGHTTP2_CANCEL: CANCELLED, NGHTTP2_ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED,
                         NGHTTP2_INADEQUATE_SECURITY: PERMISSION_DENIED, NGHTTP2_REFUSED_STREAM: UNAVAILABLE}


def grpc_timeout(double seconds):
    """The ``grpc-timeout`` header value for ``seconds`` (at most 8 digits and a unit, rounded up)."""
    cdef char buf[24]
    cdef size_t n = _grpc_timeout(buf, seconds)
    return buf[:n]


cdef size_t _grpc_timeout(char *buf, double seconds) noexcept:
    # grpc-timeout: at most 8 digits and a unit, rounded up (as grpc_timeout() below)
    cdef long long n = <long long>(seconds * 1e6 + 0.999)
    if n < 1:
        n = 1
    if n < 100000000:
        return snprintf(buf, 24, "%lldu", n)
    n = <long long>(seconds * 1e3 + 0.999)
    if n < 100000000:
        return snprintf(buf, 24, "%lldm", n)
    n = <long long>(seconds + 0.999)
    if n < 100000000:
        return snprintf(buf, 24, "%lldS", n)
    return snprintf(buf, 24, "99999999S")


@cython.no_gc  # no reference cycle runs through a call: not worth the collector's time (~2% of a call)
cdef class Call:
    """One unary call: the request being sent and the response being received."""
    cdef readonly object future
    cdef bytes payload
    cdef MessageOut out
    cdef readonly int32_t stream_id
    cdef double deadline
    cdef bint done
    cdef int http_status
    cdef int grpc_status
    cdef bytes grpc_message
    cdef list initial
    cdef list trailing
    cdef MessageIn msg_in
    cdef bytes message
    cdef int local_code
    cdef Py_ssize_t md_bytes  # size of the header block being received (HPACK's name + value + 32)
    cdef int md_cat           # which block: the response headers or the trailers
    cdef str local_details
    cdef bytes encoding


cdef inline Call _call_of(Connection conn, int32_t stream_id):
    return <Call>conn.calls.get(stream_id)


cdef ssize_t _read_request(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
                           nghttp2_data_source *source, void *user_data) noexcept:
    # nghttp2 pulls the request body: the 5-byte prefix, then the payload, no copy before this one.
    cdef Call c = <Call>source.ptr
    cdef size_t n = out_copy(&c.out, PyBytes_AS_STRING(c.payload), buf, length)
    if c.out.sent >= c.out.total:
        data_flags[0] |= NGHTTP2_DATA_FLAG_EOF
        c.payload = None  # the caller's bytes are not held past sending
    return <ssize_t>n


cdef inline int _atoi(const uint8_t *p, size_t n) noexcept:
    cdef int v = 0
    cdef size_t i
    if n == 0 or n > 9:
        return -2
    for i in range(n):
        if p[i] < 48 or p[i] > 57:
            return -2
        v = v * 10 + (p[i] - 48)
    return v


cdef int _on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                    const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data) noexcept:
    # The headers every answer has are read here in C; only application metadata becomes objects.
    cdef Connection conn = <Connection>user_data
    cdef Call c = None
    cdef bytes k, v
    try:
        if frame.hd.type != NGHTTP2_HEADERS:
            return 0
        c = _call_of(conn, frame.hd.stream_id)
        if c is None or c.local_code == RESOURCE_EXHAUSTED:
            return 0
        if frame.headers.cat != c.md_cat:
            c.md_cat = frame.headers.cat
            c.md_bytes = 0
        c.md_bytes += namelen + valuelen + 32
        if c.md_bytes > conn.max_metadata:  # as grpc's hard limit (server.max_metadata_kb, else 16 KiB)
            c.local_code = RESOURCE_EXHAUSTED
            c.local_details = f"Stream removed (received metadata size exceeds hard limit ({c.md_bytes} vs. {conn.max_metadata}))"
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame.hd.stream_id, NGHTTP2_CANCEL)
            return 0
        if namelen and name[0] == 58:  # a pseudo-header
            if name_is(name, namelen, ":status", 7):
                c.http_status = _atoi(value, valuelen)
            return 0
        if name_is(name, namelen, "grpc-status", 11):
            c.grpc_status = _atoi(value, valuelen)
            if c.grpc_status == -2:
                c.grpc_status = UNKNOWN
            return 0
        if name_is(name, namelen, "content-type", 12) or name_is(name, namelen, "grpc-accept-encoding", 20):
            return 0
        if name_is(name, namelen, "grpc-message", 12):
            c.grpc_message = PyBytes_FromStringAndSize(<const char *>value, valuelen)
            return 0
        if name_is(name, namelen, "grpc-encoding", 13):
            c.encoding = PyBytes_FromStringAndSize(<const char *>value, valuelen)
            return 0
        k = PyBytes_FromStringAndSize(<const char *>name, namelen)
        if k in _RESERVED:
            return 0
        v = PyBytes_FromStringAndSize(<const char *>value, valuelen)
        if k.endswith(b"-bin"):
            value_obj = bin_value(v)
        else:
            value_obj = v.decode("latin-1")
        # a first header block with END_STREAM is a trailers-only answer: grpc gives it as trailers
        if frame.headers.cat == NGHTTP2_HCAT_HEADERS or (frame.hd.flags & NGHTTP2_FLAG_END_STREAM):
            if c.trailing is None:
                c.trailing = []
            c.trailing.append((k.decode("latin-1"), value_obj))
        else:
            if c.initial is None:
                c.initial = []
            c.initial.append((k.decode("latin-1"), value_obj))
        return 0
    except BaseException as e:  # a malformed header value: the call fails, the connection goes on
        conn.note_error(e)
        if c is not None and c.local_code == 0:
            c.local_code = INTERNAL
            c.local_details = f"malformed response header: {e}"
        return 0


cdef int _on_data(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t length,
                  void *user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    cdef Call c
    cdef size_t i = 0
    try:
        c = _call_of(conn, stream_id)
        if c is None or c.local_code:
            return 0
        while in_feed(&c.msg_in, data, length, &i):  # a message's prefix: check, then its storage
            if c.msg_in.nmessages:
                c.local_code = UNIMPLEMENTED
                c.local_details = "more than one response message for a unary call"
            elif c.msg_in.mlen > conn.max_message:
                c.local_code = RESOURCE_EXHAUSTED
                # grpc-core's client wording (grpcio 1.8x), so both data planes say the same
                c.local_details = f"Stream removed (CLIENT: Received message larger than max ({c.msg_in.mlen} vs. {conn.max_message}))"
            if c.local_code:
                nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL)
                return 0
            c.message = PyBytes_FromStringAndSize(NULL, c.msg_in.mlen) if c.msg_in.mlen else _EMPTY
            c.msg_in.buf = PyBytes_AS_STRING(c.message)
        return 0
    except BaseException as e:
        conn.note_error(e)
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _on_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    try:
        conn.finish(stream_id, error_code)
    except BaseException as e:
        conn.note_error(e)
    return 0


cdef int _on_frame(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    if frame.hd.type == NGHTTP2_GOAWAY:
        conn.goaway = True
        conn.goaway_code = frame.goaway.error_code
    return 0


cdef class Connection:
    """The asyncio protocol of one HTTP/2 connection carrying unary gRPC calls (see the module doc).
    ``authority`` and ``scheme`` go in every request; ``fail(code, details, initial, trailing,
    refused)`` builds the exception a failed call raises; ``on_lost(connection, exc)`` is called
    once when the connection ends."""

    cdef nghttp2_session *session
    cdef readonly dict calls
    cdef readonly object transport
    cdef object loop
    cdef object fail
    cdef object on_lost
    cdef bytes authority
    cdef bytes scheme
    cdef bytes user_agent
    cdef readonly Py_ssize_t max_message
    cdef readonly Py_ssize_t max_metadata
    cdef list deadlines
    cdef object timer
    cdef double timer_at
    cdef bint flush_pending
    cdef bint paused
    cdef readonly bint closed
    cdef public bint goaway
    cdef public uint32_t goaway_code
    cdef readonly object error
    cdef readonly long long started
    cdef readonly long long completed
    cdef readonly bint transport_gone  # the transport's connection_lost came: its socket is closed
    cdef public object on_gone  # called with the connection once its transport is gone
    cdef readonly long long timers_armed  # deadline timers set: one per connection at a time, not per call

    def __cinit__(self):
        self.session = NULL

    def __init__(self, loop, bytes authority, bytes scheme, Py_ssize_t max_message, fail, on_lost, bytes user_agent=b"shadowgrpc-nghttp2",
                 Py_ssize_t max_metadata=0):
        cdef nghttp2_session_callbacks *cbs
        cdef nghttp2_option *opt
        cdef int rv
        self.loop = loop
        self.authority = authority
        self.scheme = scheme
        self.user_agent = user_agent
        self.max_message = max_message
        self.max_metadata = max_metadata if max_metadata > 0 else 16384  # grpc's default hard limit
        self.fail = fail
        self.on_lost = on_lost
        self.calls = {}
        self.deadlines = []
        self.timer = None
        self.timer_at = 0.0
        if nghttp2_session_callbacks_new(&cbs) != 0:
            raise MemoryError()
        nghttp2_session_callbacks_set_on_header_callback(cbs, _on_header)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, _on_data)
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, _on_close)
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, _on_frame)
        if nghttp2_option_new(&opt) != 0:
            nghttp2_session_callbacks_del(cbs)
            raise MemoryError()
        # Until the server's SETTINGS arrive, as many streams as gRPC servers allow by default.
        nghttp2_option_set_peer_max_concurrent_streams(opt, 100)
        nghttp2_option_set_max_send_header_block_length(opt, MAX_HEADER_LIST)
        rv = nghttp2_session_client_new2(&self.session, cbs, <void *>self, opt)
        nghttp2_session_callbacks_del(cbs)
        nghttp2_option_del(opt)
        if rv != 0:
            raise MemoryError(nghttp2_strerror(rv).decode())
        settings(self.session, 0)

    def __dealloc__(self):
        if self.session is not NULL:
            nghttp2_session_del(self.session)
            self.session = NULL

    @property
    def usable(self):
        """True while new calls may start on this connection."""
        return self.transport is not None and not self.closed and not self.goaway

    @property
    def in_flight(self):
        return len(self.calls)

    cdef note_error(self, e):
        self.error = e

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self._flush()

    def data_received(self, data):
        cdef ssize_t n
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
        if self.closed:
            return
        n = nghttp2_session_mem_recv(self.session, p, PyBytes_GET_SIZE(data))
        if n < 0:
            self._abort(f"HTTP/2 error from upstream: {nghttp2_strerror(<int>n).decode()}")
            return
        self._flush()
        if nghttp2_session_want_read(self.session) == 0 and nghttp2_session_want_write(self.session) == 0:
            self._abort("upstream closed the HTTP/2 session (GOAWAY)")

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self._lost(exc)
        self.transport_gone = True
        if self.on_gone is not None:
            self.on_gone(self)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self._flush()

    # -- calls --------------------------------------------------------------------------------
    def submit(self, bytes path, bytes payload, tuple metadata, timeout_s, future, bint compressed=False, bytes encoding=None):
        """Start a call: ``payload`` is the serialized request message (already compressed when
        ``compressed``, with ``encoding`` its grpc-encoding), ``metadata`` (key, value) pairs
        (str keys; bytes values for ``-bin`` keys), ``timeout_s`` None or seconds. The result or
        the exception arrives in ``future``. Returns the stream id."""
        cdef Call c = Call()
        cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
        cdef nghttp2_nv fixed[24]
        cdef nghttp2_nv *nva = fixed
        cdef nghttp2_data_provider prd
        cdef Py_ssize_t nh = 0, nmd = len(metadata) if metadata else 0
        cdef int32_t sid
        cdef char tbuf[24]
        cdef list keep = None
        cdef bytes k, v
        cdef double now
        if n > self.max_message:  # as grpc's client says it, before anything is sent
            raise self.fail(RESOURCE_EXHAUSTED, f"Sent message larger than max ({n} vs. {self.max_message})", (), (), False)
        if nmd + 10 > 24:
            nva = <nghttp2_nv *>PyMem_Malloc((nmd + 10) * sizeof(nghttp2_nv))
            if nva is NULL:
                raise MemoryError()
        try:
            nv_set(&nva[nh], ":method", 7, "POST", 4); nh += 1
            nv_set(&nva[nh], ":scheme", 7, PyBytes_AS_STRING(self.scheme), PyBytes_GET_SIZE(self.scheme)); nh += 1
            nv_set(&nva[nh], ":path", 5, PyBytes_AS_STRING(path), PyBytes_GET_SIZE(path)); nh += 1
            nv_set(&nva[nh], ":authority", 10, PyBytes_AS_STRING(self.authority), PyBytes_GET_SIZE(self.authority)); nh += 1
            nv_set(&nva[nh], "content-type", 12, "application/grpc", 16); nh += 1
            nv_set(&nva[nh], "te", 2, "trailers", 8); nh += 1
            nv_set(&nva[nh], "user-agent", 10, PyBytes_AS_STRING(self.user_agent), PyBytes_GET_SIZE(self.user_agent)); nh += 1
            nv_set(&nva[nh], "grpc-accept-encoding", 20, "identity,deflate,gzip", 21); nh += 1
            if timeout_s is not None:
                nv_set(&nva[nh], "grpc-timeout", 12, tbuf, _grpc_timeout(tbuf, timeout_s)); nh += 1
            if compressed:
                nv_set(&nva[nh], "grpc-encoding", 13, PyBytes_AS_STRING(encoding), PyBytes_GET_SIZE(encoding)); nh += 1
            if nmd:
                keep = []
                for key, value in metadata:
                    k = key.encode("ascii") if isinstance(key, str) else key
                    if k.endswith(b"-bin"):
                        v = _b64encode(value if isinstance(value, bytes) else value.encode()).rstrip(b"=")
                    else:
                        v = value.encode("ascii") if isinstance(value, str) else value
                    keep.append(k)
                    keep.append(v)
                    nv_set(&nva[nh], PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k), PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v)); nh += 1
            c.payload = payload
            out_start(&c.out, n, compressed)
            c.future = future
            c.grpc_status = -1
            prd.source.ptr = <void *>c
            prd.read_callback = _read_request
            sid = nghttp2_submit_request(self.session, NULL, nva, nh, &prd, NULL)  # copies the headers
        finally:
            if nva is not fixed:
                PyMem_Free(nva)
        if sid < 0:
            raise ConnectionError(f"cannot start an HTTP/2 stream: {nghttp2_strerror(sid).decode()}")
        c.stream_id = sid
        self.calls[sid] = c
        self.started += 1
        if timeout_s is not None:
            now = _monotonic()
            c.deadline = now + timeout_s
            heapq.heappush(self.deadlines, (c.deadline, sid))
            if self.timer is None or c.deadline < self.timer_at:
                self._arm(c.deadline, now)
            elif len(self.deadlines) > 64 + 2 * len(self.calls):  # finished calls' entries: drop them
                self.deadlines = [(d, s) for d, s in self.deadlines if s in self.calls]
                heapq.heapify(self.deadlines)
        if not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self._flush)
        return sid

    def cancel(self, int32_t stream_id, int code=CANCELLED, str details="Locally cancelled"):
        """End a call early (its task was cancelled, or its deadline passed): RST_STREAM CANCEL."""
        cdef Call c = self.calls.get(stream_id)
        if c is None:
            return
        if c.local_code == 0:
            c.local_code = code
            c.local_details = details
        if not self.closed:
            nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL)
            self._flush()

    cdef _arm(self, double at, double now):
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = at
        self.timers_armed += 1
        self.timer = self.loop.call_later(max(at - now, 0.0), self._expire)

    def _expire(self):
        cdef double now = _monotonic()
        cdef list dl = self.deadlines
        self.timer = None
        while dl and dl[0][0] <= now:
            _, sid = heapq.heappop(dl)
            if sid in self.calls:
                self.cancel(sid, DEADLINE_EXCEEDED, "Deadline Exceeded")
        while dl and dl[0][1] not in self.calls:
            heapq.heappop(dl)
        if dl:
            self._arm(dl[0][0], now)

    cdef finish(self, int32_t stream_id, uint32_t error_code):
        cdef Call c = self.calls.pop(stream_id, None)
        cdef int code
        cdef object details
        cdef object message
        if c is None or c.done:
            return
        c.done = True
        self.completed += 1
        fut = c.future
        if fut.done():
            return
        message = None
        if c.local_code:
            code, details = c.local_code, c.local_details
        elif c.grpc_status >= 0:
            code = c.grpc_status
            details = unquote_to_bytes(c.grpc_message).decode("utf-8", "replace") if c.grpc_message else ""
        elif error_code != NGHTTP2_NO_ERROR:
            code = _H2_TO_GRPC.get(error_code, INTERNAL)
            details = f"Stream closed by upstream with HTTP/2 error code {error_code}"
        elif c.http_status and c.http_status != 200:
            code = _HTTP_TO_GRPC.get(c.http_status, UNKNOWN)
            details = f"Received http2 header with status: {c.http_status}"
        else:
            code = INTERNAL
            details = "Stream ended without a grpc-status"
        if code == OK:
            if c.msg_in.nmessages == 0:
                code, details = UNIMPLEMENTED, "No response message for a unary call"
            elif c.msg_in.compressed:
                message = decompress(c.message, c.encoding)
                if message is None:
                    code, details = INTERNAL, f"Unexpected compressed message (grpc-encoding {c.encoding!r})"
            else:
                message = c.message
        if code == OK:
            fut.set_result(message)
        else:
            fut.set_exception(self.fail(code, details, tuple(c.initial or ()), tuple(c.trailing or ()),
                                        error_code == NGHTTP2_REFUSED_STREAM and c.http_status == 0))

    def _flush(self):
        self.flush_pending = False
        if self.transport is None or self.closed or self.paused:
            return
        out = session_output(self.session)
        if type(out) is int:
            self._abort(f"HTTP/2 error: {nghttp2_strerror(out).decode()}")
        elif out is not None:
            self.transport.write(out)

    cdef _abort(self, str why):
        if self.transport is not None:
            self.transport.abort()
        self._lost(ConnectionError(why))

    def close(self, bint abort=False):
        """Close the connection now (GOAWAY, then the transport); open calls fail UNAVAILABLE.
        ``abort``: the socket is closed at once, without waiting for a TLS close_notify exchange
        (asyncio waits up to 30 s for the peer's; a stopping front does not)."""
        if not self.closed and self.transport is not None:
            nghttp2_session_terminate_session(self.session, NGHTTP2_NO_ERROR)
            self._flush()
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        elif abort and self.transport is not None and not self.transport_gone:
            self.transport.abort()
        self._lost(None)

    cdef _lost(self, exc):
        cdef Call c
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        calls, self.calls = self.calls, {}
        self.deadlines = []
        why = f"Connection to upstream lost: {exc}" if exc else "Connection to upstream closed"
        for c in calls.values():
            if not c.done:
                c.done = True
                if not c.future.done():
                    c.future.set_exception(self.fail(UNAVAILABLE, why, (), (), c.http_status == 0 and c.out.sent == 0))
        if self.on_lost is not None:
            self.on_lost(self, exc)
