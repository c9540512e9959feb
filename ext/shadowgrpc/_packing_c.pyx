# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Wire-level packing, compiled twin of shadowgrpc/_packing_py.py (same results, same exceptions,
same messages; see that module for the wire-format rules).

The bytes reach the kernels without a copy: a ``bytes`` object through its own storage, any other
C-contiguous buffer through a ``Py_buffer``. The kernels (inline, in _packing_wire.pxd and
_packing_kernels.pxd) take (pointer, end) pairs and are ``noexcept nogil``; a failure fills a
``WireError`` that the caller turns into ``ValueError``.
A typed memoryview (``const byte_t[::1]``) is not used at this boundary: acquiring one costs
about 60 ns per call (measured with Cython 3.3), half of a whole scan of a typical request, and it
would refuse buffers whose format is not a byte (a float32 numpy array), which the Python twin's
``memoryview(x).cast("B")`` accepts.
"""

from cpython.buffer cimport PyBuffer_Release
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

from shadowgrpc._packing_kernels cimport (
    RequestFields, copy_bytes_elements, count_bytes_elements, fmix64, fnv1a64, load_u32le,
    scan_request_kernel,
)
from shadowgrpc._packing_wire cimport (
    acquire, decode_utf8, fail, read_len, read_tag, read_varint, skip_field, utf8_valid, varint_size,
    wire_error, write_varint,
)
from shadowgrpc._types cimport E_INVALID_UTF8, E_WRONG_WIRE_TYPE, WT_LEN, WT_VARINT, WireError, byte_t, pos_t

from shadowgrpc._packing_build_c import pack_request  # its own module (_packing_build_c.pyx), re-exported

__all__ = (
    "build_request",
    "decode_bytes_tensor",
    "encode_bytes_tensor",
    "pack_request",
    "sample_key",
    "scan_request",
    "scan_response",
)

cdef enum:
    BIG_COPY = 1 << 20  # copies at least this large run without the GIL

# ModelInferRequest.parameters (field 4) entry {key: "shadow", value: InferParameter{bool_param: true}}
cdef const char* SHADOW_PARAMETER = b"\x22\x0c\x0a\x06shadow\x12\x02\x08\x01"
cdef pos_t SHADOW_PARAMETER_LEN = 14


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
