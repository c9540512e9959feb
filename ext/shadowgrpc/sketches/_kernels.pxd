# nogil kernels of the compiled sketches, shared by _core_c and _paired_c as
# inline functions (declarations and bodies both here, as in sklearn's utils/_random.pxd).
#
# Histogram kernels, chosen per column by hist_columns: uniform edges and contiguous float32 ->
# hist_uniform_f32 (estimates in a vectorized block loop, corrected against the edges rounded up to
# float32), or hist_few_f32 below BLOCK_MIN values (the same, one value at a time); uniform edges
# otherwise -> hist_uniform (float64 estimate, corrected against the edges); non-uniform edges ->
# hist_search (branch-free binary search, ``upper``). All give searchsorted(edges, x, side="right").

from libc.stdlib cimport calloc, free
from cython cimport floating

from shadowgrpc._types cimport col_t, count_t


cdef enum:
    NOGIL_MIN = 4096    # updates of at least this many values run with the GIL released
    BLOCK = 256
    BLOCK_MIN = 16      # fewer contiguous float32 values than this: hist_few_f32 (no block set-up)


cdef struct HistTable:                  # what the kernels read and count into
    count_t* counts                     # -> Histogram._counts_arr
    count_t* nan                        # -> Histogram._nan_arr
    const double* ext                   # -> Histogram._ext_arr
    const float* ext32                  # -> Histogram._ext32_arr, or NULL: no all-float32 path
    col_t ne                            # number of edges
    double lo                           # edges[0]
    double scale                        # bins per unit
    bint uniform                        # uniform edges: multiply and correct, else binary search


# --- buffer formats (struct module codes of a Py_buffer) -----------------------------------------

cdef inline const char* native(const char* fmt) noexcept:
    """``fmt`` without a native / little-endian byte-order prefix."""
    if fmt[0] == b"<" or fmt[0] == b"=" or fmt[0] == b"@":
        fmt += 1
    return fmt


cdef inline bint is_double(const char* fmt) noexcept:
    fmt = native(fmt)
    return fmt[0] == b"d" and fmt[1] == 0


cdef inline bint is_float(const char* fmt) noexcept:
    fmt = native(fmt)
    return fmt[0] == b"f" and fmt[1] == 0


# --- histogram kernels -----------------------------------------------------------------------------

cdef inline col_t ucol(floating v, const floating* ext, floating lo, floating scale, floating top) noexcept nogil:
    # Estimate by multiplication, clamped to [0, ne]; then one comparison each way, both reading
    # the estimate j, so their loads overlap. NaN lands in column 0 (every comparison with NaN
    # is false): the caller moves it to ``nan``. In float64, or all in float32 against ext32.
    cdef floating zero = 0, one = 1
    cdef floating t = (v - lo) * scale + one
    t = t if t > zero else zero
    t = t if t < top else top
    cdef col_t j = <col_t>t
    return j + (v >= ext[j + 1]) - (v < ext[j])


cdef inline void hist_uniform(const floating* x, Py_ssize_t n, Py_ssize_t stride,   # IN
                              const double* ext, col_t ne, double lo, double scale,  # IN
                              count_t* counts, count_t* nan) noexcept nogil:        # OUT
    cdef double v0, v1, v2, v3, top = <double>ne
    cdef Py_ssize_t i = 0, j, row = ne + 1
    cdef count_t nn = 0
    cdef count_t* c4
    if stride == 1 and n >= 4 * row:
        # Four interleaved count tables: runs of equal columns (underflow, overflow) do not
        # wait on each other's stores.
        c4 = <count_t*>calloc(3 * row, sizeof(count_t))
        if c4 != NULL:
            while i + 4 <= n:
                v0 = x[i]
                v1 = x[i + 1]
                v2 = x[i + 2]
                v3 = x[i + 3]
                nn += (v0 != v0) + (v1 != v1) + (v2 != v2) + (v3 != v3)
                counts[ucol(v0, ext, lo, scale, top)] += 1
                c4[ucol(v1, ext, lo, scale, top)] += 1
                c4[row + ucol(v2, ext, lo, scale, top)] += 1
                c4[2 * row + ucol(v3, ext, lo, scale, top)] += 1
                i += 4
            for j in range(row):
                counts[j] += c4[j] + c4[row + j] + c4[2 * row + j]
            free(c4)
    while i < n:
        v0 = x[i * stride]
        nn += v0 != v0
        counts[ucol(v0, ext, lo, scale, top)] += 1
        i += 1
    counts[0] -= nn
    nan[0] += nn


