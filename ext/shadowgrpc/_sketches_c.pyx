# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Streaming sketches, compiled twin of shadowgrpc/_sketches_py.py (same counts, same bytes, same
divergence values to the last bit; see that module for the rules, and the _sketches_*_py modules
it re-exports from for the code).

Values reach the kernels as (pointer, length, stride), by the cheapest way that applies:

- an aligned C-contiguous float32/float64 ndarray of fewer than ``NOGIL_MIN`` values (a decoded
  output: the common case) straight from its header (``ndarray_head``, checked at import), with
  the GIL held throughout: no ``Py_buffer`` export, which costs numpy ~35 ns per array (a
  response's 32 arrays: half of ``update_many``'s time);
- any other float32/float64 buffer through the buffer protocol (a ``Py_buffer``: any strides);
- anything else after ``as_values``.

The sketches' state is in numpy arrays that they own, reached through raw pointers (see
_sketches_c.pxd). The kernels are ``noexcept nogil``; updates of at least ``NOGIL_MIN`` values run
with the GIL released (below that, releasing it costs more than the work).

Histogram kernels, chosen per column: uniform edges and contiguous float32 -> ``hist_uniform_f32``
(estimates in a vectorized block loop, corrected against the edges rounded up to float32), or
``hist_few_f32`` below ``BLOCK_MIN`` values (the same, one value at a time); uniform edges
otherwise -> ``hist_uniform`` (float64 estimate, corrected against the edges); non-uniform edges
-> ``hist_search`` (branch-free binary search). All give ``searchsorted(edges, x, side="right")``
exactly. Serialisation, the bucket tables of ``LatencySketch`` and the paired statistics are
shared with the Python twin, so the bytes are identical by construction.
"""

from cpython.buffer cimport PyBUF_RECORDS_RO, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from libc.math cimport INFINITY, ceil, fabs, llrint, log
from libc.stdlib cimport calloc, free
cimport cython
from cython cimport floating

from shadowgrpc._types cimport col_t, count_t

import numpy as np

from shadowgrpc import _sketches_core_py as _core
from shadowgrpc._sketches_divergence_py import DEFAULT_EPS, positions
from shadowgrpc._sketches_paired_py import BinaryAgreement, CosineStats, LabelAgreement, RegressionAgreement

__all__ = (
    "DEFAULT_EPS",
    "BinaryAgreement",
    "CosineStats",
    "Histogram",
    "LabelAgreement",
    "LatencySketch",
    "RegressionAgreement",
    "divergences",
    "update_many",
)

cdef enum:
    NOGIL_MIN = 4096
    BLOCK = 256
    BLOCK_MIN = 16      # fewer contiguous float32 values than this: hist_few_f32 (no block set-up)

cdef double LAT_MIN_S = _core.LAT_MIN_S
cdef double LAT_MAX_S = _core.LAT_MAX_S
cdef double INV_LOG_GROWTH = 1.0 / log(_core.LAT_GROWTH)
cdef double[::1] LAT_MID = np.ascontiguousarray(_core.LAT_MID, dtype=np.float64)
# Uniform edges: each edge within this fraction of a bin width of lo + i * width, so the index
# computed by multiplication is off by at most one and one comparison each way corrects it.
cdef double UNIFORM_TOL = 1e-3


# ---------------------------------------------------------------------------------------------
# ndarray headers: a contiguous float32/float64 ndarray's data without a buffer export
# ---------------------------------------------------------------------------------------------

cdef object NDARRAY = np.ndarray
cdef object F32 = np.dtype(np.float32)
cdef object F64 = np.dtype(np.float64)


cdef extern from *:
    """
    /* The leading fields of numpy's PyArrayObject_fields (numpy/ndarraytypes.h), the same from
       numpy 1.7 to 2.x: numpy's own inline accessors (PyArray_DATA, PyArray_DIMS, ...) are
       compiled into every numpy extension with these offsets. Read here without numpy's headers;
       checked against the Python-level attributes at import (head_matches). */
    typedef struct {
        PyObject_HEAD
        char *data;
        int nd;
        Py_ssize_t *dimensions;
        Py_ssize_t *strides;
        PyObject *base;
        PyObject *descr;
        int flags;
    } sg_ndarray_head;
    """
    ctypedef struct ndarray_head "sg_ndarray_head":
        char* data
        int nd
        Py_ssize_t* dimensions
        Py_ssize_t* strides
        PyObject* descr
        int flags

cdef enum:
    C_CONTIGUOUS = 0x0001         # NPY_ARRAY_C_CONTIGUOUS
    ALIGNED = 0x0100              # NPY_ARRAY_ALIGNED
    C_ALIGNED = C_CONTIGUOUS | ALIGNED


cdef bint head_matches(object a) except -1:
    """The header read through ndarray_head agrees with what numpy reports for ``a``."""
    cdef ndarray_head* h = <ndarray_head*><PyObject*>a
    cdef int i
    if (<size_t>h.data != a.__array_interface__["data"][0] or h.nd != a.ndim or h.descr != <PyObject*>a.dtype
            or bool(h.flags & C_CONTIGUOUS) != a.flags.c_contiguous or bool(h.flags & ALIGNED) != a.flags.aligned):
        return False
    for i in range(h.nd):
        if h.dimensions[i] != a.shape[i] or h.strides[i] != a.strides[i]:
            return False
    return True


def _direct_ok():
    """True when ndarray_head reads numpy's headers right (else the buffer protocol is used)."""
    probe = np.zeros((5, 3), dtype=F32)
    unaligned = np.frombuffer(bytearray(4 * 9), dtype=F64, count=4, offset=1)
    return all(head_matches(a) for a in (probe, probe.T, probe[1:, 1], np.zeros(7, dtype=F64)[1:], unaligned))


