# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Edit distance of two texts, compiled twin of shadowgrpc/sketches/_text_py.py (that module
states the rules): the same integer for the same arguments, the same TypeError otherwise.

Both texts are read into arrays of uint32 symbols (code points of a str, bytes of a bytes), the
common prefix and suffix are stripped, the shorter one is the pattern: its symbols get dense
indices through a small open-addressing table, and ``myers`` runs Myers' block-based bit-vector
algorithm on ceil(m / 64) words per column, without the GIL.
"""

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from shadowgrpc.sketches._text_py import MAX_UNITS  # noqa: F401

__all__ = ("MAX_UNITS", "levenshtein")

cdef uint32_t EMPTY = 0xFFFFFFFFu  # not a code point, not a byte


cdef inline Py_ssize_t slot(uint32_t x, Py_ssize_t mask) noexcept nogil:
    return <Py_ssize_t>((x * <uint32_t>2654435761u) >> 7) & mask


cdef Py_ssize_t myers(const uint32_t* a, Py_ssize_t m,  # IN: the pattern (m >= 1, m <= n)
                      const uint32_t* b, Py_ssize_t n,  # IN: the text
                      uint32_t* keys, uint32_t* index, Py_ssize_t cap,  # scratch: cap slots (cap >= 2m, a power of 2)
                      uint32_t* sym, uint64_t* vec,  # scratch: m symbols; 2 * words vectors
                      uint64_t** peq_out) noexcept nogil:
    """The distance, or -1 when memory ran out."""
    cdef Py_ssize_t words = (m + 63) // 64, i, j, w, h, K = 0, hmask = cap - 1
    cdef uint64_t* peq
    cdef uint64_t* pv = vec
    cdef uint64_t* mv = vec + words
    cdef const uint64_t* row
    cdef uint64_t eq, xv, xh, ph, mh, p, q, hb, last = (<uint64_t>1) << ((m - 1) % 64), top = (<uint64_t>1) << 63
    cdef int hin, hout
    cdef Py_ssize_t score = m
    for i in range(cap):
        keys[i] = EMPTY
    for i in range(m):
        h = slot(a[i], hmask)
        while keys[h] != EMPTY and keys[h] != a[i]:
            h = (h + 1) & hmask
        if keys[h] == EMPTY:
            keys[h] = a[i]
            index[h] = <uint32_t>K
            K += 1
        sym[i] = index[h]
    peq = <uint64_t*>malloc(<size_t>(K * words) * sizeof(uint64_t))
    if peq == NULL:
        return -1
    peq_out[0] = peq
    memset(peq, 0, <size_t>(K * words) * sizeof(uint64_t))
    for i in range(m):
        peq[sym[i] * words + i // 64] |= (<uint64_t>1) << (i % 64)
    for w in range(words):
        pv[w] = ~(<uint64_t>0)
        mv[w] = 0
    for j in range(n):
        h = slot(b[j], hmask)
        while keys[h] != EMPTY and keys[h] != b[j]:
            h = (h + 1) & hmask
        row = NULL if keys[h] == EMPTY else peq + index[h] * words
        hin = 1  # global distance: the top row's horizontal deltas are +1
        for w in range(words):
            eq = row[w] if row != NULL else 0
            p = pv[w]
            q = mv[w]
            xv = eq | q
            if hin < 0:
                eq |= 1
            xh = (((eq & p) + p) ^ p) | eq
            ph = q | ~(xh | p)
            mh = p & xh
            hb = last if w == words - 1 else top
            hout = 1 if ph & hb else (-1 if mh & hb else 0)
            ph <<= 1
            mh <<= 1
            if hin < 0:
                mh |= 1
            elif hin > 0:
                ph |= 1
            pv[w] = mh | ~(xv | ph)
            mv[w] = ph & xv
            hin = hout
        score += hin
    return score


cdef uint32_t* symbols(object s, Py_ssize_t* n) except? NULL:
    """``s`` (str or bytes) as a malloc'd uint32 array (at least one element) of ``n[0]`` symbols."""
    cdef Py_ssize_t k = 0, size = len(s)
    cdef uint32_t* out = <uint32_t*>malloc(<size_t>(size if size else 1) * sizeof(uint32_t))
    cdef Py_UCS4 ch
    cdef const unsigned char* p
    if out == NULL:
        raise MemoryError()
    if isinstance(s, str):
        for ch in <str>s:
            out[k] = <uint32_t>ch
            k += 1
    else:
        p = <const unsigned char*><bytes>s
        for k in range(size):
            out[k] = p[k]
        k = size
    n[0] = k
    return out


def levenshtein(a, b):
    """The Levenshtein distance of ``a`` and ``b`` (both str or both bytes)."""
    if type(a) is not type(b) or not isinstance(a, (str, bytes)):
        raise TypeError(f"levenshtein: two str or two bytes, got {type(a).__name__} and {type(b).__name__}")
    cdef Py_ssize_t m, n, start = 0, cap = 1, words, result
    cdef uint32_t* x = NULL
    cdef uint32_t* y = NULL
    cdef uint32_t* t
    cdef uint32_t* scratch = NULL
    cdef uint64_t* vec = NULL
    cdef uint64_t* peq = NULL
    try:
        x = symbols(a, &m)
        y = symbols(b, &n)
        with nogil:
            while start < m and start < n and x[start] == y[start]:
                start += 1
            while m > start and n > start and x[m - 1] == y[n - 1]:
                m -= 1
                n -= 1
        m -= start
        n -= start
        if m > n:
            x, y, m, n = y, x, n, m
        if m == 0:
            return n
        while cap < 2 * m:
            cap <<= 1
        words = (m + 63) // 64
        scratch = <uint32_t*>malloc(<size_t>(2 * cap + m) * sizeof(uint32_t))
        vec = <uint64_t*>malloc(<size_t>(2 * words) * sizeof(uint64_t))
        if scratch == NULL or vec == NULL:
            raise MemoryError()
        with nogil:
            result = myers(x + start, m, y + start, n, scratch, scratch + cap, cap, scratch + 2 * cap, vec, &peq)
        if result < 0:
            raise MemoryError()
        return result
    finally:
        free(x)
        free(y)
        free(scratch)
        free(vec)
        free(peq)
