# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Wire-level packing, compiled twin of shadowgrpc/_packing_py.py (same results, same exceptions,
same messages; see that module for the wire-format rules).

The bytes reach the kernels without a copy: a ``bytes`` object through its own storage, any other
C-contiguous buffer through a ``Py_buffer``. The kernels below take (pointer, end) pairs and are
``noexcept nogil``; a failure fills a ``WireError`` that the caller turns into ``ValueError``.
A typed memoryview (``const byte_t[::1]``) is not used at this boundary: acquiring one costs
about 60 ns per call (measured with Cython 3.3), half of a whole scan of a typical request, and it
would refuse buffers whose format is not a byte (a float32 numpy array), which the Python twin's
``memoryview(x).cast("B")`` accepts.
"""

from cpython.buffer cimport PyBUF_RECORDS_RO, PyBuffer_IsContiguous, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from shadowgrpc._types cimport (
    E_BAD_TAG, E_BAD_WIRE_TYPE, E_BYTES_PAST_END, E_BYTES_TRUNCATED_LENGTH, E_FIELD_ZERO,
    E_GROUP_DEPTH, E_GROUP_MISMATCH, E_GROUP_UNTERMINATED, E_INVALID_UTF8, E_LENGTH_PAST_END,
    E_LONG_VARINT, E_STRAY_END_GROUP, E_TRUNCATED_FIXED, E_TRUNCATED_VARINT,
    E_WRONG_WIRE_TYPE, ErrorCode, WT_EGROUP, WT_I32, WT_I64, WT_LEN, WT_VARINT,
    WireError, byte_t, pos_t,
)

__all__ = (
    "build_request",
    "decode_bytes_tensor",
    "encode_bytes_tensor",
    "sample_key",
    "scan_request",
    "scan_response",
)

cdef enum:
    MAX_GROUP_DEPTH = 100
    BIG_COPY = 1 << 20  # copies at least this large run without the GIL

cdef const char* SHM_KEY = b"shared_memory_region"
cdef pos_t SHM_KEY_LEN = 20
# ModelInferRequest.parameters (field 4) entry {key: "shadow", value: InferParameter{bool_param: true}}
cdef const char* SHADOW_PARAMETER = b"\x22\x0c\x0a\x06shadow\x12\x02\x08\x01"
cdef pos_t SHADOW_PARAMETER_LEN = 14
cdef uint64_t FNV_OFFSET = 0xCBF29CE484222325ULL
cdef uint64_t FNV_PRIME = 0x100000001B3ULL


# ---------------------------------------------------------------------------------------------
# nogil kernels: wire format
# ---------------------------------------------------------------------------------------------

cdef inline int fail(WireError* err,     # OUT
                     ErrorCode code, pos_t offset, uint64_t a, uint64_t b) noexcept nogil:
    err.code = code
    err.offset = offset
    err.a = a
    err.b = b
    return -1


cdef inline int read_varint(const byte_t* buf,   # IN
                            pos_t end,
                            pos_t* pos,          # IN/OUT
                            uint64_t* out,       # OUT
                            WireError* err) noexcept nogil:
    cdef pos_t p = pos[0]
    cdef pos_t start = p
    cdef uint64_t result = 0
    cdef uint64_t b
    cdef int shift
    for shift in range(0, 70, 7):
        if p >= end:
            return fail(err, E_TRUNCATED_VARINT, start, 0, 0)
        b = buf[p]
        p += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            out[0] = result
            pos[0] = p
            return 0
    return fail(err, E_LONG_VARINT, start, 0, 0)


cdef inline int read_tag(const byte_t* buf,   # IN
                         pos_t end,
                         pos_t* pos,          # IN/OUT
                         uint32_t* field,     # OUT
                         int* wt,             # OUT
                         WireError* err) noexcept nogil:
    cdef pos_t p = pos[0]
    cdef pos_t start = p
    cdef uint64_t b = buf[p]
    cdef uint64_t tag = b & 0x7F
    cdef int shift = 7
    p += 1
    while b >= 0x80:
        if shift == 35:
            return fail(err, E_BAD_TAG, start, 0, 0)
        if p >= end:
            return fail(err, E_TRUNCATED_VARINT, start, 0, 0)
        b = buf[p]
        p += 1
        tag |= (b & 0x7F) << shift
        shift += 7
    if tag > 0xFFFFFFFFULL:
        return fail(err, E_BAD_TAG, start, 0, 0)
    if (tag >> 3) == 0:
        return fail(err, E_FIELD_ZERO, start, 0, 0)
    if (tag & 7) > 5:
        return fail(err, E_BAD_WIRE_TYPE, start, tag & 7, 0)
    field[0] = <uint32_t>(tag >> 3)
    wt[0] = <int>(tag & 7)
    pos[0] = p
    return 0


cdef inline int read_len(const byte_t* buf,   # IN
                         pos_t end,
                         pos_t* pos,          # IN/OUT: at the length varint, then past the payload
                         pos_t tagpos,
                         pos_t* start,        # OUT: payload start
                         WireError* err) noexcept nogil:
    cdef uint64_t n
    if read_varint(buf, end, pos, &n, err) < 0:
        return -1
    if n > <uint64_t>(end - pos[0]):
        return fail(err, E_LENGTH_PAST_END, tagpos, n, 0)
    start[0] = pos[0]
    pos[0] += <pos_t>n
    return 0


cdef int skip_field(const byte_t* buf,   # IN
                    pos_t end,
                    pos_t* pos,          # IN/OUT: after the tag, then after the value
                    uint32_t field, int wt, pos_t tagpos, int depth,
                    WireError* err) noexcept nogil:
    cdef uint64_t ignored
    cdef pos_t start, inner
    cdef uint32_t f
    cdef int w
    if wt == WT_VARINT:
        return read_varint(buf, end, pos, &ignored, err)
    if wt == WT_LEN:
        return read_len(buf, end, pos, tagpos, &start, err)
    if wt == WT_I64 or wt == WT_I32:
        w = 8 if wt == WT_I64 else 4
        if w > end - pos[0]:
            return fail(err, E_TRUNCATED_FIXED, tagpos, w * 8, 0)
        pos[0] += w
        return 0
    if wt == WT_EGROUP:
        return fail(err, E_STRAY_END_GROUP, tagpos, 0, 0)
    # WT_SGROUP: skip fields up to the matching end-group tag
    if depth >= MAX_GROUP_DEPTH:
        return fail(err, E_GROUP_DEPTH, tagpos, 0, 0)
    while pos[0] < end:
        inner = pos[0]
        if read_tag(buf, end, pos, &f, &w, err) < 0:
            return -1
        if w == WT_EGROUP:
            if f != field:
                return fail(err, E_GROUP_MISMATCH, inner, 0, 0)
            return 0
        if skip_field(buf, end, pos, f, w, inner, depth + 1, err) < 0:
            return -1
    return fail(err, E_GROUP_UNTERMINATED, tagpos, 0, 0)


cdef bint utf8_valid(const byte_t* s, pos_t n) noexcept nogil:   # IN: s[0:n]
    """Strict UTF-8 (Unicode table 3-7): what str(b, "utf-8") accepts."""
    cdef pos_t i = 0
    cdef byte_t c, c1
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
        elif c < 0xC2:
            return False
        elif c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif c < 0xF0:
            if i + 2 >= n:
                return False
            c1 = s[i + 1]
            if (c1 & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80:
                return False
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 >= 0xA0):
                return False
            i += 3
        elif c < 0xF5:
            if i + 3 >= n:
                return False
            c1 = s[i + 1]
            if (c1 & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80 or (s[i + 3] & 0xC0) != 0x80:
                return False
            if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 >= 0x90):
                return False
            i += 4
        else:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# nogil kernels: ModelInferRequest scan
# ---------------------------------------------------------------------------------------------

cdef struct RequestFields:
    pos_t start[3]     # model_name, model_version, id: the last occurrence
    pos_t stop[3]
    bint shm


cdef int entry_key_is_shm(const byte_t* buf,   # IN: a map entry in [pos, end)
                          pos_t pos, pos_t end,
                          WireError* err) noexcept nogil:
    """1 when the entry's key (last one wins) is "shared_memory_region", 0 when not, -1 on error."""
    cdef pos_t key_start = pos, key_stop = pos, tagpos
    cdef uint32_t f
    cdef int wt
    while pos < end:
        tagpos = pos
        if read_tag(buf, end, &pos, &f, &wt, err) < 0:
            return -1
        if f == 1:
            if wt != WT_LEN:
                return fail(err, E_WRONG_WIRE_TYPE, tagpos, wt, f)
            if read_len(buf, end, &pos, tagpos, &key_start, err) < 0:
                return -1
            key_stop = pos
        elif skip_field(buf, end, &pos, f, wt, tagpos, 0, err) < 0:
            return -1
    return key_stop - key_start == SHM_KEY_LEN and memcmp(buf + key_start, SHM_KEY, SHM_KEY_LEN) == 0


