# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Streaming sketches, compiled twin part 3: the paired statistics of live vs shadow
(``LabelAgreement``, ``BinaryAgreement``, ``RegressionAgreement``, ``CosineStats``), twins of
shadowgrpc/sketches/_paired_py.py: the same counts, values, bytes, warnings and exceptions.
shadowgrpc.sketches._c re-exports them.

An update reads live and shadow through the buffer protocol when both are C-contiguous buffers of
one kind (scores, values, probabilities, embeddings: float32 or float64; labels: int32 or int64),
aligned or not, and counts them in the ``noexcept nogil`` kernels of _paired_kernels.pxd,
without the GIL from ``NOGIL_MIN`` values. Anything else (lists, other or mixed dtypes, strided
arrays, other byte orders) goes through the Python twin's own update method, run on this object:
its attributes are the twin's (``confusion``, ``invalid``, ``count``, ... are writable, as there).

The kernels repeat the twin's numpy calls operation for operation:

- argmax (``update_probs``): the first NaN of a row, else its first maximum, as numpy.argmax;
- thresholds, |live - shadow| and ``atol + rtol * |shadow|``: in float64, one rounding per
  operation (built with -ffp-contract=off: no fused multiply-add);
- cosines: the dot product is ``np.einsum("ij,ij->i")``'s inner loop at numpy's baseline SIMD width
  (two interleaved sums; in blocks of 8192 where einsum buffers: one row, unaligned float64), the
  norms ``np.linalg.norm``'s ``sqrt(add.reduce(x * x))`` (pairwise summation in blocks of 8192);
  ``_cosine_exact`` checks that against numpy bit for bit at import, and where numpy adds otherwise
  (another SIMD baseline, FMA) embeddings go through the twin. The mean is a fixed-point sum of
  ``llrint(cos * 2**32)`` (round half to even in the default rounding mode, as np.rint).

Where numpy would report a floating-point overflow or underflow (huge or tiny values; np.errstate
decides whether that warns or raises), or where the minimum cosine is a zero of either sign (which
one numpy.min returns is its own), the kernel's result is discarded before anything is counted and
the update goes through the twin. ``merge``, ``to_bytes``, ``from_bytes``, ``count``,
``agreement`` and ``mean`` are the twin's own functions: identical results, bytes and errors.
"""

from cpython.buffer cimport PyBUF_RECORDS_RO, PyBuffer_IsContiguous, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from libc.math cimport INFINITY
from libc.stdlib cimport free, malloc
cimport cython

from shadowgrpc.sketches._core_c cimport Histogram, LatencySketch
from shadowgrpc.sketches._kernels cimport BLOCK, NOGIL_MIN, native
from shadowgrpc.sketches._paired_kernels cimport (
    C_ARGMAX, C_BINARY, C_LABELS, K_F32, K_F64, K_I32, K_I64, K_NONE, CosAcc, Counting, Kind, Values, add_cosines,
    cosines_of, count_confusion, diffs_of, fp_clear, fp_raised, scan_cosines,
)
from shadowgrpc._types cimport count_t

import numpy as np

from shadowgrpc.sketches import _paired_py as _py

__all__ = ("BinaryAgreement", "CosineStats", "LabelAgreement", "RegressionAgreement")

cdef double COS_SCALE = _py._COS_SCALE


# ---------------------------------------------------------------------------------------------
# live and shadow buffers
# ---------------------------------------------------------------------------------------------

cdef Kind buffer_kind(Py_buffer* v) noexcept:
    cdef const char* f
    if v.format == NULL or not PyBuffer_IsContiguous(v, b"C"):
        return K_NONE
    f = native(v.format)
    if f[0] == 0 or f[1] != 0:
        return K_NONE
    if f[0] == b"f" and v.itemsize == 4:
        return K_F32
    if f[0] == b"d" and v.itemsize == 8:
        return K_F64
    if f[0] == b"i" or f[0] == b"l" or f[0] == b"q":
        return K_I32 if v.itemsize == 4 else (K_I64 if v.itemsize == 8 else K_NONE)
    return K_NONE


@cython.final
@cython.freelist(4)
cdef class Pair:
    """live's and shadow's buffers, exported while the Pair lives (see ``pair``)."""

    def __dealloc__(self):
        if self.a.kind != K_NONE:
            PyBuffer_Release(&self.bl)
        if self.b.kind != K_NONE:
            PyBuffer_Release(&self.bs)

    cdef bint same(self, Kind k1, Kind k2) noexcept:
        """Both of kind k1, or both of kind k2."""
        return self.a.kind == self.b.kind and (self.a.kind == k1 or self.a.kind == k2)


cdef int export(object x, Py_buffer* view, Values* v) except -1:
    v.kind = K_NONE
    if not PyObject_CheckBuffer(x):
        return 0
    try:
        PyObject_GetBuffer(x, view, PyBUF_RECORDS_RO)
    except BufferError:
        return 0
    v.kind = buffer_kind(view)
    if v.kind == K_NONE:
        PyBuffer_Release(view)
        return 0
    v.data = <const char*>view.buf
    v.n = view.len // view.itemsize
    v.ndim = view.ndim
    v.last = view.shape[view.ndim - 1] if view.ndim > 0 else 1
    v.aligned = (<size_t>view.buf) % view.itemsize == 0
    return 0


cdef Pair pair(object live, object shadow):
    cdef Pair p = Pair.__new__(Pair)
    export(live, &p.bl, &p.a)
    export(shadow, &p.bs, &p.b)
    return p


cdef double* scratch(Py_ssize_t n, double* stack) except NULL:
    """``stack`` (BLOCK doubles) when n fit in it, else a new array (``release`` frees it)."""
    cdef double* buf = stack if n <= BLOCK else <double*>malloc(n * sizeof(double))
    if buf == NULL:
        raise MemoryError()
    return buf


cdef inline void release(double* buf, double* stack) noexcept:
    if buf != stack:
        free(buf)


cdef object compiled(object cls, object sketch):
    """``sketch`` as the compiled ``cls`` (Histogram or LatencySketch): itself, or a copy of a twin's."""
    return sketch if type(sketch) is cls else cls.from_bytes(sketch.to_bytes())


