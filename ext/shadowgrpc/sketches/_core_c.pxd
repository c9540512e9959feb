# Accumulators of the compiled sketches twin, part 1 (implemented in _core_c.pyx; cimported
# by _paired_c).
#
# The state lives in numpy arrays that the object owns and only ever changes in place; the kernels
# reach it through raw pointers taken once in __init__ (a typed memoryview attribute is a
# 208-byte slice struct: four of them spread one histogram over 15 cache lines). The fields an
# update reads come first (the HistTable), so they share the object's first two cache lines.

cimport cython

from shadowgrpc.sketches._kernels cimport HistTable
from shadowgrpc._types cimport col_t, count_t


cdef class Histogram:
    cdef HistTable t
    cdef col_t nc
    cdef readonly object _edges_arr     # float64 [ne]
    cdef object _counts_arr             # int64 [nc, ne + 1]
    cdef object _nan_arr                # int64 [nc]
    cdef object _ext_arr                # float64 [ne + 2]: -inf, edges..., NaN
    cdef object _ext32_arr              # float32 [ne + 2]: ext rounded up to float32

    # final: called directly (not through the vtable), so the C compiler can inline them
    @cython.final
    cdef int _update(self, object values) except -1
    @cython.final
    cdef int _update_buffer(self, object values) except -1
    @cython.final
    cdef int _count(self, const char* base, bint dbl, Py_ssize_t rows, Py_ssize_t k,
                    Py_ssize_t rs, Py_ssize_t cs) except -1


cdef class LatencySketch:
    cdef count_t* cnt                   # -> _counts_arr
    cdef const double* bounds           # -> _bounds_arr
    cdef col_t nb
    cdef readonly count_t count
    cdef readonly count_t clamped_low
    cdef readonly count_t clamped_high
    cdef readonly count_t nan
    cdef readonly double max
    cdef readonly count_t sum_ns
    cdef object _counts_arr             # int64 [LAT_NBUCKETS]
    cdef object _bounds_arr             # float64 [LAT_NBUCKETS + 1]

    cdef void _record(self, const double* v, Py_ssize_t n, Py_ssize_t stride) noexcept nogil