cdef int tensor_uses_shm(const byte_t* buf,   # IN: an input / requested-output tensor in [pos, end)
                         pos_t pos, pos_t end,
                         uint32_t params_field,
                         WireError* err) noexcept nogil:
    """1 when a parameters entry has the shared_memory_region key, 0 when none, -1 on error."""
    cdef pos_t tagpos, start
    cdef uint32_t f
    cdef int wt, r
    cdef int found = 0
    while pos < end:
        tagpos = pos
        if read_tag(buf, end, &pos, &f, &wt, err) < 0:
            return -1
        if f == params_field:
            if wt != WT_LEN:
                return fail(err, E_WRONG_WIRE_TYPE, tagpos, wt, f)
            if read_len(buf, end, &pos, tagpos, &start, err) < 0:
                return -1
            r = entry_key_is_shm(buf, start, pos, err)
            if r < 0:
                return -1
            found |= r
        elif skip_field(buf, end, &pos, f, wt, tagpos, 0, err) < 0:
            return -1
    return found


cdef int scan_request_kernel(const byte_t* buf,     # IN: buf[0:end]
                             pos_t end,
                             RequestFields* out,    # OUT
                             WireError* err) noexcept nogil:
    cdef pos_t pos = 0, tagpos, start
    cdef uint32_t f
    cdef int wt, r, i
    for i in range(3):
        out.start[i] = 0
        out.stop[i] = 0
    out.shm = False
    while pos < end:
        tagpos = pos
        if read_tag(buf, end, &pos, &f, &wt, err) < 0:
            return -1
        if 1 <= f <= 7:
            if wt != WT_LEN:
                return fail(err, E_WRONG_WIRE_TYPE, tagpos, wt, f)
            if read_len(buf, end, &pos, tagpos, &start, err) < 0:
                return -1
            if f <= 3:
                if not utf8_valid(buf + start, pos - start):
                    return fail(err, E_INVALID_UTF8, tagpos, 0, f)
                out.start[f - 1] = start
                out.stop[f - 1] = pos
            elif f == 5 or f == 6:
                r = tensor_uses_shm(buf, start, pos, 4 if f == 5 else 2, err)
                if r < 0:
                    return -1
                if r:
                    out.shm = True
        elif skip_field(buf, end, &pos, f, wt, tagpos, 0, err) < 0:
            return -1
    return 0


