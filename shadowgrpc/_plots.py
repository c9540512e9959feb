"""The HTML report's plots (report_html.py), drawn with matplotlib and returned as ``data:`` URIs of
SVG images, so the page needs nothing from the network when it is viewed.

matplotlib's object API only (``matplotlib.figure.Figure``, never pyplot): no GUI backend, no
global figure registry. Text is drawn as paths (no fonts needed by the viewer) and the SVG ids are
salted with a fixed string and undated, so the same state renders the same bytes. No string from
the state is ever drawn into a plot (a model name could hold mathtext's ``$``): plots say "live"
and "shadow", and the page around them names the route, target and output.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from .sketches import LAT_BOUNDS

LIVE, SHADOW = "#4c72b0", "#dd8452"
MAX_PANELS = 4  # per-class distribution panels; wider classifiers get one panel of all classes
_RC = {
    "svg.fonttype": "path",
    "svg.hashsalt": "shadowgrpc",
    "font.size": 8.0,
    "axes.titlesize": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}


def _uri(fig: Figure) -> str:
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "shadowgrpc"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float, panels: int = 1) -> tuple[Figure, list]:
    """Fixed margins (in inches, whatever the size): a tight bounding box would draw it all twice."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), dpi=96)
        axes = fig.subplots(1, panels, squeeze=False)[0]
    fig.subplots_adjust(left=0.62 / width, right=1 - 0.12 / width, bottom=0.5 / height, top=1 - 0.3 / height, wspace=0.28)
    for ax in axes:  # rc_context applies at creation: restate what matters for drawing later
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=7)
    return fig, list(axes)


def _fractions(counts: np.ndarray) -> np.ndarray:
    """Each row of counts as fractions of its own total (under/overflow included); 0 rows stay 0."""
    c = np.asarray(counts, dtype=np.float64)
    tot = c.sum(axis=-1, keepdims=True)
    return np.divide(c, tot, out=np.zeros_like(c), where=tot > 0)


def _x_scale(ax, edges: np.ndarray) -> None:
    """Linear for evenly spaced edges; log for a positive geometric grid; symlog around zero."""
    d = np.diff(edges)
    if np.allclose(d, d[0], rtol=1e-6, atol=0.0):
        return
    if edges[0] > 0:
        ax.set_xscale("log")
        return
    nz = np.abs(edges[edges != 0])
    ax.set_xscale("symlog", linthresh=float(nz.min()) if nz.size else 1.0)


def distributions(edges: Sequence[float], live: np.ndarray, shadow: np.ndarray) -> str | None:
    """Live and shadow output distributions overlaid on their shared drift-histogram edges.

    ``live``/``shadow``: ``Histogram.counts`` (classes x [underflow, bins..., overflow]). One panel
    per class (column) up to MAX_PANELS, else one panel of all classes summed. Each side is shown
    as the fraction of its own values per bin (sides with different counts compare), trimmed to
    the bins that hold any value; values outside the edges are given in each panel's corner.
    None when neither side holds a value."""
    e = np.asarray(edges, dtype=np.float64)
    lc, sc = np.atleast_2d(np.asarray(live)), np.atleast_2d(np.asarray(shadow))
    if lc.sum() + sc.sum() == 0:
        return None
    titles = [f"class {k}" for k in range(lc.shape[0])] if lc.shape[0] > 1 else ["all values"]
    if lc.shape[0] > MAX_PANELS:
        lc, sc, titles = lc.sum(axis=0, keepdims=True), sc.sum(axis=0, keepdims=True), [f"all {lc.shape[0]} classes"]
    lf, sf = _fractions(lc), _fractions(sc)
    inner = (lc[:, 1:-1] + sc[:, 1:-1]).sum(axis=0)
    used = np.flatnonzero(inner)
    lo, hi = (int(used[0]), int(used[-1]) + 1) if used.size else (0, len(e) - 1)
    fig, axes = _figure(min(3.8 * len(titles), 12.0), 2.8, len(titles))
    for k, (ax, title) in enumerate(zip(axes, titles)):
        ax.stairs(lf[k, 1 + lo : 1 + hi], e[lo : hi + 1], fill=True, color=LIVE, alpha=0.35, label="live")
        ax.stairs(lf[k, 1 + lo : 1 + hi], e[lo : hi + 1], color=LIVE, linewidth=1.0)
        ax.stairs(sf[k, 1 + lo : 1 + hi], e[lo : hi + 1], color=SHADOW, linewidth=1.6, label="shadow")
        _x_scale(ax, e[lo : hi + 1])
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        outside = [f"{where} edges: live {lf[k, c]:.1%}, shadow {sf[k, c]:.1%}" for where, c in (("below", 0), ("above", -1)) if lf[k, c] or sf[k, c]]
        if outside:
            ax.text(0.99, 0.98, "\n".join(outside), transform=ax.transAxes, ha="right", va="top", fontsize=6)
        if not used.size:
            ax.text(0.5, 0.5, "every value outside the edges", transform=ax.transAxes, ha="center", fontsize=7)
    axes[0].set_ylabel("fraction of values")
    axes[0].legend(loc="best", fontsize=7)
    return _uri(fig)


