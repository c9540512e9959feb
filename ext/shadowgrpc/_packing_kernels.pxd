# nogil kernels of the compiled packer (_packing_c.pyx), as inline functions: the ModelInferRequest
# scan (the fields a front reads, and whether any tensor names a shared-memory region), Triton BYTES
# tensors, and the sample-key hash. Built on the wire primitives of _packing_wire.pxd; same results
# and errors as shadowgrpc/_packing_py.py.

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from shadowgrpc._packing_wire cimport fail, read_len, read_tag, skip_field, utf8_valid
from shadowgrpc._types cimport (
    E_BYTES_PAST_END, E_BYTES_TRUNCATED_LENGTH, E_INVALID_UTF8, E_WRONG_WIRE_TYPE, WT_LEN,
    WireError, byte_t, pos_t,
)


cdef enum:
    SHM_KEY_LEN = 20    # len(b"shared_memory_region")


# --- ModelInferRequest scan ----------------------------------------------------------------------

cdef struct RequestFields:
    pos_t start[3]     # model_name, model_version, id: the last occurrence
    pos_t stop[3]
    bint shm


cdef inline int entry_key_is_shm(const byte_t* buf,   # IN: a map entry in [pos, end)
                                 pos_t pos, pos_t end,
                                 WireError* err) noexcept nogil:
    """1 when the entry's key (last one wins) is "shared_memory_region", 0 when not, -1 on error."""
    cdef const char* shm_key = b"shared_memory_region"
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
    return key_stop - key_start == SHM_KEY_LEN and memcmp(buf + key_start, shm_key, SHM_KEY_LEN) == 0


cdef inline int tensor_uses_shm(const byte_t* buf,   # IN: an input / requested-output tensor in [pos, end)
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


cdef inline int scan_request_kernel(const byte_t* buf,     # IN: buf[0:end]
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


# --- BYTES tensors -------------------------------------------------------------------------------

cdef inline uint32_t load_u32le(const byte_t* p) noexcept nogil:   # IN: p[0:4]
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline void store_u32le(byte_t* p, uint32_t v) noexcept nogil:   # OUT: p[0:4]
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24


cdef inline pos_t count_bytes_elements(const byte_t* buf,   # IN: buf[0:end]
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


cdef inline void copy_bytes_elements(byte_t* dst,             # OUT
                                     const Py_buffer* views,   # IN: count element buffers
                                     Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    cdef pos_t n
    for i in range(count):
        n = views[i].len
        store_u32le(dst, <uint32_t>n)
        memcpy(dst + 4, views[i].buf, n)
        dst += 4 + n


# --- hashing (sample_key) ------------------------------------------------------------------------

cdef inline uint64_t fnv1a64(const byte_t* s, pos_t n) noexcept nogil:   # IN: s[0:n]
    cdef uint64_t h = 0xCBF29CE484222325ULL     # FNV-1a 64 offset basis
    cdef pos_t i
    for i in range(n):
        h = (h ^ s[i]) * 0x100000001B3ULL   # FNV-1a 64 prime
    return h


cdef inline uint64_t fmix64(uint64_t h) noexcept nogil:   # murmur3 finalizer; see _packing_py
    h ^= h >> 33
    h *= 0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    h *= 0xC4CEB9FE1A85EC53ULL
    h ^= h >> 33
    return h

