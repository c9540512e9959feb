# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Streaming sketches, compiled twin part 1: ``Histogram`` (with ``update_many``) and
``LatencySketch``, the twins of shadowgrpc/sketches/_core_py.py (same counts, same bytes; the
rules are in shadowgrpc/sketches/_py.py). shadowgrpc.sketches._c re-exports them.

Values reach the kernels (_kernels.pxd) as (pointer, length, stride), by the cheapest way
that applies:

- an aligned C-contiguous float32/float64 ndarray of fewer than ``NOGIL_MIN`` values (a decoded
  output: the common case) straight from its header (numpy's C API: PyArray_DATA, ...), with the
  GIL held throughout: no ``Py_buffer`` export, which costs numpy ~35 ns per array (a response's
  32 arrays: half of ``update_many``'s time);
- any other float32/float64 buffer through the buffer protocol (a ``Py_buffer``: any strides);
- anything else after ``as_values``.

The sketches' state is in numpy arrays that they own, reached through raw pointers (see
_core_c.pxd). The kernels are ``noexcept nogil``; updates of at least ``NOGIL_MIN`` values
run with the GIL released (below that, releasing it costs more than the work). Validation,
serialisation and the bucket tables of ``LatencySketch`` are shared with the Python twin, so the
bytes are identical by construction.
"""

from cpython.buffer cimport PyBUF_RECORDS_RO, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from libc.math cimport ceil, llrint, log
cimport cython
cimport numpy as cnp

from shadowgrpc.sketches._kernels cimport NOGIL_MIN, HistTable, hist_columns, is_double, is_float
from shadowgrpc._types cimport col_t, count_t

import numpy as np

from shadowgrpc.sketches import _core_py as _core

__all__ = ("Histogram", "LatencySketch", "update_many")

cdef double LAT_MIN_S = _core.LAT_MIN_S
cdef double LAT_MAX_S = _core.LAT_MAX_S
cdef double INV_LOG_GROWTH = 1.0 / log(_core.LAT_GROWTH)
cdef double[::1] LAT_MID = np.ascontiguousarray(_core.LAT_MID, dtype=np.float64)
# Uniform edges: each edge within this fraction of a bin width of lo + i * width, so the index
# computed by multiplication is off by at most one and one comparison each way corrects it.
cdef double UNIFORM_TOL = 1e-3


# A decoded output: a C-contiguous float32/float64 ndarray, read through numpy's C API
cnp.import_array()
cdef object NDARRAY = np.ndarray
cdef object F32 = np.dtype(np.float32)
cdef object F64 = np.dtype(np.float64)
cdef int C_ALIGNED = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED


# ---------------------------------------------------------------------------------------------
# Histogram
# ---------------------------------------------------------------------------------------------

cdef class Histogram:
    """Fixed-edge histogram with underflow/overflow columns, one row per class (see
    shadowgrpc.sketches._py for the rule)."""

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
        NOGIL_MIN values straight from its header (numpy's C API); any other buffer of float32/float64 through the
        buffer protocol; anything else after ``as_values``."""
        cdef PyObject* descr
        cdef Py_ssize_t rows, k
        cdef cnp.npy_intp* dims
        cdef int nd
        cdef bint dbl
        if type(values) is NDARRAY:  # (the casts borrow ``values``: no reference counting)
            descr = <PyObject*>cnp.PyArray_DESCR(<cnp.ndarray>values)
            nd = cnp.PyArray_NDIM(<cnp.ndarray>values)
            dbl = descr == <PyObject*>F64
            if ((dbl or descr == <PyObject*>F32) and 1 <= nd <= 2
                    and (cnp.PyArray_FLAGS(<cnp.ndarray>values) & C_ALIGNED) == C_ALIGNED):
                dims = cnp.PyArray_DIMS(<cnp.ndarray>values)
                rows = dims[0]
                k = dims[1] if nd == 2 else 1
                if rows * k < NOGIL_MIN:  # the GIL stays held: nothing can free or resize the data
                    return self._count(cnp.PyArray_BYTES(<cnp.ndarray>values), dbl, rows, k, k, 8 if dbl else 4)
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
    """Log-bucketed latency histogram, 1 us .. 60 s, 1% buckets (see shadowgrpc.sketches._py)."""

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
