# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""PROTOTYPE (issue 14, item 4): the server side of unary gRPC over HTTP/2 cleartext in C.

libnghttp2's sans-IO server session driven by an asyncio (uvloop) protocol, so a unary call
served costs a few C callbacks and one Python call instead of grpc.aio's server machinery
(completion queue, call objects, servicer task). Not wired into the front: shadowgrpc/h2server.py
uses it to measure what a compiled front would cost (benchmarks/h2_server_spike.py).

``ServerConnection(loop, handler, cancelled, max_message)`` is the protocol of one accepted
connection (h2c with prior knowledge, as gRPC clients speak it):

- Each stream's request headers are read here: ``:path``, ``grpc-timeout`` (seconds, or None),
  ``grpc-encoding``, and the application metadata as ((key, value), ...) with str keys, str
  values, and bytes values for ``-bin`` keys (base64-decoded), without the headers grpc keeps to
  itself (content-type, te, user-agent, grpc-accept-encoding, grpc-encoding, grpc-timeout).
- Its one message (5-byte prefix) is written into a ``bytes`` of its exact length as DATA
  arrives (gzip / deflate messages are decompressed); more than ``max_message`` is
  RESOURCE_EXHAUSTED, a second message INTERNAL, as grpc-core's server says.
- When the request ends: ``handler(stream_id, path, metadata, timeout_s, message)`` (called in
  the receive path; it may answer at once or later). Its exception answers UNKNOWN.
- ``respond(stream_id, message, initial=(), trailing=())``: HEADERS (:status 200,
  content-type application/grpc), DATA (the prefix, then the message, pulled by nghttp2's data
  provider under the peer's flow control), trailers (grpc-status 0).
  ``respond_error(stream_id, code, details, trailing=())``: a trailers-only answer with
  ``grpc-status`` and the percent-encoded ``grpc-message``.
- A stream the client resets (RST_STREAM), or that the lost connection takes with it, after the
  handler got it and before its answer was sent: ``cancelled(stream_id)``.
- Writes of everything answered in one loop iteration leave in one ``transport.write``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.stdio cimport snprintf
from libc.string cimport memcmp

from shadowgrpc._h2_common cimport *
from shadowgrpc._nghttp2 cimport *
from shadowgrpc._nghttp2_server cimport *

import base64

cdef enum:
    MAX_STREAMS = 1024       # SETTINGS_MAX_CONCURRENT_STREAMS (grpc-core: unlimited)

cdef object _b64encode = base64.b64encode
cdef bytes _EMPTY = b""
cdef const char *_HEX = "0123456789ABCDEF"


cdef double _parse_timeout(const uint8_t *p, size_t n) noexcept:
    # grpc-timeout: 1-8 digits and a unit (H M S m u n); -1 when malformed (then: no deadline)
    cdef double v = 0.0
    cdef size_t i
    cdef uint8_t unit
    if n < 2 or n > 9:
        return -1.0
    for i in range(n - 1):
        if p[i] < 48 or p[i] > 57:
            return -1.0
        v = v * 10.0 + (p[i] - 48)
    unit = p[n - 1]
    if unit == 72:    # H
        return v * 3600.0
    if unit == 77:    # M
        return v * 60.0
    if unit == 83:    # S
        return v
    if unit == 109:   # m
        return v * 1e-3
    if unit == 117:   # u
        return v * 1e-6
    if unit == 110:   # n
        return v * 1e-9
    return -1.0


def percent_encode(str details):
    """``grpc-message`` as the gRPC spec writes it: UTF-8, bytes outside 0x20-0x7E and '%' as %XX."""
    cdef bytes raw = details.encode("utf-8", "replace")
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw), i, k = 0
    cdef const unsigned char *s = <const unsigned char *>PyBytes_AS_STRING(raw)
    cdef bytes out
    cdef char *o
    for i in range(n):
        if s[i] < 0x20 or s[i] > 0x7E or s[i] == 37:
            k += 1
    if k == 0:
        return raw
    out = PyBytes_FromStringAndSize(NULL, n + 2 * k)
    o = PyBytes_AS_STRING(out)
    k = 0
    for i in range(n):
        if s[i] < 0x20 or s[i] > 0x7E or s[i] == 37:
            o[k] = 37
            o[k + 1] = _HEX[s[i] >> 4]
            o[k + 2] = _HEX[s[i] & 15]
            k += 3
        else:
            o[k] = <char>s[i]
            k += 1
    return out


