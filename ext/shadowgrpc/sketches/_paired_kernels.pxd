# nogil kernels of the compiled paired statistics (_paired_c.pyx), as inline functions:
# the rules of shadowgrpc/sketches/_paired_py.py, operation for operation (see that .pyx's doc).
#
# Values are read with memcpy from ``const char*`` (``ld``): a decoded output is a view at any
# offset of a response, often not aligned for its type. A kernel's trailing ``tag`` argument (0 of
# the element type) only picks its specialisation; ``count_confusion``, ``diffs_of`` and
# ``cosines_of`` take live's and shadow's ``Values`` (both of one kind) and call the
# specialisation for that kind.

from libc.math cimport fabs, isfinite, llrint, signbit, sqrt
from libc.string cimport memcpy
from cython cimport floating

from shadowgrpc.sketches._kernels cimport HistTable, upper
from shadowgrpc._types cimport count_t


cdef extern from *:
    """
    #include <fenv.h>
    /* The floating-point flags that numpy reports after a ufunc (unless np.errstate ignores them):
       a result that overflowed or underflowed. Reading *barrier first (as numpy's
       npy_get_floatstatus_barrier does) keeps the computation of what was stored there before
       the test. */
    static void sg_fp_clear(void) { feclearexcept(FE_OVERFLOW | FE_UNDERFLOW); }
    static int sg_fp_raised(const void *barrier) {
        volatile char c = *(const volatile char *)barrier;
        (void)c;
        return fetestexcept(FE_OVERFLOW | FE_UNDERFLOW) != 0;
    }
    """
    void fp_clear "sg_fp_clear" () noexcept nogil
    bint fp_raised "sg_fp_raised" (const void* barrier) noexcept nogil


ctypedef fused label_t:
    int
    long long

cdef enum:
    NPY_BLOCK = 8192    # numpy's buffer size: reductions and buffered einsums add in blocks of it


cdef enum Kind:
    K_NONE = 0          # no buffer, or one the kernels do not read
    K_F32
    K_F64
    K_I32
    K_I64


cdef struct Values:     # a C-contiguous buffer of live or shadow values
    const char* data
    Py_ssize_t n        # values
    Py_ssize_t last     # length of the last axis (1 for a scalar)
    int ndim
    bint aligned        # data is aligned for its type
    Kind kind


cdef inline double ld(const char* p, Py_ssize_t i, floating tag) noexcept nogil:
    """Value i of the floats at p, wherever p is aligned."""
    cdef floating v
    memcpy(&v, p + i * <Py_ssize_t>sizeof(floating), sizeof(floating))
    return v


cdef inline count_t ldi(const char* p, Py_ssize_t i, label_t tag) noexcept nogil:
    cdef label_t v
    memcpy(&v, p + i * <Py_ssize_t>sizeof(label_t), sizeof(label_t))
    return v


# --- labels ----------------------------------------------------------------------------------------

cdef inline void count_labels(const char* a, const char* b, Py_ssize_t n, count_t k, label_t tag,  # IN
                              count_t* confusion, count_t* invalid) noexcept nogil:                # OUT
    cdef Py_ssize_t i
    cdef count_t x, y, bad = 0
    for i in range(n):
        x = ldi(a, i, tag)
        y = ldi(b, i, tag)
        if 0 <= x < k and 0 <= y < k:
            confusion[x * k + y] += 1
        else:
            bad += 1
    invalid[0] += bad


cdef inline count_t first_max(const char* x, Py_ssize_t m, floating tag) noexcept nogil:
    """numpy.argmax of one row (m >= 1): its first NaN, else its first maximum."""
    cdef floating v, best
    cdef Py_ssize_t i, at = 0
    memcpy(&best, x, sizeof(floating))
    if best != best:
        return 0
    for i in range(1, m):
        memcpy(&v, x + i * <Py_ssize_t>sizeof(floating), sizeof(floating))
        if v > best:
            best = v
            at = i
        elif v != v:
            return i
    return at