def latency_cdf(live_counts: np.ndarray | None, shadow_counts: np.ndarray | None) -> str | None:
    """Empirical CDFs of live and shadow call latency from LatencySketch bucket counts (bucket i
    holds [LAT_BOUNDS[i], LAT_BOUNDS[i+1]) s: the CDF reaches its count at the bucket's upper
    edge), log x in ms, with the median and p99 levels dotted. None when both are empty."""
    sides = [(n, np.asarray(c, dtype=np.float64), col) for n, c, col in (("live", live_counts, LIVE), ("shadow", shadow_counts, SHADOW))
             if c is not None and np.sum(c) > 0]  # fmt: skip
    if not sides:
        return None
    nz = np.flatnonzero(sum(c for _, c, _ in sides))
    lo, hi = int(nz[0]), int(nz[-1])
    x = LAT_BOUNDS[lo : hi + 2] * 1e3
    fig, (ax,) = _figure(5.6, 3.2)
    for name, c, col in sides:
        cdf = np.cumsum(c) / c.sum()
        ax.plot(x, np.concatenate([[0.0], cdf[lo : hi + 1]]), drawstyle="steps-post", color=col, linewidth=1.6, label=name)
    for q in (0.5, 0.99):
        ax.axhline(q, color="#888888", linewidth=0.6, linestyle=":")
        ax.text(x[0], q, f" p{q * 100:g}", fontsize=6, va="bottom", color="#666666")
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.xaxis.set_major_formatter(plain)  # 0.1, 1, 10 rather than 10^-1; minor labels only inside one decade
    ax.xaxis.set_minor_formatter(plain if x[-1] < 10 * x[0] else NullFormatter())
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("latency (ms), log scale")
    ax.set_ylabel("fraction of calls at or below")
    ax.legend(loc="lower right", fontsize=7)
    return _uri(fig)


def calibration(live: Sequence[tuple[float, int, float]], shadow: Sequence[tuple[float, int, float]]) -> str | None:
    """Reliability diagram: per confidence bin with rows, (mean top-1 confidence, rows, accuracy)
    of live and shadow against the diagonal (perfect calibration); marker area ~ rows."""
    if not any(r for _, r, _ in (*live, *shadow)):
        return None
    fig, (ax,) = _figure(4.2, 3.4)
    ax.plot([0, 1], [0, 1], color="#999999", linewidth=0.8, linestyle="--", label="calibrated")
    peak = max(r for _, r, _ in (*live, *shadow))
    for name, bins, col, m in (("live", live, LIVE, "o"), ("shadow", shadow, SHADOW, "s")):
        pts = [(c, a, r) for c, r, a in bins if r]
        if not pts:
            continue
        c, a, r = (np.array(v, dtype=np.float64) for v in zip(*pts))
        ax.plot(c, a, color=col, linewidth=1.2, label=name)
        ax.scatter(c, a, s=12 + 60 * r / peak, color=col, marker=m, zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean top-1 confidence")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=7)
    return _uri(fig)