cdef class Stream:
    """One unary call being served: the request coming in, then the answer going out."""
    cdef int32_t stream_id
    cdef bytes path
    cdef list metadata
    cdef double timeout
    cdef bytes encoding
    cdef MessageIn msg_in
    cdef bytes message
    cdef int error_code
    cdef str error_details
    cdef bint handed      # the handler has it
    cdef bint answered    # respond / respond_error submitted
    # the answer
    cdef bytes payload
    cdef MessageOut out
    cdef list trailer_keep  # trailing metadata of an OK answer: [k0, v0, k1, v1, ...] (bytes)


cdef inline Stream _stream_of(ServerConnection conn, int32_t stream_id):
    return <Stream>conn.streams.get(stream_id)


cdef ssize_t _read_response(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
                            nghttp2_data_source *source, void *user_data) noexcept:
    # nghttp2 pulls the answer: the 5-byte prefix, then the message; at the end the trailers.
    cdef Stream s = <Stream>source.ptr
    cdef size_t n = out_copy(&s.out, PyBytes_AS_STRING(s.payload), buf, length)
    cdef nghttp2_nv fixed[16]
    cdef nghttp2_nv *nva = fixed
    cdef Py_ssize_t i, nt
    if s.out.sent >= s.out.total:
        data_flags[0] |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM
        s.payload = None
        nt = 1 + (len(s.trailer_keep) // 2 if s.trailer_keep is not None else 0)
        if nt > 16:
            nva = <nghttp2_nv *>PyMem_Malloc(nt * sizeof(nghttp2_nv))
            if nva is NULL:
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        nv_set(&nva[0], "grpc-status", 11, "0", 1)
        for i in range(1, nt):
            nv_set(&nva[i], PyBytes_AS_STRING(s.trailer_keep[2 * i - 2]), PyBytes_GET_SIZE(s.trailer_keep[2 * i - 2]),
                PyBytes_AS_STRING(s.trailer_keep[2 * i - 1]), PyBytes_GET_SIZE(s.trailer_keep[2 * i - 1]))
        nghttp2_submit_trailer(session, stream_id, nva, nt)  # copies the fields
        if nva is not fixed:
            PyMem_Free(nva)
        s.trailer_keep = None
    return <ssize_t>n


cdef int _on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) noexcept:
    cdef ServerConnection conn = <ServerConnection>user_data
    cdef Stream s
    if frame.hd.type != NGHTTP2_HEADERS or frame.headers.cat != NGHTTP2_HCAT_REQUEST:
        return 0
    try:
        s = Stream()
        s.stream_id = frame.hd.stream_id
        s.timeout = -1.0
        conn.streams[frame.hd.stream_id] = s
        return 0
    except BaseException as e:
        conn.note_error(e)
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                    const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data) noexcept:
    # The headers every call has are read here in C; only application metadata becomes objects.
    cdef ServerConnection conn = <ServerConnection>user_data
    cdef Stream s = None
    cdef bytes k, v
    try:
        if frame.hd.type != NGHTTP2_HEADERS or frame.headers.cat != NGHTTP2_HCAT_REQUEST:
            return 0  # request trailers: gRPC clients send none
        s = _stream_of(conn, frame.hd.stream_id)
        if s is None:
            return 0
        if namelen and name[0] == 58:  # a pseudo-header
            if name_is(name, namelen, ":path", 5):
                s.path = PyBytes_FromStringAndSize(<const char *>value, valuelen)
            return 0
        if name_is(name, namelen, "grpc-timeout", 12):
            s.timeout = _parse_timeout(value, valuelen)
            return 0
        if (name_is(name, namelen, "content-type", 12) or name_is(name, namelen, "te", 2) or name_is(name, namelen, "user-agent", 10)
                or name_is(name, namelen, "grpc-accept-encoding", 20)):
            return 0
        if name_is(name, namelen, "grpc-encoding", 13):
            s.encoding = PyBytes_FromStringAndSize(<const char *>value, valuelen)
            return 0
        k = PyBytes_FromStringAndSize(<const char *>name, namelen)
        v = PyBytes_FromStringAndSize(<const char *>value, valuelen)
        if s.metadata is None:
            s.metadata = []
        if namelen > 4 and memcmp(name + namelen - 4, "-bin", 4) == 0:
            # padding: (4 - n % 4) % 4 written with & (under cdivision, -n % 4 is negative in C)
            s.metadata.append((k.decode("latin-1"), bin_value(v)))
        else:
            s.metadata.append((k.decode("latin-1"), v.decode("latin-1")))
        return 0
    except BaseException as e:  # a malformed header value: the call fails, the connection goes on
        conn.note_error(e)
        if s is not None and s.error_code == 0:
            s.error_code = INTERNAL
            s.error_details = f"malformed request header: {e}"
        return 0


