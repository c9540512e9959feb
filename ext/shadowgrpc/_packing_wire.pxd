# Protobuf wire-format primitives of the compiled packer (_packing_c.pyx), as inline functions:
# varints, tags, length-delimited fields, skipping unknown fields and groups, strict UTF-8, varint
# writing; and at the Python boundary, a ``WireError`` turned into the twin's ``ValueError`` and the
# C-contiguous byte view of any buffer. See shadowgrpc/_packing_py.py for the rules.
#
# The readers take (pointer, end) pairs and are ``noexcept nogil``: a failure fills a ``WireError``
# (offset and arguments of the message) and returns -1.

from cpython.buffer cimport PyBUF_RECORDS_RO, PyBuffer_IsContiguous, PyBuffer_Release, PyObject_GetBuffer
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t, uint64_t

from shadowgrpc._types cimport (
    E_BAD_TAG, E_BAD_WIRE_TYPE, E_BYTES_PAST_END, E_BYTES_TRUNCATED_LENGTH, E_FIELD_ZERO,
    E_GROUP_DEPTH, E_GROUP_MISMATCH, E_GROUP_UNTERMINATED, E_INVALID_UTF8, E_LENGTH_PAST_END,
    E_LONG_VARINT, E_STRAY_END_GROUP, E_TRUNCATED_FIXED, E_TRUNCATED_VARINT,
    E_WRONG_WIRE_TYPE, ErrorCode, WT_EGROUP, WT_I32, WT_I64, WT_LEN, WT_VARINT,
    WireError, byte_t, pos_t,
)


cdef enum:
    MAX_GROUP_DEPTH = 100


# --- reading -------------------------------------------------------------------------------------

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


cdef inline int skip_field(const byte_t* buf,   # IN
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


cdef inline bint utf8_valid(const byte_t* s, pos_t n) noexcept nogil:   # IN: s[0:n]
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


# --- writing -------------------------------------------------------------------------------------

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


# --- Python boundary -----------------------------------------------------------------------------

cdef inline object wire_error(WireError* e):
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


cdef inline int acquire(object obj, Py_buffer* view) except -1:   # OUT: view, to release
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