# Whether contiguous ndarrays are read from their header (else through the buffer protocol).
cdef bint DIRECT = _direct_ok()


# ---------------------------------------------------------------------------------------------
# nogil kernels
# ---------------------------------------------------------------------------------------------

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


cdef void hist_uniform_f32(const float* x, Py_ssize_t n,                          # IN
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


cdef void hist_columns(const HistTable* h,                                   # IN (*counts, *nan: OUT)
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


cdef inline bint is_double(const char* fmt) noexcept:
    if fmt[0] == b"<" or fmt[0] == b"=" or fmt[0] == b"@":
        fmt += 1
    return fmt[0] == b"d" and fmt[1] == 0


cdef inline bint is_float(const char* fmt) noexcept:
    if fmt[0] == b"<" or fmt[0] == b"=" or fmt[0] == b"@":
        fmt += 1
    return fmt[0] == b"f" and fmt[1] == 0


# ---------------------------------------------------------------------------------------------
# Histogram
# ---------------------------------------------------------------------------------------------

cdef class Histogram:
    """Fixed-edge histogram with underflow/overflow columns, one row per class (see
    shadowgrpc._sketches_py for the rule)."""

    def __init__(self, edges, n_classes=1):
        cdef count_t[:, ::1] cnt
        cdef count_t[::1] nanc
        cdef const double[::1] ext_v
        cdef const float[::1] ext32_v
        cdef HistTable* t = &self.t
        if int(n_classes) < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        e = _core.validate_edges(edges)
        ne = e.size
        self._edges_arr = e
        self.nc = int(n_classes)
        self._counts_arr = np.zeros((self.nc, ne + 1), dtype=np.int64)
        self._nan_arr = np.zeros(self.nc, dtype=np.int64)
        ext = np.empty(ne + 2, dtype=np.float64)
        ext[0] = -np.inf
        ext[1:ne + 1] = e
        ext[ne + 1] = np.nan
        self._ext_arr = ext
        nb = ne - 1
        hi = e[ne - 1]
        width = (hi - e[0]) / nb
        scale = nb / (hi - e[0])
        ideal = e[0] + np.arange(ne) * width
        uniform = bool(np.all(np.abs(e - ideal) <= UNIFORM_TOL * width)) and np.isfinite(scale)
        with np.errstate(over="ignore"):
            e32 = ext.astype(np.float32)
            up = e32 < ext  # round up: for a float32 x, x >= e exactly when x >= ceil32(e)
            e32[up] = np.nextafter(e32[up], np.float32(np.inf))
        self._ext32_arr = e32
        # float32 estimate error, in bins: ~6e-8 * (|lo| * scale + nbins) + the edges' deviation;
        # f32: well within one bin
        f32 = uniform and abs(e[0]) * scale < 1e6 and nb < 100_000 and scale < 1e30
        cnt, nanc, ext_v, ext32_v = self._counts_arr, self._nan_arr, ext, e32
        t.counts, t.nan, t.ext, t.ext32 = &cnt[0, 0], &nanc[0], &ext_v[0], (&ext32_v[0] if f32 else NULL)
        t.ne, t.lo, t.scale, t.uniform = ne, e[0], scale, uniform

    @property
    def edges(self):
        return self._edges_arr.copy()

    @property
    def n_classes(self):
        return self.nc

    @property
    def counts(self):
        """int64 [n_classes, nbins + 2]: column 0 underflow, last column overflow."""
        return self._counts_arr.copy()

    @property
    def nan(self):
        return self._nan_arr.copy()

    @property
    def nbytes(self):
        return int(self._counts_arr.nbytes + self._nan_arr.nbytes + self._edges_arr.nbytes)

    @property
    def uniform_edges(self):
        """True when the multiply-and-correct fast path is used (else binary search)."""
        return bool(self.t.uniform)

    def update(self, values):
        self._update(values)

    @cython.final
    cdef int _update(self, object values) except -1:
        """Counts ``values``: an aligned C-contiguous float32/float64 ndarray of fewer than
        NOGIL_MIN values straight from its header; any other buffer of float32/float64 through the
        buffer protocol; anything else after ``as_values``."""
        cdef ndarray_head* a
        cdef Py_ssize_t rows, k
        cdef bint dbl
        if DIRECT and type(values) is NDARRAY:
            a = <ndarray_head*><PyObject*>values
            dbl = a.descr == <PyObject*>F64
            if ((dbl or a.descr == <PyObject*>F32) and (a.flags & C_ALIGNED) == C_ALIGNED
                    and 1 <= a.nd <= 2):
                rows = a.dimensions[0]
                k = a.dimensions[1] if a.nd == 2 else 1
                if rows * k < NOGIL_MIN:  # the GIL stays held: nothing can free or resize the data
                    return self._count(a.data, dbl, rows, k, k, 8 if dbl else 4)
        if PyObject_CheckBuffer(values) and self._update_buffer(values) == 1:
            return 1
        return self._update_buffer(_core.as_values(values, self.nc))

    @cython.final
    cdef int _update_buffer(self, object values) except -1:
        """1 when done; 0 when the buffer's type or shape needs the generic conversion."""
        cdef Py_buffer view
        cdef bint dbl
        cdef Py_ssize_t rows, k, rs, cs
        PyObject_GetBuffer(values, &view, PyBUF_RECORDS_RO)
        try:
            if view.format == NULL:
                return 0
            dbl = is_double(view.format)
            if not dbl and not is_float(view.format):
                return 0
            if view.ndim == 1:
                rows, k = view.shape[0], 1
                rs, cs = view.strides[0], 0
            elif view.ndim == 2:
                rows, k = view.shape[0], view.shape[1]
                rs, cs = view.strides[0], view.strides[1]
            else:
                return 0
            if rs % view.itemsize or cs % view.itemsize:
                return 0
            return self._count(<const char*>view.buf, dbl, rows, k, rs // view.itemsize, cs)
        finally:
            PyBuffer_Release(&view)

    @cython.final
    cdef int _count(self, const char* base, bint dbl, Py_ssize_t rows, Py_ssize_t k,  # IN
                    Py_ssize_t rs, Py_ssize_t cs) except -1:                         # IN
        """Counts column c (byte offset c * cs, row stride rs elements) into class c; returns 1."""
        if k > self.nc:
            raise ValueError(f"values have {k} columns but the histogram has {self.nc} classes")
        if self.t.counts == NULL:
            raise ValueError("Histogram.__init__ was not called")
        if rows * k >= NOGIL_MIN:
            with nogil:
                hist_columns(&self.t, base, dbl, rows, k, rs, cs)
        else:
            hist_columns(&self.t, base, dbl, rows, k, rs, cs)
        return 1

    def merge(self, other):
        if other.counts.shape != self._counts_arr.shape or not np.array_equal(self._edges_arr, other.edges):
            raise ValueError("cannot merge histograms with different edges or classes")
        self._counts_arr += other.counts
        self._nan_arr += other.nan

    def to_bytes(self):
        return _core.pack_histogram(self._edges_arr, self._counts_arr, self._nan_arr)

    @classmethod
    def from_bytes(cls, b):
        edges, counts, nan = _core.unpack_histogram(b)
        cdef Histogram h = cls(edges, counts.shape[0])
        h._counts_arr[...] = counts
        h._nan_arr[...] = nan
        return h


# ---------------------------------------------------------------------------------------------
# LatencySketch
# ---------------------------------------------------------------------------------------------

cdef class LatencySketch:
    """Log-bucketed latency histogram, 1 us .. 60 s, 1% buckets (see shadowgrpc._sketches_py)."""

    def __cinit__(self):
        cdef count_t[::1] cnt
        cdef const double[::1] bounds
        self.nb = _core.LAT_NBUCKETS
        self._counts_arr = np.zeros(self.nb, dtype=np.int64)
        self._bounds_arr = np.ascontiguousarray(_core.LAT_BOUNDS, dtype=np.float64)
        cnt, bounds = self._counts_arr, self._bounds_arr
        self.cnt, self.bounds = &cnt[0], &bounds[0]
        self.max = 0.0

    @property
    def counts(self):
        return self._counts_arr.copy()

    @property
    def nbytes(self):
        return int(self._counts_arr.nbytes) + 64

    @property
    def mean(self):
        return <double>self.sum_ns / <double>self.count / 1e9 if self.count else float("nan")

    cdef void _record(self, const double* x, Py_ssize_t n, Py_ssize_t stride) noexcept nogil:
        cdef Py_ssize_t i
        cdef col_t j, top = self.nb - 1
        cdef double v, c
        cdef const double* b = self.bounds
        cdef count_t* counts = self.cnt
        for i in range(n):
            v = x[i * stride]
            if v != v:
                self.nan += 1
                continue
            if v > self.max:
                self.max = v
            if v < LAT_MIN_S:
                self.clamped_low += 1
                j = 0
                c = LAT_MIN_S
            elif v >= LAT_MAX_S:
                self.clamped_high += 1
                j = top
                c = LAT_MAX_S
            else:
                c = v
                j = <col_t>(log(v / LAT_MIN_S) * INV_LOG_GROWTH)
                j = 0 if j < 0 else (top if j > top else j)
                while j > 0 and v < b[j]:
                    j -= 1
                while j < top and v >= b[j + 1]:
                    j += 1
            counts[j] += 1
            self.sum_ns += llrint(c * 1e9)
            self.count += 1

    def record(self, double seconds):
        self._record(&seconds, 1, 1)

    def record_many(self, values):
        cdef Py_buffer view
        cdef bint done = False
        if PyObject_CheckBuffer(values):
            PyObject_GetBuffer(values, &view, PyBUF_RECORDS_RO)
            try:
                if (view.format != NULL and is_double(view.format) and view.ndim == 1
                        and view.strides[0] % 8 == 0):
                    if view.shape[0] >= NOGIL_MIN:
                        with nogil:
                            self._record(<const double*>view.buf, view.shape[0], view.strides[0] // 8)
                    else:
                        self._record(<const double*>view.buf, view.shape[0], view.strides[0] // 8)
                    done = True
            finally:
                PyBuffer_Release(&view)
        if not done:
            v = np.asarray(values)
            if v.dtype not in (np.float32, np.float64):
                v = v.astype(np.float64)
            self.record_many(np.ascontiguousarray(v.reshape(-1), dtype=np.float64))

    def quantile(self, double q):
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            return float("nan")
        cdef count_t k = <count_t>ceil(q * self.count)
        k = 1 if k < 1 else (self.count if k > self.count else k)
        cdef count_t acc = 0
        cdef col_t i
        for i in range(self.nb):
            acc += self.cnt[i]
            if acc >= k:
                return LAT_MID[i]
        return LAT_MID[self.nb - 1]

    def quantiles(self, qs):
        return [self.quantile(float(q)) for q in qs]

    def merge(self, other):
        self._counts_arr += other.counts
        self.count += other.count
        self.clamped_low += other.clamped_low
        self.clamped_high += other.clamped_high
        self.nan += other.nan
        self.max = max(self.max, other.max)
        self.sum_ns += other.sum_ns

    def to_bytes(self):
        return _core.pack_latency(self._counts_arr, self.count, self.clamped_low, self.clamped_high,
                                  self.nan, self.max, self.sum_ns)

    @classmethod
    def from_bytes(cls, b):
        counts, count, low, high, nan, mx, sum_ns = _core.unpack_latency(b)
        cdef LatencySketch s = cls()
        s._counts_arr[...] = counts
        s.count, s.clamped_low, s.clamped_high, s.nan, s.max, s.sum_ns = count, low, high, nan, mx, sum_ns
        return s


# ---------------------------------------------------------------------------------------------
# divergences
# ---------------------------------------------------------------------------------------------

cdef void diverge(const double* p, const double* q, Py_ssize_t b, double eps,  # IN
                  const double* pos,                                           # IN (NULL: index)
                  double* out) noexcept nogil:                                 # OUT [6]
    # Same operations in the same order as _sketches_divergence_py.divergences_ref.
    cdef double np_ = 0.0, nq = 0.0, dp, dq, pi, qi, mi, lp, lq, lm
    cdef double kl_pq = 0.0, kl_qp = 0.0, js = 0.0, psi = 0.0, tv = 0.0, w1 = 0.0, cp = 0.0, cq = 0.0
    cdef Py_ssize_t i
    for i in range(b):
        np_ += p[i]
        nq += q[i]
    dp = 1.0 / (np_ + eps * <double>b) if np_ + eps * <double>b > 0 else 0.0
    dq = 1.0 / (nq + eps * <double>b) if nq + eps * <double>b > 0 else 0.0
    for i in range(b):
        pi = (p[i] + eps) * dp
        qi = (q[i] + eps) * dq
        mi = 0.5 * (pi + qi)
        lp = log(pi) if pi > 0.0 else 0.0
        lq = log(qi) if qi > 0.0 else 0.0
        lm = log(mi) if mi > 0.0 else 0.0
        if pi > 0.0:
            kl_pq += pi * (lp - lq) if qi > 0.0 else INFINITY
            js += pi * (lp - lm)
        if qi > 0.0:
            kl_qp += qi * (lq - lp) if pi > 0.0 else INFINITY
            js += qi * (lq - lm)
        if pi > 0.0 and qi > 0.0:
            psi += (pi - qi) * (lp - lq)
        elif pi != qi:
            psi = INFINITY
        tv += fabs(pi - qi)
        cp += pi
        cq += qi
        if i + 1 < b:
            w1 += fabs(cp - cq) * ((pos[i + 1] - pos[i]) if pos != NULL else 1.0)
    out[0] = kl_pq
    out[1] = kl_qp
    out[2] = js * 0.5 / log(2.0)
    out[3] = psi
    out[4] = 0.5 * tv
    out[5] = w1


cdef inline object as_f64(object counts):
    a = np.asarray(counts)
    if a.dtype != np.float64 or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, dtype=np.float64)
    return a.reshape(-1)


def divergences(p_counts, q_counts, double eps=DEFAULT_EPS, edges=None):
    """See shadowgrpc._sketches_py.divergences (same definitions, same bits)."""
    cdef const double[::1] p = as_f64(p_counts)
    cdef const double[::1] q = as_f64(q_counts)
    cdef const double[::1] pos
    cdef const double* ppos = NULL
    cdef double out[6]
    cdef Py_ssize_t b = p.shape[0]
    if b != q.shape[0] or b == 0:
        raise ValueError(f"histograms must have the same non-zero number of bins, got {b} and {q.shape[0]}")
    if not (eps >= 0 and eps < INFINITY):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    if edges is not None:
        pos = positions(b, edges)
        ppos = &pos[0]
    diverge(&p[0], &q[0], b, eps, ppos, out)
    return {"kl_pq": out[0], "kl_qp": out[1], "js": out[2], "psi": out[3], "tv": out[4], "w1": out[5]}


def update_many(histograms, values):
    """``histograms[i].update(values[i])`` for every i, in one call (one response's outputs)."""
    hs = PySequence_Fast(histograms, "histograms must be a sequence")
    vs = PySequence_Fast(values, "values must be a sequence")
    cdef Py_ssize_t i, n = PySequence_Fast_GET_SIZE(hs)
    if PySequence_Fast_GET_SIZE(vs) != n:
        raise ValueError(f"{n} histograms but {PySequence_Fast_GET_SIZE(vs)} value arrays")
    cdef object h
    for i in range(n):
        h = <object>PySequence_Fast_GET_ITEM(hs, i)
        if not isinstance(h, Histogram):  # None too: its _update would crash
            raise TypeError(f"update_many takes Histograms, got {type(h).__name__}")
        (<Histogram>h)._update(<object>PySequence_Fast_GET_ITEM(vs, i))