cdef int _on_data(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t length,
                  void *user_data) noexcept:
    cdef ServerConnection conn = <ServerConnection>user_data
    cdef Stream s
    cdef size_t i = 0
    try:
        s = _stream_of(conn, stream_id)
        if s is None or s.error_code:
            return 0
        while in_feed(&s.msg_in, data, length, &i):  # a message's prefix: check, then its storage
            if s.msg_in.nmessages:
                s.error_code = INTERNAL
                s.error_details = "Too many messages for a unary call"
                s.message = None
                return 0
            if s.msg_in.mlen > conn.max_message:
                s.error_code = RESOURCE_EXHAUSTED
                s.error_details = f"Received message larger than max ({s.msg_in.mlen} vs. {conn.max_message})"
                return 0
            s.message = PyBytes_FromStringAndSize(NULL, s.msg_in.mlen) if s.msg_in.mlen else _EMPTY
            s.msg_in.buf = PyBytes_AS_STRING(s.message)
        return 0
    except BaseException as e:
        conn.note_error(e)
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _on_frame(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) noexcept:
    cdef ServerConnection conn = <ServerConnection>user_data
    cdef Stream s
    if (frame.hd.type != NGHTTP2_HEADERS and frame.hd.type != NGHTTP2_DATA) or not (frame.hd.flags & NGHTTP2_FLAG_END_STREAM):
        return 0
    try:
        s = _stream_of(conn, frame.hd.stream_id)
        if s is not None and not s.handed:
            conn.request_ended(s)
    except BaseException as e:
        conn.note_error(e)
    return 0


cdef int _on_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data) noexcept:
    cdef ServerConnection conn = <ServerConnection>user_data
    cdef Stream s
    try:
        s = <Stream>conn.streams.pop(stream_id, None)
        if s is not None and s.handed and not (s.answered and s.payload is None):
            conn.closed_early += 1
            if conn.cancelled is not None:
                conn.cancelled(stream_id)
    except BaseException as e:
        conn.note_error(e)
    return 0