cdef inline void count_argmax(const char* a, Py_ssize_t ma, const char* b, Py_ssize_t mb,  # IN
                              Py_ssize_t rows, count_t k, floating tag,                    # IN
                              count_t* confusion, count_t* invalid) noexcept nogil:        # OUT
    cdef Py_ssize_t r
    cdef count_t x, y, bad = 0
    for r in range(rows):
        x = first_max(a + r * ma * <Py_ssize_t>sizeof(floating), ma, tag)
        y = first_max(b + r * mb * <Py_ssize_t>sizeof(floating), mb, tag)
        if x < k and y < k:
            confusion[x * k + y] += 1
        else:
            bad += 1
    invalid[0] += bad


# --- binary scores, regression ---------------------------------------------------------------------

cdef inline void count_binary(const char* a, const char* b, Py_ssize_t n, double t, floating tag,  # IN
                              count_t* confusion, count_t* invalid) noexcept nogil:                # OUT
    cdef Py_ssize_t i
    cdef double x, y
    cdef count_t bad = 0
    for i in range(n):
        x = ld(a, i, tag)
        y = ld(b, i, tag)
        if x != x or y != y:
            bad += 1
        else:
            confusion[2 * (x >= t) + (y >= t)] += 1
    invalid[0] += bad


cdef enum Counting:     # what a confusion matrix counts
    C_LABELS            # label pairs (int32 or int64)
    C_ARGMAX            # the argmax of each row of probabilities (rows: a.n // a.last)
    C_BINARY            # pairs of scores >= t


