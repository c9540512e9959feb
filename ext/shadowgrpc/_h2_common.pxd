# What the client (_h2_c.pyx) and the server prototype (_h2srv_c.pyx) of the compiled data plane
# share: gRPC status codes, HTTP/2 settings, header helpers, and the two halves of gRPC's
# length-prefixed message framing over nghttp2 (sending a message from a data provider, receiving
# one into a bytes of its exact length), the session's output, and the message codings.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t
from libc.string cimport memcmp, memcpy

from shadowgrpc._nghttp2 cimport *

# gRPC status codes (grpc.StatusCode values)
cdef enum:
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    DEADLINE_EXCEEDED = 4
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16

cdef enum:
    WINDOW = 1 << 24         # per-stream receive window (SETTINGS_INITIAL_WINDOW_SIZE)
    CONN_WINDOW = 1 << 30    # connection receive window
    MAX_FRAME = 1 << 20      # largest DATA frame we accept
    MAX_HEADER_LIST = 1 << 24


cdef inline void nv_set(nghttp2_nv *nv, const char *name, size_t namelen, const char *value, size_t valuelen) noexcept:
    nv.name = <uint8_t *>name
    nv.namelen = namelen
    nv.value = <uint8_t *>value
    nv.valuelen = valuelen
    nv.flags = NGHTTP2_NV_FLAG_NONE


cdef inline bint name_is(const uint8_t *name, size_t namelen, const char *lit, size_t n) noexcept:
    return namelen == n and memcmp(name, lit, n) == 0


cdef inline object bin_value(bytes v):
    # a -bin metadata value: base64, sent unpadded by gRPC; the padding is (4 - n % 4) % 4 written
    # with & (under cdivision, -n % 4 is negative in C)
    import base64
    return base64.b64decode(v + b"=" * ((4 - (len(v) & 3)) & 3))


cdef inline int settings(nghttp2_session *session, uint32_t max_streams) noexcept:
    # our SETTINGS (window, frame and header-list sizes; a server adds its stream limit) and a
    # large connection window: flow control stays nghttp2's, with room for big messages
    cdef nghttp2_settings_entry iv[4]
    iv[0].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
    iv[0].value = WINDOW
    iv[1].settings_id = NGHTTP2_SETTINGS_MAX_FRAME_SIZE
    iv[1].value = MAX_FRAME
    iv[2].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
    iv[2].value = MAX_HEADER_LIST
    if max_streams:
        iv[3].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        iv[3].value = max_streams
    else:
        iv[3].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH
        iv[3].value = 0
    nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, iv, 4)
    return nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW)


cdef inline object session_output(nghttp2_session *session):
    # every byte the session has to send now (None: nothing), or the nghttp2 error code (an int)
    cdef const uint8_t *data
    cdef ssize_t n
    cdef list chunks = []
    while True:
        n = nghttp2_session_mem_send(session, &data)
        if n < 0:
            return <int>n
        if n == 0:
            break
        chunks.append(PyBytes_FromStringAndSize(<const char *>data, n))
    if not chunks:
        return None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# -- a message out: nghttp2's data provider pulls the 5-byte prefix, then the payload ---------------
cdef struct MessageOut:
    unsigned char prefix[5]
    Py_ssize_t sent
    Py_ssize_t total


cdef inline void out_start(MessageOut *m, Py_ssize_t n, bint compressed) noexcept:
    m.prefix[0] = 1 if compressed else 0
    m.prefix[1] = (n >> 24) & 0xFF
    m.prefix[2] = (n >> 16) & 0xFF
    m.prefix[3] = (n >> 8) & 0xFF
    m.prefix[4] = n & 0xFF
    m.sent = 0
    m.total = n + 5


cdef inline size_t out_copy(MessageOut *m, const char *payload, uint8_t *buf, size_t length) noexcept:
    # copies what fits of the rest into buf; the message is all sent when m.sent == m.total
    cdef size_t n = 0, k
    if m.sent < 5:
        k = 5 - m.sent
        if k > length:
            k = length
        memcpy(buf, m.prefix + m.sent, k)
        m.sent += k
        n = k
    if m.sent >= 5 and n < length:
        k = m.total - m.sent
        if k > length - n:
            k = length - n
        if k:
            memcpy(buf + n, payload + (m.sent - 5), k)
            m.sent += k
            n += k
    return n


# -- a message in: DATA chunks -> the prefix, then the message written into a bytes --------------
cdef struct MessageIn:
    unsigned char prefix[5]
    int prefix_n
    Py_ssize_t mlen
    Py_ssize_t mgot
    int compressed
    int nmessages
    char *buf        # the storage of the bytes being filled (owned by the caller's object)


cdef inline bint in_feed(MessageIn *m, const uint8_t *data, size_t length, size_t *pos) noexcept:
    # consumes data[pos:]; True when a prefix has just been read (m.mlen is the message's length):
    # the caller checks it, points m.buf at a bytes of that length and feeds the rest (even none:
    # a message of length 0 is counted then)
    cdef size_t i = pos[0], k
    while True:
        if m.prefix_n == 5 and m.mgot == m.mlen:
            m.nmessages += 1
            m.prefix_n = 0
        if i >= length:
            break
        if m.prefix_n < 5:
            k = 5 - m.prefix_n
            if k > length - i:
                k = length - i
            memcpy(m.prefix + m.prefix_n, data + i, k)
            m.prefix_n += k
            i += k
            if m.prefix_n < 5:
                break
            m.mlen = (<Py_ssize_t>m.prefix[1] << 24) | (<Py_ssize_t>m.prefix[2] << 16) | (<Py_ssize_t>m.prefix[3] << 8) | m.prefix[4]
            m.compressed = m.prefix[0]
            m.mgot = 0
            m.buf = NULL
            pos[0] = i
            return True
        k = m.mlen - m.mgot
        if k > length - i:
            k = length - i
        memcpy(m.buf + m.mgot, data + i, k)
        m.mgot += k
        i += k
    pos[0] = i
    return False


cdef inline object decompress(bytes message, bytes encoding):
    # a compressed message's bytes (grpc-encoding gzip or deflate); None for another coding
    import zlib
    if encoding == b"gzip":
        return zlib.decompress(message, 16 + zlib.MAX_WBITS)
    if encoding == b"deflate":
        return zlib.decompress(message)
    return None
