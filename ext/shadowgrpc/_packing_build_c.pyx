# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Building a serialized ModelInferRequest from tensors: compiled twin of
shadowgrpc/_packing_build_py.py (same bytes, same exceptions, same messages; see that module for
what is written and the choices on non-contiguous data, BYTES elements and parameters).

Two passes over the inputs: the first checks them in the twin's order (so the first error is the
twin's) and sizes every field, holding each tensor's buffer; the second writes the whole message
into one ``bytes`` allocated at its final size, each tensor's bytes copied once (without the GIL
from 1 MiB up). Parameters are rare and small: they are built with Python objects, as the twin does.
"""

from cpython.buffer cimport PyBUF_RECORDS_RO, PyBuffer_IsContiguous, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_Check
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset, strchr

from operator import index
import struct

from shadowgrpc._packing_kernels cimport store_u32le
from shadowgrpc._packing_wire cimport varint_size, write_varint
from shadowgrpc._types cimport byte_t, pos_t

__all__ = ("ELEMENT_SIZES", "pack_request")

# Bytes per element of each KServe v2 datatype; 0: BYTES (variable length).
ELEMENT_SIZES = {
    "BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
    "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8, "BYTES": 0,
}

cdef enum:
    BIG_COPY = 1 << 20     # copies at least this large run without the GIL
    INLINE_DIMS = 8        # shapes up to this rank need no allocation

cdef extern from *:
    bint __builtin_mul_overflow(uint64_t a, uint64_t b, uint64_t* res) nogil   # GCC and Clang

cdef object INT64_MAX = (1 << 63) - 1
cdef object F64 = struct.Struct("<d")


cdef struct InputSpec:
    const char* name
    Py_ssize_t name_n
    const char* dt
    Py_ssize_t dt_n
    Py_ssize_t ndim
    uint64_t* dims           # local, or PyMem when ndim > INLINE_DIMS
    uint64_t local[INLINE_DIMS]
    pos_t shape_n            # packed shape payload
    pos_t header_n           # InferInputTensor payload
    pos_t size               # raw_input_contents entry
    Py_buffer view           # a fixed-size tensor's data, held until written
    bint has_view


cdef inline pos_t ld_size(pos_t n) noexcept nogil:
    """Bytes of a length-delimited field with a one-byte tag and an ``n``-byte payload."""
    return 1 + varint_size(n) + n


cdef inline byte_t* put_ld(byte_t* dst, byte_t tag, const void* src, pos_t n) noexcept nogil:   # OUT: dst
    dst[0] = tag
    dst += 1 + write_varint(dst + 1, n)
    memcpy(dst, src, n)
    return dst + n


cdef inline byte_t* put_head(byte_t* dst, byte_t tag, pos_t n) noexcept nogil:   # OUT: dst
    dst[0] = tag
    return dst + 1 + write_varint(dst + 1, n)


cdef str type_name(obj):
    dtype = getattr(obj, "dtype", None)
    return type(obj).__name__ if dtype is None else f"{type(obj).__name__} of dtype {dtype}"


cdef bytes ld(int tag, bytes payload):
    cdef pos_t n = PyBytes_GET_SIZE(payload)
    result = PyBytes_FromStringAndSize(NULL, ld_size(n))
    put_ld(<byte_t*>PyBytes_AS_STRING(result), <byte_t>tag, PyBytes_AS_STRING(payload), n)
    return result


cdef bytes varint(uint64_t v):
    cdef byte_t buf[10]
    return PyBytes_FromStringAndSize(<char*>buf, write_varint(buf, v))


cdef bytes parameter(key, value):
    """One parameters map entry: key (1), InferParameter value (2)."""
    if not isinstance(key, str):
        raise TypeError(f"parameter names must be str, not {type(key).__name__}")
    if isinstance(value, bool):
        param = b"\x08\x01" if value else b"\x08\x00"
    elif isinstance(value, int):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ValueError(f"parameter {key!r}: {value} is out of int64 range")
        param = b"\x10" + varint(<uint64_t>(value & 0xFFFFFFFFFFFFFFFF))
    elif isinstance(value, str):
        param = ld(0x1A, value.encode("utf-8"))
    elif isinstance(value, float):
        param = b"\x21" + F64.pack(value)
    else:
        raise TypeError(f"parameter {key!r}: value must be bool, int, str or float, not {type(value).__name__}")
    return ld(0x0A, key.encode("utf-8")) + ld(0x12, param)


cdef list check_dims(str name, shape, InputSpec* spec):   # OUT: spec.ndim, dims, shape_n
    cdef Py_ssize_t k
    try:
        dims = [index(d) for d in shape]
    except TypeError:
        raise TypeError(f"input {name!r}: shape must be a sequence of ints, not {type_name(shape)}") from None
    for d in dims:
        if d < 0:
            raise ValueError(f"input {name!r}: negative dimension {d} in shape {dims}")
        if d > INT64_MAX:
            raise ValueError(f"input {name!r}: dimension {d} in shape {dims} is out of int64 range")
    spec.ndim = len(dims)
    if spec.ndim > INLINE_DIMS:
        spec.dims = <uint64_t*>PyMem_Malloc(spec.ndim * sizeof(uint64_t))
        if spec.dims == NULL:
            raise MemoryError()
    for k in range(spec.ndim):
        spec.dims[k] = <uint64_t>dims[k]
        spec.shape_n += varint_size(spec.dims[k])
    return dims


cdef bint product(InputSpec* spec, uint64_t esize, uint64_t* out) noexcept nogil:   # OUT: out
    """Product of the dims times ``esize`` (1 for BYTES); False when it does not fit in 64 bits."""
    cdef uint64_t n = 1
    cdef Py_ssize_t k
    for k in range(spec.ndim):
        if __builtin_mul_overflow(n, spec.dims[k], &n):
            return False
    if __builtin_mul_overflow(n, esize, &n):
        return False
    out[0] = n
    return True



cdef list bytes_elements(str name, data, list dims, InputSpec* spec):   # OUT: spec.size
    """The elements of a BYTES input, checked and sized."""
    cdef uint64_t count
    cdef Py_ssize_t k, n
    cdef Py_buffer view
    cdef bint held
    items = data.ravel().tolist() if hasattr(data, "ravel") else list(data)
    if not product(spec, 1, &count) or count != <uint64_t>len(items):
        expected = 1
        for d in dims:
            expected *= d
        raise ValueError(f"input {name!r}: {len(items)} BYTES elements for shape {dims} ({expected} expected)")
    for k in range(len(items)):
        item = items[k]
        if PyBytes_CheckExact(item):
            n = PyBytes_GET_SIZE(item)
        elif PyUnicode_Check(item):
            PyUnicode_AsUTF8AndSize(item, &n)
        else:
            held = False
            try:
                PyObject_GetBuffer(item, &view, PyBUF_RECORDS_RO)
                held = True
            except TypeError:
                pass
            if held and view.format != NULL and strchr(view.format, b'O') != NULL:
                PyBuffer_Release(&view)
                held = False
            if not held:
                raise TypeError(f"input {name!r}: BYTES element {k} must be bytes or str, not {type_name(item)}")
            n = view.len
            contiguous = PyBuffer_IsContiguous(&view, b'C')
            PyBuffer_Release(&view)
            if not contiguous:
                raise ValueError(f"input {name!r}: BYTES element {k} is not C-contiguous")
        if <uint64_t>n > 0xFFFFFFFFULL:
            raise ValueError(f"input {name!r}: BYTES element {k} is longer than 4 GiB - 1")
        spec.size += 4 + n
    return items


cdef byte_t* put_bytes_elements(byte_t* dst, list items) except NULL:   # OUT: dst
    cdef Py_ssize_t n
    cdef const char* p
    cdef Py_buffer view
    for item in items:
        if PyBytes_CheckExact(item):
            n = PyBytes_GET_SIZE(item)
            p = PyBytes_AS_STRING(item)
        elif PyUnicode_Check(item):
            p = PyUnicode_AsUTF8AndSize(item, &n)   # cached by the first pass
        else:
            PyObject_GetBuffer(item, &view, PyBUF_RECORDS_RO)
            n = view.len
            store_u32le(dst, <unsigned int>n)
            memcpy(dst + 4, view.buf, n)
            PyBuffer_Release(&view)
            dst += 4 + n
            continue
        store_u32le(dst, <unsigned int>n)
        memcpy(dst + 4, p, n)
        dst += 4 + n
    return dst


cdef object check_input(Py_ssize_t i, item, InputSpec* spec):   # OUT: spec; the BYTES items or None
    cdef uint64_t expected
    fields = tuple(item)
    if len(fields) != 4:
        raise ValueError(f"input {i}: expected (name, datatype, shape, data), got {len(fields)} items")
    name, datatype, shape, data = fields
    if not isinstance(name, str):
        raise TypeError(f"input {i}: name must be str, not {type(name).__name__}")
    if not isinstance(datatype, str):
        raise TypeError(f"input {name!r}: datatype must be str, not {type(datatype).__name__}")
    esize = ELEMENT_SIZES.get(datatype)
    if esize is None:
        raise ValueError(f"input {name!r}: unknown datatype {datatype!r}")
    dims = check_dims(name, shape, spec)
    items = None
    if esize == 0:
        items = bytes_elements(name, data, dims, spec)
    else:
        try:
            PyObject_GetBuffer(data, &spec.view, PyBUF_RECORDS_RO)
            spec.has_view = True
        except (TypeError, ValueError, BufferError):
            pass
        if not spec.has_view or (spec.view.format != NULL and strchr(spec.view.format, b'O') != NULL):
            # an object array exports its pointers: never sent
            raise TypeError(f"input {name!r}: {datatype} data must be a buffer (a numeric numpy array), "
                            f"not {type_name(data)}")
        spec.size = spec.view.len
        if not PyBuffer_IsContiguous(&spec.view, b'C'):
            raise ValueError(f"input {name!r}: data is not C-contiguous (np.ascontiguousarray(data) is a contiguous copy)")
        if not product(spec, <uint64_t>esize, &expected) or expected != <uint64_t>spec.size:
            total = esize
            for d in dims:
                total *= d
            raise ValueError(f"input {name!r}: {spec.size} bytes of data for shape {dims} of {datatype} "
                             f"({total} bytes expected)")
    spec.name = PyUnicode_AsUTF8AndSize(name, &spec.name_n)
    spec.dt = PyUnicode_AsUTF8AndSize(datatype, &spec.dt_n)
    spec.header_n = (ld_size(spec.name_n) if spec.name_n else 0) + ld_size(spec.dt_n)
    if spec.ndim:
        spec.header_n += ld_size(spec.shape_n)
    return items


cdef byte_t* put_input_tensor(byte_t* dst, InputSpec* spec) noexcept nogil:   # OUT: dst
    cdef Py_ssize_t k
    dst = put_head(dst, 0x2A, spec.header_n)
    if spec.name_n:
        dst = put_ld(dst, 0x0A, spec.name, spec.name_n)
    dst = put_ld(dst, 0x12, spec.dt, spec.dt_n)
    if spec.ndim:
        dst = put_head(dst, 0x1A, spec.shape_n)
        for k in range(spec.ndim):
            dst += write_varint(dst, spec.dims[k])
    return dst


def pack_request(model_name, model_version, request_id, inputs, outputs=(), parameters=None):
    """A serialized ModelInferRequest of ``inputs`` ((name, datatype, shape, data) each, data's
    bytes in raw_input_contents), requesting ``outputs`` (names), with request ``parameters``."""
    cdef const char* head_p[3]
    cdef Py_ssize_t head_n[3]
    cdef Py_ssize_t count, i, k, acquired = 0
    cdef pos_t total = 0, n
    cdef InputSpec* specs = NULL
    cdef InputSpec* spec
    cdef byte_t* dst
    cdef const char* p
    strings = (model_name, model_version, request_id)
    labels = ("model_name", "model_version", "request_id")
    for k in range(3):
        s = strings[k]
        if not isinstance(s, str):
            raise TypeError(f"{labels[k]} must be str, not {type(s).__name__}")
        head_p[k] = PyUnicode_AsUTF8AndSize(s, &head_n[k])
        if head_n[k]:
            total += ld_size(head_n[k])
    params = b""
    if parameters:
        params = b"".join([ld(0x22, parameter(key, value)) for key, value in parameters.items()])
        total += PyBytes_GET_SIZE(params)
    seq = inputs if isinstance(inputs, (list, tuple)) else list(inputs)
    count = len(seq)
    specs = <InputSpec*>PyMem_Malloc(max(count, 1) * sizeof(InputSpec))
    if specs == NULL:
        raise MemoryError()
    items = [None] * count
    try:
        for i in range(count):
            spec = &specs[i]
            memset(spec, 0, sizeof(InputSpec))
            spec.dims = spec.local
            acquired += 1
            items[i] = check_input(i, seq[i], spec)
            total += ld_size(spec.header_n) + ld_size(spec.size)
        names = []
        for i, name in enumerate(outputs):
            if not isinstance(name, str):
                raise TypeError(f"output {i}: name must be str, not {type(name).__name__}")
            PyUnicode_AsUTF8AndSize(name, &n)
            total += ld_size(ld_size(n) if n else 0)
            names.append(name)
        result = PyBytes_FromStringAndSize(NULL, total)
        dst = <byte_t*>PyBytes_AS_STRING(result)
        for k in range(3):
            if head_n[k]:
                dst = put_ld(dst, <byte_t>(0x0A + 8 * k), head_p[k], head_n[k])
        n = PyBytes_GET_SIZE(params)
        memcpy(dst, PyBytes_AS_STRING(params), n)
        dst += n
        for i in range(count):
            dst = put_input_tensor(dst, &specs[i])
        for name in names:
            p = PyUnicode_AsUTF8AndSize(name, &n)
            if n:
                dst = put_head(dst, 0x32, ld_size(n))
                dst = put_ld(dst, 0x0A, p, n)
            else:
                dst = put_head(dst, 0x32, 0)
        for i in range(count):
            spec = &specs[i]
            dst = put_head(dst, 0x3A, spec.size)
            if not spec.has_view:
                dst = put_bytes_elements(dst, <list>items[i])
            elif spec.size >= BIG_COPY:
                with nogil:
                    memcpy(dst, spec.view.buf, spec.size)
                dst += spec.size
            else:
                memcpy(dst, spec.view.buf, spec.size)
                dst += spec.size
        return result
    finally:
        for i in range(acquired):
            if specs[i].has_view:
                PyBuffer_Release(&specs[i].view)
            if specs[i].dims != specs[i].local:
                PyMem_Free(specs[i].dims)
        PyMem_Free(specs)
