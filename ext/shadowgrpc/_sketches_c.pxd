# Accumulators of the compiled sketches twin (implemented in _sketches_c.pyx).

from shadowgrpc._types cimport col_t, count_t


cdef class Histogram:
    cdef readonly object _edges_arr     # float64 [ne]
    cdef object _counts_arr             # int64 [nc, ne + 1]
    cdef object _nan_arr                # int64 [nc]
    cdef object _ext_arr                # float64 [ne + 2]: -inf, edges..., NaN
    cdef object _ext32_arr              # float32 [ne + 2]: ext rounded up to float32
    cdef double[::1] ext
    cdef float[::1] ext32
    cdef bint f32                       # the all-float32 path for contiguous float32 values
    cdef count_t[:, ::1] cnt
    cdef count_t[::1] nanc
    cdef col_t ne
    cdef col_t nc
    cdef bint uniform
    cdef double lo
    cdef double scale

    cdef int _update_buffer(self, object values) except -1


cdef class LatencySketch:
    cdef object _counts_arr             # int64 [LAT_NBUCKETS]
    cdef object _bounds_arr             # float64 [LAT_NBUCKETS + 1]
    cdef count_t[::1] cnt
    cdef double[::1] bounds
    cdef col_t nb
    cdef readonly count_t count
    cdef readonly count_t clamped_low
    cdef readonly count_t clamped_high
    cdef readonly count_t nan
    cdef readonly double max
    cdef readonly count_t sum_ns

    cdef void _record(self, const double* v, Py_ssize_t n, Py_ssize_t stride) noexcept nogil