cdef inline void count_confusion(Counting what, const Values* a, const Values* b, count_t k, double t,  # IN
                                 count_t* confusion, count_t* invalid) noexcept nogil:                 # OUT
    """The kernel of ``what`` for a's kind (k classes; t the threshold of C_BINARY)."""
    if what == C_LABELS and a.kind == K_I32:
        count_labels(a.data, b.data, a.n, k, <int>0, confusion, invalid)
    elif what == C_LABELS:
        count_labels(a.data, b.data, a.n, k, <long long>0, confusion, invalid)
    elif what == C_ARGMAX and a.kind == K_F32:
        count_argmax(a.data, a.last, b.data, b.last, a.n // a.last, k, <float>0, confusion, invalid)
    elif what == C_ARGMAX:
        count_argmax(a.data, a.last, b.data, b.last, a.n // a.last, k, <double>0, confusion, invalid)
    elif a.kind == K_F32:
        count_binary(a.data, b.data, a.n, t, <float>0, confusion, invalid)
    else:
        count_binary(a.data, b.data, a.n, t, <double>0, confusion, invalid)


cdef inline Py_ssize_t diffs(const char* a, const char* b, Py_ssize_t n, double atol, double rtol,  # IN
                             floating tag,                                                         # IN
                             double* err, count_t* within, count_t* invalid) noexcept nogil:       # OUT
    """|a - b| of the rows without NaN into ``err``; returns how many."""
    cdef Py_ssize_t i, m = 0
    cdef double x, y, e
    for i in range(n):
        x = ld(a, i, tag)
        y = ld(b, i, tag)
        if x != x or y != y:
            invalid[0] += 1
            continue
        e = fabs(x - y)
        within[0] += e <= atol + rtol * fabs(y)
        err[m] = e
        m += 1
    return m


cdef inline Py_ssize_t diffs_of(const Values* a, const Values* b, double atol, double rtol,      # IN
                                double* err, count_t* within, count_t* invalid) noexcept nogil:  # OUT
    if a.kind == K_F32:
        return diffs(a.data, b.data, a.n, atol, rtol, <float>0, err, within, invalid)
    return diffs(a.data, b.data, a.n, atol, rtol, <double>0, err, within, invalid)


# --- cosines ---------------------------------------------------------------------------------------

cdef inline double lanes_dot(const char* a, const char* b, Py_ssize_t n, floating tag) noexcept nogil:
    # numpy's double_sum_of_products_contig_contig_outstride0_two at its baseline (SSE2: two
    # float64 lanes, multiply then add): lane 0 sums the even values, lane 1 the odd ones, each
    # step of 8 from its last pair to its first; the tail pairwise, zero-filled; then lane 0 + lane 1.
    cdef double l0 = 0.0, l1 = 0.0
    cdef Py_ssize_t i = 0, k
    while n - i >= 8:
        for k in range(6, -2, -2):
            l0 = ld(a, i + k, tag) * ld(b, i + k, tag) + l0
            l1 = ld(a, i + k + 1, tag) * ld(b, i + k + 1, tag) + l1
        i += 8
    while i < n:
        l0 = ld(a, i, tag) * ld(b, i, tag) + l0
        l1 = (ld(a, i + 1, tag) * ld(b, i + 1, tag) if i + 1 < n else 0.0) + l1
        i += 2
    return l0 + l1


cdef inline double pairwise_sq(const char* x, Py_ssize_t n, floating tag) noexcept nogil:
    # numpy's DOUBLE_pairwise_sum (loops_utils.h) of x * x.
    cdef double r[8]
    cdef double res, v
    cdef Py_ssize_t i, k, n2
    if n < 8:
        res = 0.0
        for i in range(n):
            v = ld(x, i, tag)
            res += v * v
        return res
    if n <= 128:
        for k in range(8):
            v = ld(x, k, tag)
            r[k] = v * v
        i = 8
        while i < n - n % 8:
            for k in range(8):
                v = ld(x, i + k, tag)
                r[k] += v * v
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            v = ld(x, i, tag)
            res += v * v
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sq(x, n2, tag) + pairwise_sq(x + n2 * <Py_ssize_t>sizeof(floating), n - n2, tag)


cdef inline void lanes_dot4(const char* a, const char* b, Py_ssize_t row, Py_ssize_t n, floating tag,  # IN
                            double* dots) noexcept nogil:                                          # OUT [4]
    """lanes_dot of four rows (``row`` bytes apart) at once: the same operations in the same order
    for each, in four independent chains that overlap (one row's chain is 4 * n/2 cycles long)."""
    cdef double l0[4]
    cdef double l1[4]
    cdef Py_ssize_t i = 0, k, r
    for r in range(4):
        l0[r] = l1[r] = 0.0
    while n - i >= 8:
        for k in range(6, -2, -2):
            for r in range(4):
                l0[r] = ld(a + r * row, i + k, tag) * ld(b + r * row, i + k, tag) + l0[r]
                l1[r] = ld(a + r * row, i + k + 1, tag) * ld(b + r * row, i + k + 1, tag) + l1[r]
        i += 8
    while i < n:
        for r in range(4):
            l0[r] = ld(a + r * row, i, tag) * ld(b + r * row, i, tag) + l0[r]
            l1[r] = (ld(a + r * row, i + 1, tag) * ld(b + r * row, i + 1, tag) if i + 1 < n else 0.0) + l1[r]
        i += 2
    for r in range(4):
        dots[r] = l0[r] + l1[r]


cdef inline double row_dot(const char* a, const char* b, Py_ssize_t d, Py_ssize_t chunk, floating tag) noexcept nogil:
    """np.einsum("ij,ij->i", a, b) of one row, in blocks of ``chunk`` >= 1 (einsum zero-fills its
    output and adds each block's sum to it: that also turns -0.0 into 0.0)."""
    cdef double dot = 0.0
    cdef Py_ssize_t i = 0, m
    while i < d:
        m = d - i if d - i < chunk else chunk
        dot = lanes_dot(a + i * <Py_ssize_t>sizeof(floating), b + i * <Py_ssize_t>sizeof(floating), m, tag) + dot
        i += m
    return dot


cdef inline double row_norms(const char* a, const char* b, Py_ssize_t d, floating tag) noexcept nogil:
    """norm(a) * norm(b) of one row (np.linalg.norm: sqrt(add.reduce(x * x)), in numpy's blocks)."""
    cdef double na = 0.0, nb = 0.0
    cdef Py_ssize_t i = 0, m
    while i < d:
        m = d - i if d - i < NPY_BLOCK else NPY_BLOCK
        na += pairwise_sq(a + i * <Py_ssize_t>sizeof(floating), m, tag)
        nb += pairwise_sq(b + i * <Py_ssize_t>sizeof(floating), m, tag)
        i += m
    return sqrt(na) * sqrt(nb)


cdef inline Py_ssize_t dot_chunk(const Values* a, const Values* b, Py_ssize_t rows) noexcept nogil:
    """einsum's block: a whole row when it runs unbuffered (several rows, float64 aligned, or
    float32, which the twin widens to a new float64 array); else numpy's buffer."""
    cdef Py_ssize_t d = a.n // rows if rows else 0
    if rows <= 1 or (a.kind == K_F64 and not (a.aligned and b.aligned)):
        return NPY_BLOCK
    return d if d > 0 else 1


cdef inline void row_cosines(const char* a, const char* b, Py_ssize_t rows, Py_ssize_t d, Py_ssize_t chunk,  # IN
                             floating tag, double* cos) noexcept nogil:                                     # OUT [rows]
    """np.einsum("ij,ij->i", a, b) / (norm(a, axis=1) * norm(b, axis=1)); whole-row dot products
    four rows at a time."""
    cdef Py_ssize_t r = 0, k, row = d * <Py_ssize_t>sizeof(floating)
    cdef double dots[4]
    if chunk >= d:
        while r + 4 <= rows:
            lanes_dot4(a + r * row, b + r * row, row, d, tag, dots)
            for k in range(4):
                cos[r + k] = (dots[k] + 0.0) / row_norms(a + (r + k) * row, b + (r + k) * row, d, tag)
            r += 4
    while r < rows:
        cos[r] = row_dot(a + r * row, b + r * row, d, chunk, tag) / row_norms(a + r * row, b + r * row, d, tag)
        r += 1


cdef inline void cosines_of(const Values* a, const Values* b, Py_ssize_t rows,  # IN (a.n // rows values a row)
                            double* cos) noexcept nogil:                       # OUT [rows]
    cdef Py_ssize_t d = a.n // rows if rows else 0, chunk = dot_chunk(a, b, rows)
    if a.kind == K_F32:
        row_cosines(a.data, b.data, rows, d, chunk, <float>0, cos)
    else:
        row_cosines(a.data, b.data, rows, d, chunk, <double>0, cos)


cdef struct CosAcc:     # one update's cosines
    count_t count
    count_t invalid
    count_t sum_fixed   # sum of llrint(cos * scale)
    double scale        # 2**32
    double min
    bint pos_zero       # a cosine of +0.0 was counted
    bint neg_zero       # and one of -0.0 too: which zero numpy.min returns is numpy's to choose


cdef inline double clip(double c) noexcept nogil:
    return -1.0 if c < -1.0 else (1.0 if c > 1.0 else c)


cdef inline void scan_cosines(const double* cos, Py_ssize_t n, CosAcc* acc) noexcept nogil:
    """The minimum of the finite cosines (clipped to [-1, 1]) and the signs of their zeros."""
    cdef Py_ssize_t i
    cdef double c
    for i in range(n):
        c = cos[i]
        if isfinite(c):
            c = clip(c)
            acc.min = c if c < acc.min else acc.min
            if c == 0.0:
                if signbit(c):
                    acc.neg_zero = True
                else:
                    acc.pos_zero = True


cdef inline void add_cosines(const double* cos, Py_ssize_t n, const HistTable* h, CosAcc* acc) noexcept nogil:
    """Each cosine: not finite -> invalid; else clipped to [-1, 1], counted, summed in fixed point
    and counted into h's class 0 (searchsorted(edges, c, side="right"))."""
    cdef Py_ssize_t i
    cdef double c
    for i in range(n):
        c = cos[i]
        if not isfinite(c):
            acc.invalid += 1
            continue
        c = clip(c)
        acc.count += 1
        acc.sum_fixed += llrint(c * acc.scale)
        h.counts[upper(h.ext + 1, h.ne, c)] += 1
