"""Streaming sketches, pure-numpy reference, part 2: divergences between two histograms' counts
(the compiled twin computes the same values to the last bit; see ``divergences``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ._core_py import validate_edges

DEFAULT_EPS = 0.5  # additive smoothing, in counts: p_i = (c_i + eps) / (N + eps * B)


def divergences(p_counts: Any, q_counts: Any, eps: float = DEFAULT_EPS, edges: Any = None) -> dict[str, float]:
    """Divergences between two histograms' counts (1-D, all B columns incl. underflow/overflow).

    Both are smoothed: p_i = (c_i + eps) / (N + eps * B) (eps in counts, default 0.5; eps = 0
    gives raw frequencies and may yield inf). Then, natural log except JS:
    ``kl_pq`` = sum p ln(p/q); ``kl_qp`` = sum q ln(q/p); ``js`` = Jensen-Shannon divergence in
    bits (base 2, in [0, 1]) with m = (p+q)/2; ``psi`` = sum (p-q) ln(p/q); ``tv`` = sum |p-q| / 2;
    ``w1`` = sum_{k<B-1} |P_k - Q_k| * (x_{k+1} - x_k), P, Q the cumulative sums, x_k = k without
    ``edges``; with ``edges`` (len B-1) the underflow column sits at edges[0], bin i at its midpoint
    and overflow at edges[-1]. Terms with p_i = 0 (or q_i = 0) contribute 0 to sums of x ln(x/y);
    x ln(x/y) is computed as x * (ln x - ln y) (three logs per bin).
    Bins are summed left to right in this exact order in both twins.
    """
    p = np.ascontiguousarray(p_counts, dtype=np.float64).reshape(-1)
    q = np.ascontiguousarray(q_counts, dtype=np.float64).reshape(-1)
    if p.size != q.size or p.size == 0:
        raise ValueError(f"histograms must have the same non-zero number of bins, got {p.size} and {q.size}")
    pos = positions(p.size, edges)
    return divergences_ref(p.tolist(), q.tolist(), float(eps), pos.tolist())


def positions(nb: int, edges: Any) -> npt.NDArray[np.float64]:
    if edges is None:
        return np.arange(nb, dtype=np.float64)
    e = validate_edges(edges)
    if e.size != nb - 1:
        raise ValueError(f"edges must have {nb - 1} values for {nb} columns, got {e.size}")
    return np.concatenate(([e[0]], (e[:-1] + e[1:]) * 0.5, [e[-1]]))


def divergences_ref(p: list[float], q: list[float], eps: float, pos: list[float]) -> dict[str, float]:
    if eps < 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    b = len(p)
    np_ = 0.0
    nq = 0.0
    for i in range(b):
        np_ += p[i]
        nq += q[i]
    dp = 1.0 / (np_ + eps * b) if np_ + eps * b > 0 else 0.0
    dq = 1.0 / (nq + eps * b) if nq + eps * b > 0 else 0.0
    kl_pq = kl_qp = js = psi = tv = w1 = 0.0
    cp = cq = 0.0
    inf = math.inf
    for i in range(b):
        pi = (p[i] + eps) * dp
        qi = (q[i] + eps) * dq
        mi = 0.5 * (pi + qi)
        lp = math.log(pi) if pi > 0.0 else 0.0
        lq = math.log(qi) if qi > 0.0 else 0.0
        lm = math.log(mi) if mi > 0.0 else 0.0
        if pi > 0.0:
            kl_pq += pi * (lp - lq) if qi > 0.0 else inf
            js += pi * (lp - lm)
        if qi > 0.0:
            kl_qp += qi * (lq - lp) if pi > 0.0 else inf
            js += qi * (lq - lm)
        if pi > 0.0 and qi > 0.0:
            psi += (pi - qi) * (lp - lq)
        elif pi != qi:
            psi = inf
        tv += abs(pi - qi)
        cp += pi
        cq += qi
        if i + 1 < b:
            w1 += abs(cp - cq) * (pos[i + 1] - pos[i])
    return {"kl_pq": kl_pq, "kl_qp": kl_qp, "js": js * 0.5 / math.log(2.0), "psi": psi, "tv": 0.5 * tv, "w1": w1}