# ---------------------------------------------------------------------------------------------
# the cosine kernel against numpy
# ---------------------------------------------------------------------------------------------

def _cosines(a, b):
    """The kernel's cosine of each row of two C-contiguous 2-D float arrays of one dtype, aligned
    or not (raw: NaN and inf kept, not clipped); for ``_cosine_exact`` and the tests."""
    cdef Pair p = pair(a, b)
    cdef double[::1] out = np.empty(a.shape[0])
    if not (p.same(K_F32, K_F64) and a.ndim == 2 and a.shape == b.shape):
        raise TypeError("two C-contiguous 2-D float32 or float64 arrays of one shape")
    if out.shape[0]:
        cosines_of(&p.a, &p.b, out.shape[0], &out[0])
    return out.base


def _cosine_exact():
    """True when the cosine kernel gives numpy's values bit for bit, on random rows of the lengths
    where numpy's summation changes shape (else CosineStats updates through the twin)."""
    rng = np.random.default_rng(20240601)
    shapes = [(5, d) for d in range(34)] + [(5, 127), (5, 129), (5, 1000), (2, 8200), (1, 8200), (1, 9), (4, 1)]
    for rows, d in shapes:
        for dt in (np.float64, np.float32):
            a = (rng.standard_normal((rows, d)) * rng.uniform(0.1, 1e3, (rows, 1))).astype(dt)
            b = rng.standard_normal((rows, d)).astype(dt)
            if d == 8200:  # unaligned float64: einsum buffers it
                b = np.frombuffer(b"\0" + b.tobytes(), dtype=dt, offset=1).reshape(rows, d)
            a64, b64 = a.astype(np.float64), np.asarray(b, dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                want = np.einsum("ij,ij->i", a64, b64) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
            if _cosines(a, b).tobytes() != want.tobytes():
                return False
    return True


# Whether CosineStats runs its kernel (else each update goes through the Python twin).
cdef bint COSINE_EXACT = _cosine_exact()


# ---------------------------------------------------------------------------------------------
# LabelAgreement, BinaryAgreement
# ---------------------------------------------------------------------------------------------

cdef class Confusion:
    """A live x shadow confusion matrix: the state of LabelAgreement and BinaryAgreement."""

    cdef int _zeros(self, count_t n) except -1:
        cdef count_t[:, ::1] c
        self._confusion = c = np.zeros((n, n), dtype=np.int64)
        self.conf = &c[0, 0]
        self.n = n
        return 0

    cdef int _count(self, Pair p, Counting what, double t, Py_ssize_t rows, Py_ssize_t shadow_rows, str unit) except -1:
        """Counts the ``rows`` of live and shadow (``shadow_rows``: shadow's, else ValueError) by
        ``what`` (t: the threshold of C_BINARY)."""
        if rows != shadow_rows:
            raise ValueError(f"live and shadow have {rows} and {shadow_rows} {unit}")
        if self.conf == NULL:
            raise ValueError(f"{type(self).__name__}.__init__ was not called")
        if p.a.n + p.b.n < NOGIL_MIN:
            count_confusion(what, &p.a, &p.b, self.n, t, self.conf, &self.invalid)
        else:
            with nogil:
                count_confusion(what, &p.a, &p.b, self.n, t, self.conf, &self.invalid)
        return 0

    @property
    def confusion(self):
        """int64 [n, n], the sketch's own array (assigning copies into it)."""
        return self._confusion

    @confusion.setter
    def confusion(self, value):
        self._confusion[...] = value


cdef class LabelAgreement(Confusion):
    """Classifier top-1 agreement: live x shadow confusion matrix (see the Python twin)."""

    def __init__(self, n_classes):
        if int(n_classes) < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self._zeros(int(n_classes))

    count = _py.LabelAgreement.count
    agreement = _py.LabelAgreement.agreement

    def update_labels(self, live, shadow):
        cdef Pair p = pair(live, shadow)
        if not p.same(K_I32, K_I64):
            return _py.LabelAgreement.update_labels(self, live, shadow)
        self._count(p, C_LABELS, 0.0, p.a.n, p.b.n, "labels")

    def update_probs(self, live_probs, shadow_probs):
        """argmax over the last axis (first maximum wins, as numpy.argmax)."""
        cdef Pair p = pair(live_probs, shadow_probs)
        if not (p.same(K_F32, K_F64) and p.a.ndim >= 1 and p.b.ndim >= 1 and p.a.last >= 1 and p.b.last >= 1):
            return _py.LabelAgreement.update_probs(self, live_probs, shadow_probs)
        self._count(p, C_ARGMAX, 0.0, p.a.n // p.a.last, p.b.n // p.b.last, "labels")

    merge = _py.LabelAgreement.merge
    to_bytes = _py.LabelAgreement.to_bytes
    from_bytes = classmethod(_py.LabelAgreement.from_bytes.__func__)


cdef class BinaryAgreement(Confusion):
    """Thresholded agreement of binary scores: 2x2 confusion (see the Python twin)."""

    def __init__(self, threshold=0.5):
        self.threshold = float(threshold)
        self._zeros(2)

    agreement = _py.BinaryAgreement.agreement

    def update_binary(self, live, shadow):
        cdef Pair p = pair(live, shadow)
        if not p.same(K_F32, K_F64):
            return _py.BinaryAgreement.update_binary(self, live, shadow)
        self._count(p, C_BINARY, self.threshold, p.a.n, p.b.n, "scores")

    merge = _py.BinaryAgreement.merge
    to_bytes = _py.BinaryAgreement.to_bytes
    from_bytes = classmethod(_py.BinaryAgreement.from_bytes.__func__)


# ---------------------------------------------------------------------------------------------
# RegressionAgreement, CosineStats
# ---------------------------------------------------------------------------------------------

cdef class Staged:
    """A sketch whose update is computed into a scratch array first and counted only if that
    raised no floating-point flag that numpy reports (RegressionAgreement, CosineStats)."""

    cdef bint _ready(self) noexcept:
        return False

    cdef bint _add(self, const Values* a, const Values* b, Py_ssize_t n, double* scratch) noexcept nogil:
        return True

    cdef bint _staged(self, Pair p, Py_ssize_t n) except -1:
        """``_add`` of live and shadow with a scratch array of n doubles, without the GIL from
        NOGIL_MIN values; True: nothing was counted, the twin's update must run instead."""
        cdef double stack[BLOCK]
        cdef double* buf
        cdef bint redo
        if not self._ready():
            raise ValueError(f"{type(self).__name__}.__init__ was not called")
        buf = scratch(n, stack)
        if p.a.n < NOGIL_MIN:
            redo = self._add(&p.a, &p.b, n, buf)
        else:
            with nogil:
                redo = self._add(&p.a, &p.b, n, buf)
        release(buf, stack)
        return redo


cdef class RegressionAgreement(Staged):
    """Rows within atol + rtol * |shadow|, and |live - shadow| quantiles (see the Python twin)."""

    def __init__(self, atol=1e-6, rtol=1e-3):
        self.atol, self.rtol = float(atol), float(rtol)
        self._errors = LatencySketch()

    @property
    def errors(self):
        """The LatencySketch of |live - shadow| (assigning the twin's converts it)."""
        return self._errors

    @errors.setter
    def errors(self, value):
        self._errors = compiled(LatencySketch, value)

    def update_regression(self, live, shadow):
        cdef Pair p = pair(live, shadow)
        if not p.same(K_F32, K_F64):
            return _py.RegressionAgreement.update_regression(self, live, shadow)
        if p.a.n != p.b.n:
            raise ValueError(f"live and shadow have {p.a.n} and {p.b.n} values")
        if self._staged(p, p.a.n):  # numpy reports an overflow or underflow: the twin's update does
            _py.RegressionAgreement.update_regression(self, live, shadow)

    cdef bint _ready(self) noexcept:
        return self._errors is not None

    cdef bint _add(self, const Values* a, const Values* b, Py_ssize_t n, double* err) noexcept nogil:
        """Counts a and b (|a - b| computed into err first); returns True, having counted
        nothing, when that raised a floating-point flag that numpy reports."""
        cdef count_t within = 0, invalid = 0
        cdef Py_ssize_t m
        fp_clear()
        m = diffs_of(a, b, self.atol, self.rtol, err, &within, &invalid)
        if fp_raised(&within):
            return True
        self._errors._record(err, m, 1)
        self.count += m
        self.within += within
        self.invalid += invalid
        return False

    merge = _py.RegressionAgreement.merge
    to_bytes = _py.RegressionAgreement.to_bytes
    from_bytes = classmethod(_py.RegressionAgreement.from_bytes.__func__)


cdef class CosineStats(Staged):
    """Embedding cosine similarity per row: count, exact mean, min, histogram (see the Python twin)."""

    def __init__(self):
        self.min = INFINITY
        self._hist = Histogram(np.linspace(-1.0, 1.0, 201))

    @property
    def hist(self):
        """The Histogram of the cosines (assigning the twin's converts it)."""
        return self._hist

    @hist.setter
    def hist(self, value):
        self._hist = compiled(Histogram, value)

    mean = _py.CosineStats.mean

    def update_embeddings(self, live, shadow):
        cdef Pair p
        cdef Py_ssize_t rows
        a, b = np.asarray(live), np.asarray(shadow)
        rows = a.shape[0] if a.ndim > 1 else 1  # the twin's rows: a.reshape(rows, -1)
        p = pair(a, b)
        if not (COSINE_EXACT and p.same(K_F32, K_F64) and a.shape == b.shape and rows > 0):
            return _py.CosineStats.update_embeddings(self, live, shadow)
        if self._staged(p, rows):  # a floating-point flag numpy reports, or numpy.min's choice of a zero
            _py.CosineStats.update_embeddings(self, live, shadow)

    cdef bint _ready(self) noexcept:
        return self._hist is not None and self._hist.t.counts != NULL

    cdef bint _add(self, const Values* a, const Values* b, Py_ssize_t rows, double* cos) noexcept nogil:
        """Counts the cosines of the rows of a and b (computed into cos first); returns True,
        having counted nothing, when they raised a floating-point flag that numpy reports or
        when the minimum is a zero of either sign."""
        cdef CosAcc acc
        fp_clear()
        cosines_of(a, b, rows, cos)
        if fp_raised(cos):
            return True
        acc.count = acc.invalid = acc.sum_fixed = 0
        acc.scale, acc.min = COS_SCALE, INFINITY
        acc.pos_zero = acc.neg_zero = False
        scan_cosines(cos, rows, &acc)
        if acc.pos_zero and acc.neg_zero and acc.min == 0.0:
            return True
        add_cosines(cos, rows, &self._hist.t, &acc)
        self.count += acc.count
        self.invalid += acc.invalid
        self.sum_fixed += acc.sum_fixed
        if acc.min < self.min:  # min(self.min, acc.min)
            self.min = acc.min
        return False

    merge = _py.CosineStats.merge
    to_bytes = _py.CosineStats.to_bytes
    from_bytes = classmethod(_py.CosineStats.from_bytes.__func__)
