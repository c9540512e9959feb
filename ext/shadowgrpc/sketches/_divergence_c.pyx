# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Streaming sketches, compiled twin part 2: ``divergences``, the twin of
shadowgrpc/sketches/_divergence_py.py (same operations in the same order: the same values to the
last bit). shadowgrpc.sketches._c re-exports it."""

from libc.math cimport INFINITY, fabs, log

import numpy as np

from shadowgrpc.sketches._divergence_py import DEFAULT_EPS, positions

__all__ = ("DEFAULT_EPS", "divergences")


cdef void diverge(const double* p, const double* q, Py_ssize_t b, double eps,  # IN
                  const double* pos,                                           # IN (NULL: index)
                  double* out) noexcept nogil:                                 # OUT [6]
    # Same operations in the same order as _divergence_py.divergences_ref.
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
    """See shadowgrpc.sketches._py.divergences (same definitions, same bits)."""
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