# ---------------------------------------------------------------------------------------------
# nogil kernels: BYTES tensors, hashing
# ---------------------------------------------------------------------------------------------

cdef inline uint32_t load_u32le(const byte_t* p) noexcept nogil:   # IN: p[0:4]
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline void store_u32le(byte_t* p, uint32_t v) noexcept nogil:   # OUT: p[0:4]
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24


cdef pos_t count_bytes_elements(const byte_t* buf,   # IN: buf[0:end]
                                pos_t end,
                                WireError* err) noexcept nogil:
    """Number of elements of a BYTES tensor, -1 on error."""
    cdef pos_t pos = 0, count = 0
    cdef uint32_t n
    while pos < end:
        if end - pos < 4:
            return fail(err, E_BYTES_TRUNCATED_LENGTH, pos, 0, 0)
        n = load_u32le(buf + pos)
        if <uint64_t>n > <uint64_t>(end - pos - 4):
            return fail(err, E_BYTES_PAST_END, pos, n, 0)
        pos += 4 + <pos_t>n
        count += 1
    return count


cdef void copy_bytes_elements(byte_t* dst,             # OUT
                              const Py_buffer* views,   # IN: count element buffers
                              Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    cdef pos_t n
    for i in range(count):
        n = views[i].len
        store_u32le(dst, <uint32_t>n)
        memcpy(dst + 4, views[i].buf, n)
        dst += 4 + n


cdef inline uint64_t fnv1a64(const byte_t* s, pos_t n) noexcept nogil:   # IN: s[0:n]
    cdef uint64_t h = FNV_OFFSET
    cdef pos_t i
    for i in range(n):
        h = (h ^ s[i]) * FNV_PRIME
    return h


cdef inline uint64_t fmix64(uint64_t h) noexcept nogil:   # murmur3 finalizer; see _packing_py
    h ^= h >> 33
    h *= 0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    h *= 0xC4CEB9FE1A85EC53ULL
    h ^= h >> 33
    return h


cdef inline pos_t varint_size(uint64_t v) noexcept nogil:
    cdef pos_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline pos_t write_varint(byte_t* dst, uint64_t v) noexcept nogil:   # OUT: dst[0:return]
    cdef pos_t n = 0
    while v >= 0x80:
        dst[n] = <byte_t>((v & 0x7F) | 0x80)
        v >>= 7
        n += 1
    dst[n] = <byte_t>v
    return n + 1


# ---------------------------------------------------------------------------------------------
# Python boundary
# ---------------------------------------------------------------------------------------------

cdef object wire_error(WireError* e):
    cdef pos_t off = e.offset
    cdef ErrorCode c = e.code
    if c == E_TRUNCATED_VARINT:
        msg = f"truncated varint at offset {off}"
    elif c == E_LONG_VARINT:
        msg = f"varint longer than 10 bytes at offset {off}"
    elif c == E_BAD_TAG:
        msg = f"invalid tag at offset {off}"
    elif c == E_FIELD_ZERO:
        msg = f"field number 0 at offset {off}"
    elif c == E_BAD_WIRE_TYPE:
        msg = f"invalid wire type {e.a} at offset {off}"
    elif c == E_LENGTH_PAST_END:
        msg = f"length {e.a} past end of buffer at offset {off}"
    elif c == E_TRUNCATED_FIXED:
        msg = f"truncated fixed{e.a} at offset {off}"
    elif c == E_STRAY_END_GROUP:
        msg = f"unexpected end-group tag at offset {off}"
    elif c == E_GROUP_DEPTH:
        msg = f"groups nested too deeply at offset {off}"
    elif c == E_GROUP_MISMATCH:
        msg = f"mismatched end-group tag at offset {off}"
    elif c == E_GROUP_UNTERMINATED:
        msg = f"unterminated group at offset {off}"
    elif c == E_WRONG_WIRE_TYPE:
        msg = f"wrong wire type {e.a} for field {e.b} at offset {off}"
    elif c == E_INVALID_UTF8:
        msg = f"invalid UTF-8 in field {e.b} at offset {off}"
    elif c == E_BYTES_TRUNCATED_LENGTH:
        msg = f"truncated BYTES element length at offset {off}"
    elif c == E_BYTES_PAST_END:
        msg = f"BYTES element of length {e.a} past end of buffer at offset {off}"
    else:  # pragma: no cover
        msg = f"malformed input at offset {off}"
    return ValueError(msg)


cdef int acquire(object obj, Py_buffer* view) except -1:   # OUT: view, to release
    """A C-contiguous buffer of ``obj``, as _packing_py._byte_view accepts it."""
    PyObject_GetBuffer(obj, view, PyBUF_RECORDS_RO)
    if not PyBuffer_IsContiguous(view, b'C'):
        PyBuffer_Release(view)
        raise BufferError("buffer is not C-contiguous")
    return 0


cdef inline str decode_utf8(const byte_t* buf, pos_t start, pos_t stop):   # validated already
    if start == stop:
        return ""
    return PyUnicode_DecodeUTF8(<char*>buf + start, stop - start, NULL)


def scan_request(raw):
    """(model_name, model_version, id, uses_shared_memory) of a serialized ModelInferRequest."""
    cdef Py_buffer view
    cdef const byte_t* buf
    cdef pos_t n
    cdef RequestFields out
    cdef WireError err
    cdef int rc
    if PyBytes_CheckExact(raw):
        buf = <const byte_t*>PyBytes_AS_STRING(raw)
        n = PyBytes_GET_SIZE(raw)
        rc = scan_request_kernel(buf, n, &out, &err)
        if rc < 0:
            raise wire_error(&err)
        return (decode_utf8(buf, out.start[0], out.stop[0]), decode_utf8(buf, out.start[1], out.stop[1]),
                decode_utf8(buf, out.start[2], out.stop[2]), <bint>out.shm)
    acquire(raw, &view)
    try:
        buf = <const byte_t*>view.buf
        rc = scan_request_kernel(buf, view.len, &out, &err)
        if rc < 0:
            raise wire_error(&err)
        return (decode_utf8(buf, out.start[0], out.stop[0]), decode_utf8(buf, out.start[1], out.stop[1]),
                decode_utf8(buf, out.start[2], out.stop[2]), <bint>out.shm)
    finally:
        PyBuffer_Release(&view)


def sample_key(str request_id not None):
    """Deterministic key in [0, 1): 64-bit FNV-1a of the UTF-8 bytes, mixed by murmur3's fmix64,
    top 53 bits (see _packing_py.sample_key)."""
    cdef Py_ssize_t n
    cdef const char* s = PyUnicode_AsUTF8AndSize(request_id, &n)
    cdef uint64_t h = fmix64(fnv1a64(<const byte_t*>s, n))
    return <double>(h >> 11) * (1.0 / 9007199254740992.0)


def build_request(raw, str model_name, str model_version, shadow):
    """``raw`` with model_name (1), model_version (2) and the ``shadow`` parameter (4) appended
    (protobuf's last-wins rule makes them override). One allocation and copy; ``raw`` itself when
    nothing is appended."""
    cdef bint add_shadow = bool(shadow)
    cdef Py_ssize_t name_n = 0, version_n = 0
    cdef const char* name_p = NULL
    cdef const char* version_p = NULL
    cdef Py_buffer view
    cdef bint have_view = False
    cdef const byte_t* src
    cdef pos_t src_n, total, p
    cdef byte_t* dst
    if model_name is None and model_version is None and not add_shadow:
        return raw
    if model_name is not None:
        name_p = PyUnicode_AsUTF8AndSize(model_name, &name_n)
    if model_version is not None:
        version_p = PyUnicode_AsUTF8AndSize(model_version, &version_n)
    if PyBytes_CheckExact(raw):
        src = <const byte_t*>PyBytes_AS_STRING(raw)
        src_n = PyBytes_GET_SIZE(raw)
    else:
        acquire(raw, &view)
        have_view = True
        src = <const byte_t*>view.buf
        src_n = view.len
    try:
        total = src_n
        if name_p != NULL:
            total += 1 + varint_size(name_n) + name_n
        if version_p != NULL:
            total += 1 + varint_size(version_n) + version_n
        if add_shadow:
            total += SHADOW_PARAMETER_LEN
        result = PyBytes_FromStringAndSize(NULL, total)
        dst = <byte_t*>PyBytes_AS_STRING(result)
        if src_n >= BIG_COPY:
            with nogil:
                memcpy(dst, src, src_n)
        else:
            memcpy(dst, src, src_n)
        p = src_n
        if name_p != NULL:
            dst[p] = 0x0A
            p += 1
            p += write_varint(dst + p, name_n)
            memcpy(dst + p, name_p, name_n)
            p += name_n
        if version_p != NULL:
            dst[p] = 0x12
            p += 1
            p += write_varint(dst + p, version_n)
            memcpy(dst + p, version_p, version_n)
            p += version_n
        if add_shadow:
            memcpy(dst + p, SHADOW_PARAMETER, SHADOW_PARAMETER_LEN)
        return result
    finally:
        if have_view:
            PyBuffer_Release(&view)


cdef tuple output_tensor(const byte_t* buf,   # IN: an InferOutputTensor in [pos, end)
                         pos_t pos, pos_t end,
                         WireError* err):      # OUT
    """(name, datatype, shape); None with ``err`` set on malformed bytes."""
    cdef pos_t tagpos, start, packed_end
    cdef pos_t name_start = 0, name_stop = 0, dt_start = 0, dt_stop = 0
    cdef uint32_t f
    cdef int wt
    cdef uint64_t v
    shape = []
    while pos < end:
        tagpos = pos
        if read_tag(buf, end, &pos, &f, &wt, err) < 0:
            return None
        if f == 1 or f == 2:
            if wt != WT_LEN:
                fail(err, E_WRONG_WIRE_TYPE, tagpos, wt, f)
                return None
            if read_len(buf, end, &pos, tagpos, &start, err) < 0:
                return None
            if not utf8_valid(buf + start, pos - start):
                fail(err, E_INVALID_UTF8, tagpos, 0, f)
                return None
            if f == 1:
                name_start, name_stop = start, pos
            else:
                dt_start, dt_stop = start, pos
        elif f == 3:
            if wt == WT_VARINT:
                if read_varint(buf, end, &pos, &v, err) < 0:
                    return None
                shape.append(<int64_t>v)
            elif wt == WT_LEN:
                if read_len(buf, end, &pos, tagpos, &start, err) < 0:
                    return None
                packed_end = pos
                while start < packed_end:
                    if read_varint(buf, packed_end, &start, &v, err) < 0:
                        return None
                    shape.append(<int64_t>v)
            else:
                fail(err, E_WRONG_WIRE_TYPE, tagpos, wt, f)
                return None
        elif skip_field(buf, end, &pos, f, wt, tagpos, 0, err) < 0:
            return None
    return (decode_utf8(buf, name_start, name_stop), decode_utf8(buf, dt_start, dt_stop), tuple(shape))


cdef struct Span:
    pos_t start
    pos_t stop


cdef list scan_response_buf(object raw, const byte_t* buf, pos_t end):   # IN: buf[0:end] is raw's
    cdef WireError err
    cdef pos_t pos = 0, tagpos, start
    cdef uint32_t f
    cdef int wt
    cdef Py_ssize_t i, noutputs, ncontents = 0, capacity = 8
    cdef Span local[8]
    cdef Span* contents = local
    cdef Span* grown
    outputs = []
    try:
        while pos < end:
            tagpos = pos
            if read_tag(buf, end, &pos, &f, &wt, &err) < 0:
                raise wire_error(&err)
            if 1 <= f <= 6:
                if wt != WT_LEN:
                    fail(&err, E_WRONG_WIRE_TYPE, tagpos, wt, f)
                    raise wire_error(&err)
                if read_len(buf, end, &pos, tagpos, &start, &err) < 0:
                    raise wire_error(&err)
                if f == 5:
                    t = output_tensor(buf, start, pos, &err)
                    if t is None:
                        raise wire_error(&err)
                    outputs.append(t)
                elif f == 6:
                    if ncontents == capacity:
                        grown = <Span*>PyMem_Malloc(2 * capacity * sizeof(Span))
                        if grown == NULL:
                            raise MemoryError()
                        memcpy(grown, contents, capacity * sizeof(Span))
                        if contents != local:
                            PyMem_Free(contents)
                        contents = grown
                        capacity *= 2
                    contents[ncontents].start = start
                    contents[ncontents].stop = pos
                    ncontents += 1
            elif skip_field(buf, end, &pos, f, wt, tagpos, 0, &err) < 0:
                raise wire_error(&err)
        noutputs = len(outputs)
        if ncontents and noutputs:
            mv = PyMemoryView_FromObject(raw)
            if not PyBytes_CheckExact(raw) and (mv.ndim != 1 or mv.format != "B"):
                mv = mv.cast("B")
        result = []
        for i in range(noutputs):
            t = outputs[i]
            if i < ncontents:
                result.append((t[0], t[1], t[2], mv[contents[i].start:contents[i].stop]))
            else:
                result.append((t[0], t[1], t[2], None))
        return result
    finally:
        if contents != local:
            PyMem_Free(contents)


def scan_response(raw):
    """Per output of a serialized ModelInferResponse: (name, datatype, shape, contents view|None)."""
    cdef Py_buffer view
    if PyBytes_CheckExact(raw):
        return scan_response_buf(raw, <const byte_t*>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))
    acquire(raw, &view)
    try:
        return scan_response_buf(raw, <const byte_t*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


def decode_bytes_tensor(buf):
    """Elements of a Triton BYTES tensor (each: uint32 little-endian length, then the bytes)."""
    cdef Py_buffer view
    cdef WireError err
    cdef const byte_t* p
    cdef pos_t pos = 0, count, k
    cdef uint32_t n
    acquire(buf, &view)
    try:
        p = <const byte_t*>view.buf
        count = count_bytes_elements(p, view.len, &err)
        if count < 0:
            raise wire_error(&err)
        items = []
        for k in range(count):
            n = load_u32le(p + pos)
            items.append(PyBytes_FromStringAndSize(<char*>p + pos + 4, n))
            pos += 4 + <pos_t>n
        return items
    finally:
        PyBuffer_Release(&view)


def encode_bytes_tensor(items):
    """Triton BYTES tensor serialization of ``items`` (any bytes-like objects)."""
    seq = PySequence_Fast(items, "encode_bytes_tensor() argument must be iterable")
    cdef Py_ssize_t count = PySequence_Fast_GET_SIZE(seq)
    cdef Py_ssize_t acquired = 0, i
    cdef pos_t total = 0, n
    cdef byte_t* dst
    cdef Py_buffer* views = <Py_buffer*>PyMem_Malloc(max(count, 1) * sizeof(Py_buffer))
    if views == NULL:
        raise MemoryError()
    try:
        for i in range(count):
            acquire(<object>PySequence_Fast_GET_ITEM(seq, i), &views[i])
            acquired += 1
            n = views[i].len
            if <uint64_t>n > 0xFFFFFFFFULL:
                raise ValueError("BYTES element longer than 4 GiB - 1")
            total += 4 + n
        result = PyBytes_FromStringAndSize(NULL, total)
        dst = <byte_t*>PyBytes_AS_STRING(result)
        if total >= BIG_COPY:
            with nogil:
                copy_bytes_elements(dst, views, count)
        else:
            copy_bytes_elements(dst, views, count)
        return result
    finally:
        for i in range(acquired):
            PyBuffer_Release(&views[i])
        PyMem_Free(views)
