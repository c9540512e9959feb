# Paired statistics of the compiled sketches twin (implemented in _paired_c.pyx).
#
# As in _core_c.pxd, a confusion matrix is a numpy array that the object owns and only
# ever changes in place (it is also the public ``confusion``), counted into through a raw pointer
# taken once in _zeros. The counters are ``public``, and ``confusion``, ``errors`` and ``hist``
# can be assigned: the Python twin's own methods (merge, from_bytes, and updates of inputs the
# kernels do not read) run on these objects and assign them, as on a twin.

from shadowgrpc.sketches._core_c cimport Histogram, LatencySketch
cimport cython

from shadowgrpc.sketches._paired_kernels cimport Counting, Kind, Values
from shadowgrpc._types cimport count_t


@cython.final
cdef class Pair:
    cdef Py_buffer bl, bs               # live's and shadow's buffer exports, held while the Pair lives
    cdef Values a, b                    # what they hold (kind K_NONE: not exported)

    cdef bint same(self, Kind k1, Kind k2) noexcept


cdef class Confusion:
    cdef count_t* conf                  # -> _confusion
    cdef count_t n
    cdef object _confusion              # int64 [n, n]: live x shadow
    cdef public count_t invalid

    cdef int _zeros(self, count_t n) except -1
    cdef int _count(self, Pair p, Counting what, double t, Py_ssize_t rows, Py_ssize_t shadow_rows, str unit) except -1


cdef class LabelAgreement(Confusion):
    pass


cdef class BinaryAgreement(Confusion):
    cdef readonly double threshold      # [live >= threshold, shadow >= threshold]


cdef class Staged:
    cdef bint _ready(self) noexcept     # __init__ was called
    cdef bint _add(self, const Values* a, const Values* b, Py_ssize_t n, double* scratch) noexcept nogil
    cdef bint _staged(self, Pair p, Py_ssize_t n) except -1


cdef class RegressionAgreement(Staged):
    cdef readonly double atol
    cdef readonly double rtol
    cdef public count_t count
    cdef public count_t within
    cdef public count_t invalid
    cdef LatencySketch _errors          # |live - shadow|


cdef class CosineStats(Staged):
    cdef public count_t count
    cdef public count_t invalid
    cdef public count_t sum_fixed       # sum of rint(cosine * 2**32)
    cdef public double min
    cdef Histogram _hist                # 200 bins over [-1, 1]
