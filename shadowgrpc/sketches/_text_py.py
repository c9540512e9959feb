"""Edit distance of two texts, pure-Python reference (the test oracle and the source of types).

``ext/shadowgrpc/sketches/_text_c.pyx`` is the compiled twin; both return the same integer for
the same arguments (``tests/unit/test_text_compare.py`` checks them against each other and against
the textbook dynamic programme, with hypothesis).

``levenshtein(a, b)``: the Levenshtein distance (insertions, deletions, substitutions, each 1) of
two ``str`` (over Unicode code points) or two ``bytes`` (over bytes). Exact, unbounded: the caller
caps what it passes (shadowgrpc.text compares at most ``MAX_UNITS`` units of each side). Both
twins strip the common prefix and suffix, then run Myers' bit-vector algorithm (Myers 1999, "A
fast bit-vector algorithm for approximate string matching based on dynamic programming", the
block-based version of its section 4, with the global-distance boundary: the top row's horizontal
deltas are +1): here on one Python integer as wide as the shorter text, in the compiled twin on
64-bit words, O(m * n / 64) either way.
"""

from __future__ import annotations

MAX_UNITS = 4096  # code points (or bytes) of each side that shadowgrpc.text compares


def levenshtein(a: str | bytes, b: str | bytes) -> int:
    """The Levenshtein distance of ``a`` and ``b`` (both str or both bytes)."""
    if type(a) is not type(b) or not isinstance(a, (str, bytes)):
        raise TypeError(f"levenshtein: two str or two bytes, got {type(a).__name__} and {type(b).__name__}")
    m, n = len(a), len(b)
    start = 0
    while start < m and start < n and a[start] == b[start]:
        start += 1
    while m > start and n > start and a[m - 1] == b[n - 1]:
        m -= 1
        n -= 1
    a, b = a[start:m], b[start:n]
    if len(a) > len(b):
        a, b = b, a
    m = len(a)
    if m == 0:
        return len(b)
    peq: dict = {}
    bit = 1
    for c in a:
        peq[c] = peq.get(c, 0) | bit
        bit <<= 1
    mask = (1 << m) - 1
    high = 1 << (m - 1)
    pv, mv, score = mask, 0, m
    get = peq.get
    for c in b:
        eq = get(c, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & mask  # the top row's horizontal delta is +1
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score