cdef class ServerConnection:
    """The asyncio protocol of one accepted HTTP/2 connection serving unary gRPC calls (see the
    module doc). ``handler`` and ``cancelled`` may also be set after construction (``bind``)."""

    cdef nghttp2_session *session
    cdef readonly dict streams
    cdef readonly object transport
    cdef object __weakref__  # H2Front keeps its connections in a WeakSet (closed at shutdown)
    cdef object loop
    cdef object handler
    cdef object cancelled
    cdef readonly Py_ssize_t max_message
    cdef bint flush_pending
    cdef bint in_recv
    cdef bint paused
    cdef readonly bint closed
    cdef readonly object error
    cdef readonly long long requests
    cdef readonly long long answered
    cdef readonly long long closed_early

    def __cinit__(self):
        self.session = NULL

    def __init__(self, loop, handler=None, cancelled=None, Py_ssize_t max_message=4 * 1024 * 1024):
        cdef nghttp2_session_callbacks *cbs
        cdef nghttp2_option *opt
        cdef int rv
        self.loop = loop
        self.handler = handler
        self.cancelled = cancelled
        self.max_message = max_message
        self.streams = {}
        if nghttp2_session_callbacks_new(&cbs) != 0:
            raise MemoryError()
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, _on_begin_headers)
        nghttp2_session_callbacks_set_on_header_callback(cbs, _on_header)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, _on_data)
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, _on_frame)
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, _on_close)
        if nghttp2_option_new(&opt) != 0:
            nghttp2_session_callbacks_del(cbs)
            raise MemoryError()
        nghttp2_option_set_max_send_header_block_length(opt, MAX_HEADER_LIST)
        rv = nghttp2_session_server_new2(&self.session, cbs, <void *>self, opt)
        nghttp2_session_callbacks_del(cbs)
        nghttp2_option_del(opt)
        if rv != 0:
            raise MemoryError(nghttp2_strerror(rv).decode())

    def __dealloc__(self):
        if self.session is not NULL:
            nghttp2_session_del(self.session)
            self.session = NULL

    def bind(self, handler, cancelled):
        self.handler = handler
        self.cancelled = cancelled

    @property
    def open_streams(self):
        return len(self.streams)

    cdef note_error(self, e):
        self.error = e

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        settings(self.session, MAX_STREAMS)
        self._flush()

    def data_received(self, data):
        cdef ssize_t n
        if self.closed:
            return
        self.in_recv = True
        try:
            n = nghttp2_session_mem_recv(self.session, <const uint8_t *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        finally:
            self.in_recv = False
        if n < 0:  # nghttp2 has queued GOAWAY (bad preface, protocol error): send it, then close
            self._flush()
            self._abort(ConnectionError(f"HTTP/2 error from client: {nghttp2_strerror(<int>n).decode()}"))
            return
        self._flush()
        if nghttp2_session_want_read(self.session) == 0 and nghttp2_session_want_write(self.session) == 0:
            self.transport.close()

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self._lost()

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self._flush()

    # -- calls --------------------------------------------------------------------------------
    cdef request_ended(self, Stream s):
        cdef object message
        s.handed = True
        self.requests += 1
        if s.error_code:
            self._error(s, s.error_code, s.error_details, None)
            return
        if s.msg_in.nmessages == 0:
            self._error(s, INTERNAL, "No request message for a unary call", None)  # grpc-core: "Missing request message"
            return
        message = s.message
        s.message = None
        if s.msg_in.compressed:
            message = decompress(message, s.encoding)
            if message is None:
                self._error(s, UNIMPLEMENTED, f"Compression algorithm {s.encoding!r} not supported", None)
                return
        try:
            self.handler(s.stream_id, s.path, tuple(s.metadata) if s.metadata is not None else (),
                         s.timeout if s.timeout >= 0 else None, message)
        except BaseException as e:
            self.note_error(e)
            if not s.answered:
                self._error(s, UNKNOWN, f"Exception calling application: {e}", None)

    def respond(self, int32_t stream_id, bytes message, initial=None, trailing=None):
        """Answer a call OK with ``message``; False when the stream is gone (reset, lost)."""
        cdef Stream s = self.streams.get(stream_id)
        cdef nghttp2_nv fixed[16]
        cdef nghttp2_nv *nva = fixed
        cdef nghttp2_data_provider prd
        cdef Py_ssize_t n, nh = 0, ni
        cdef list keep = None
        cdef int rv
        cdef bytes k, v
        if s is None or s.answered or self.closed:
            return False
        n = PyBytes_GET_SIZE(message)
        ni = len(initial) if initial else 0
        if ni:
            keep = _encode_md(initial)
            if ni + 2 > 16:
                nva = <nghttp2_nv *>PyMem_Malloc((ni + 2) * sizeof(nghttp2_nv))
                if nva is NULL:
                    raise MemoryError()
        try:
            nv_set(&nva[nh], ":status", 7, "200", 3); nh += 1
            nv_set(&nva[nh], "content-type", 12, "application/grpc", 16); nh += 1
            for i in range(ni):
                k = keep[2 * i]
                v = keep[2 * i + 1]
                nv_set(&nva[nh], PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k), PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v)); nh += 1
            s.trailer_keep = _encode_md(trailing) if trailing else None
            s.payload = message
            out_start(&s.out, n, False)
            prd.source.ptr = <void *>s
            prd.read_callback = _read_response
            rv = nghttp2_submit_response(self.session, stream_id, nva, nh, &prd)  # copies the fields
        finally:
            if nva is not fixed:
                PyMem_Free(nva)
        if rv != 0:
            s.payload = None
            return False
        s.answered = True
        self.answered += 1
        self._schedule()
        return True

    def respond_error(self, int32_t stream_id, int code, str details, trailing=()):
        """Answer a call with a gRPC error (trailers-only); False when the stream is gone."""
        cdef Stream s = self.streams.get(stream_id)
        if s is None or s.answered or self.closed:
            return False
        return self._error(s, code, details, trailing)

    cdef bint _error(self, Stream s, int code, str details, trailing):
        cdef nghttp2_nv fixed[16]
        cdef nghttp2_nv *nva = fixed
        cdef Py_ssize_t nh = 0, nt
        cdef list keep = _encode_md(trailing) if trailing else None
        cdef char cbuf[16]
        cdef bytes msg = percent_encode(details) if details else None
        cdef bytes k, v
        cdef int rv
        nt = len(keep) // 2 if keep is not None else 0
        if nt + 4 > 16:
            nva = <nghttp2_nv *>PyMem_Malloc((nt + 4) * sizeof(nghttp2_nv))
            if nva is NULL:
                raise MemoryError()
        try:
            nv_set(&nva[nh], ":status", 7, "200", 3); nh += 1
            nv_set(&nva[nh], "content-type", 12, "application/grpc", 16); nh += 1
            nv_set(&nva[nh], "grpc-status", 11, cbuf, snprintf(cbuf, 16, "%d", code)); nh += 1
            if msg is not None:
                nv_set(&nva[nh], "grpc-message", 12, PyBytes_AS_STRING(msg), PyBytes_GET_SIZE(msg)); nh += 1
            for i in range(nt):
                k = keep[2 * i]
                v = keep[2 * i + 1]
                nv_set(&nva[nh], PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k), PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v)); nh += 1
            rv = nghttp2_submit_response(self.session, s.stream_id, nva, nh, NULL)  # END_STREAM on the HEADERS
        finally:
            if nva is not fixed:
                PyMem_Free(nva)
        if rv != 0:
            return False
        s.answered = True
        self.answered += 1
        self._schedule()
        return True

    cdef inline _schedule(self):
        if not self.in_recv and not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self):
        self.flush_pending = False
        if self.transport is None or self.closed or self.paused:
            return
        out = session_output(self.session)
        if type(out) is int:
            self._abort(ConnectionError(f"HTTP/2 error: {nghttp2_strerror(out).decode()}"))
        elif out is not None:
            self.transport.write(out)

    def goaway(self):
        """Graceful shutdown: GOAWAY naming the last stream taken; those finish, no new ones."""
        if not self.closed and self.transport is not None:
            nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(self.session),
                                  NGHTTP2_NO_ERROR, NULL, 0)
            self._flush()

    def close(self):
        """Close now (GOAWAY, then the transport); calls the handler has get ``cancelled``."""
        if not self.closed and self.transport is not None:
            nghttp2_session_terminate_session(self.session, NGHTTP2_NO_ERROR)
            self._flush()
            self.transport.close()
        self._lost()

    cdef _abort(self, exc):
        self.note_error(exc)
        if self.transport is not None:
            self.transport.abort()
        self._lost()

    cdef _lost(self):
        cdef Stream s
        if self.closed:
            return
        self.closed = True
        streams, self.streams = self.streams, {}
        for s in streams.values():
            if s.handed and not (s.answered and s.payload is None):
                self.closed_early += 1
                if self.cancelled is not None:
                    try:
                        self.cancelled(s.stream_id)
                    except BaseException as e:
                        self.note_error(e)


cdef list _encode_md(md):
    # ((key, value), ...) -> [k0, v0, ...] as HTTP/2 fields: -bin values base64 (no padding, as grpc-core)
    cdef list out = []
    cdef bytes k
    for key, value in md:
        k = key.encode("ascii") if isinstance(key, str) else key
        out.append(k)
        if k.endswith(b"-bin"):
            out.append(_b64encode(value if isinstance(value, bytes) else value.encode()).rstrip(b"="))
        else:
            out.append(value.encode("ascii") if isinstance(value, str) else value)
    return out