cdef inline void hist_uniform_f32(const float* x, Py_ssize_t n,                          # IN
                                  const float* ext32, col_t ne, float lo, float scale,   # IN
                                  count_t* counts, count_t* nan) noexcept nogil:          # OUT
    # Contiguous float32 values, all in float32: the estimates of a block are computed first, in a
    # loop the compiler vectorizes; then one comparison each way against ext32, the edges rounded
    # up to float32 (for a float32 x, x >= e exactly when x >= ceil32(e)), so the result is the
    # float64 rule's. Only used when the float32 estimate is within a bin (f32 in Histogram.__init__).
    cdef int idx[BLOCK]
    cdef int bn
    cdef float t, v, top = <float>ne, one = 1.0, zero = 0.0
    cdef Py_ssize_t i = 0, k, m
    cdef col_t j
    cdef count_t nn = 0
    while i < n:
        m = n - i if n - i < BLOCK else BLOCK
        bn = 0
        for k in range(m):
            v = x[i + k]
            bn += v != v
            t = (v - lo) * scale + one
            t = t if t > zero else zero
            t = t if t < top else top
            idx[k] = <int>t
        nn += bn
        for k in range(m):
            v = x[i + k]
            j = idx[k]
            counts[j + (v >= ext32[j + 1]) - (v < ext32[j])] += 1
        i += m
    counts[0] -= nn
    nan[0] += nn


cdef inline void hist_few_f32(const float* x, Py_ssize_t n,                          # IN
                              const float* ext32, col_t ne, float lo, float scale,   # IN
                              count_t* counts, count_t* nan) noexcept nogil:          # OUT
    # hist_uniform_f32's rule one value at a time, for a few values (less set-up than its blocks).
    cdef float v, top = <float>ne
    cdef Py_ssize_t k
    cdef count_t nn = 0
    for k in range(n):
        v = x[k]
        nn += v != v
        counts[ucol(v, ext32, lo, scale, top)] += 1
    counts[0] -= nn
    nan[0] += nn


cdef inline col_t upper(const double* e, col_t n, double v) noexcept nogil:
    """Number of edges <= v (branch-free binary search); that is the column."""
    cdef const double* base = e
    cdef col_t half
    while n > 1:
        half = n >> 1
        base = base + half if base[half] <= v else base
        n -= half
    return (base - e) + (base[0] <= v)


cdef inline void hist_search(const floating* x, Py_ssize_t n, Py_ssize_t stride,  # IN
                             const double* edges, col_t ne,                       # IN
                             count_t* counts, count_t* nan) noexcept nogil:       # OUT
    cdef double v
    cdef Py_ssize_t i
    for i in range(n):
        v = <double>x[i * stride]
        if v != v:
            nan[0] += 1
        else:
            counts[upper(edges, ne, v)] += 1


cdef inline void hist_columns(const HistTable* h,                                         # IN (*counts, *nan: OUT)
                              const char* base, bint dbl, Py_ssize_t rows, Py_ssize_t k,  # IN
                              Py_ssize_t rs, Py_ssize_t cs) noexcept nogil:               # IN
    """Column c of the values (byte offset c * cs, row stride rs elements) into class c."""
    cdef Py_ssize_t c
    cdef const char* col
    cdef count_t* counts
    for c in range(k):
        col = base + c * cs
        counts = h.counts + c * (h.ne + 1)
        if h.ext32 != NULL and not dbl and rs == 1:
            if rows < BLOCK_MIN:
                hist_few_f32(<const float*>col, rows, h.ext32, h.ne, <float>h.lo, <float>h.scale, counts, h.nan + c)
            else:
                hist_uniform_f32(<const float*>col, rows, h.ext32, h.ne, <float>h.lo, <float>h.scale, counts, h.nan + c)
        elif h.uniform and dbl:
            hist_uniform(<const double*>col, rows, rs, h.ext, h.ne, h.lo, h.scale, counts, h.nan + c)
        elif h.uniform:
            hist_uniform(<const float*>col, rows, rs, h.ext, h.ne, h.lo, h.scale, counts, h.nan + c)
        elif dbl:
            hist_search(<const double*>col, rows, rs, h.ext + 1, h.ne, counts, h.nan + c)
        else:
            hist_search(<const float*>col, rows, rs, h.ext + 1, h.ne, counts, h.nan + c)
