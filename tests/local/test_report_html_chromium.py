"""The HTML report as a browser shows it: Debian's headless Chromium renders a FAIL and a PASS page
(built the way the front builds its state) to a DOM dump and a screenshot, and the test reads both:
the verdict, gates and route in the rendered DOM, every embedded plot decoded by the browser
(naturalWidth > 0, found by a small script appended to a copy of the page), and in the pixels
the banner's colour at the top (red for FAIL, green for PASS) and the plots' live/shadow colours.

Skipped only where Chromium is missing outside CI (``make browser`` installs it; ``make test``
does first); with ``CI`` set a missing Chromium fails instead, so CI never counts a skip as a pass.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as kserve

from shadowgrpc.codec import decode_request
from shadowgrpc.compare import compare_responses
from shadowgrpc.config import Settings
from shadowgrpc.outcomes import score
from shadowgrpc.report import build_report
from shadowgrpc.report_html import write_html
from shadowgrpc.slices import assign
from shadowgrpc.state import FrontState

pytestmark = pytest.mark.once  # once: the HTML page in Chromium; no twin-dependent result (make test's pure-Python pass skips it)

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_S = 60
SIZE = (1280, 2000)
RED, GREEN = (207, 34, 46), (26, 127, 55)  # .FAIL and .PASS in report_html.CSS
LIVE, SHADOW = (76, 114, 176), (221, 132, 82)  # _plots.LIVE, _plots.SHADOW
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images], v = document.getElementById("verdict");
  const p = document.createElement("p");
  p.id = "render-check";
  p.dataset.images = imgs.length;
  p.dataset.loaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  p.dataset.bg = getComputedStyle(v).backgroundColor;
  p.dataset.top = Math.round(v.getBoundingClientRect().top);
  document.body.appendChild(p);
});
</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: `make browser` (a dependency of `make test`) installs it")
        pytest.skip(f"{CHROMIUM} is not installed: `make browser` installs it")
    return path


def _state(better: bool, n: int = 150) -> FrontState:
    """Two-class classifier, live 75% right; the shadow 90% right (PASS) or worse above x = 0.5
    (its slice gate FAILs)."""
    cfg = {"routes": [{"model": "fraud <&>", "shadows": [{"name": "v2", "version": "2"}],
                       "slices": [{"name": "band", "input": "x", "edges": [0.5], "labels": ["low", "high"]}],
                       "gates": {"min_pairs": 50, "min_outcomes": 100, "slice_min_outcomes": 100}}]}  # fmt: skip
    route = Settings.from_dict(cfg).routes[0]
    state = FrontState.for_routes((route,), 1000, 60.0, 1 << 20)
    rs = state.routes[route.model]
    ts = rs.shadows[0]
    rng = np.random.default_rng(3)

    def raw(msg, name: str, a: np.ndarray) -> bytes:
        req = isinstance(msg, kserve.ModelInferRequest)
        (msg.inputs if req else msg.outputs).add(name=name, datatype="FP32", shape=list(a.shape))
        (msg.raw_input_contents if req else msg.raw_output_contents).append(a.astype(np.float32).tobytes())
        return msg.SerializeToString()

    def probs(labels: np.ndarray, p_right: np.ndarray) -> np.ndarray:
        pred = np.where(rng.random(len(labels)) < p_right, labels, 1 - labels)
        return np.where(np.arange(2) == pred[:, None], p_right[:, None], 1 - p_right[:, None])

    for _ in range(n):
        x, labels = rng.random((4, 1)), rng.integers(0, 2, 4)
        p = np.full(4, 0.9) if better else np.where(x[:, 0] >= 0.5, 0.5, 0.97)
        for sk in (rs.stats.live_latency, ts.stats.latency):
            sk.record(1e-3 * (1 + 0.5 * rng.random()))
        rs.stats.requests += 1
        rs.stats.live_ok += 1
        ts.stats.sampled += 1
        ts.stats.sent += 1
        ts.stats.ok += 1
        buckets = assign(route.slices, decode_request(raw(kserve.ModelInferRequest(), "x", x)))
        live, shadow = (raw(kserve.ModelInferResponse(), "probability", probs(labels, q)) for q in (np.full(4, 0.75), p))
        primary = compare_responses(live, shadow, ts.stats, route, buckets)
        score(ts.outcomes, primary[0], primary[1], labels, None, route.slices, buckets, primary[2])
    return state


def _render(chromium: str, tmp: Path, state: FrontState) -> tuple[str, np.ndarray, int]:
    """(DOM after load, screenshot RGB 0..255, <img> count in the page) of the page of ``state``."""
    page = tmp / "report.html"
    write_html(state, build_report(state), str(page), title="shadowgrpc report")
    html = page.read_text(encoding="utf-8")
    probe = tmp / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    shot = tmp / "shot.png"
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp / 'profile'}", "--hide-scrollbars",
            f"--window-size={SIZE[0]},{SIZE[1]}", "--virtual-time-budget=10000"]  # fmt: skip
    dom = subprocess.run([*args, f"--screenshot={shot}", "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=TIMEOUT_S, check=True).stdout
    if not shot.exists():  # a Chromium that does one of the two per run
        subprocess.run([*args, f"--screenshot={shot}", probe.as_uri()], capture_output=True, timeout=TIMEOUT_S, check=True)
    import matplotlib.image

    img = matplotlib.image.imread(shot)  # floats 0..1, RGB(A)
    return dom, np.rint(img[..., :3] * 255).astype(np.int32), html.count("<img ")


def _near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 6) -> np.ndarray:
    return (np.abs(img - np.array(rgb)) <= tol).all(axis=-1)


def _check(dom: str, img: np.ndarray, n_img: int, decision: str, colour: tuple[int, int, int]) -> dict:
    probe = re.search(r'<p id="render-check"([^>]*)>', dom)
    assert probe, dom[-2000:]
    data = dict(re.findall(r'data-(\w+)="([^"]*)"', probe.group(1)))
    assert n_img >= 3 and data["images"] == data["loaded"] == str(n_img), data  # every plot decoded
    assert data["bg"] == f"rgb({colour[0]}, {colour[1]}, {colour[2]})" and int(data["top"]) < 150, data
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert f"VERDICT fraud &lt;&amp;&gt; → v2: {decision}" in text and "route fraud &lt;&amp;&gt;" in text
    for gate in ("latency_p99", "error_rate", "invalid_outputs", "accuracy", "calibration_ece", "accuracy[band low]", "accuracy[band high]"):
        assert gate in text, gate
    # Pixels: not blank; the banner colour fills a band near the top; the plots were painted.
    assert img.shape[:2] == (SIZE[1], SIZE[0]) and img.std() > 20 and len(np.unique((img[..., 0] << 16) | (img[..., 1] << 8) | img[..., 2])) > 200
    top = _near(img[:250], colour)
    rows = np.flatnonzero(top.sum(axis=1) > SIZE[0] // 2)  # rows mostly banner-coloured
    assert len(rows) >= 40, len(rows)
    assert _near(img[rows[-1] :], LIVE).sum() > 500 and _near(img[rows[-1] :], SHADOW).sum() > 500
    return data


def test_fail_report_renders_red_with_every_plot(chromium, tmp_path):
    dom, img, n_img = _render(chromium, tmp_path, _state(better=False))
    _check(dom, img, n_img, "FAIL", RED)
    assert not _near(img[:250], GREEN).sum() > 2000  # only small PASS badges there, never a green banner
    assert "accuracy[band high]" in dom and re.search(r'<tr class="regressed"><td>band</td><td>high</td>', dom)


def test_pass_report_renders_green(chromium, tmp_path):
    dom, img, n_img = _render(chromium, tmp_path, _state(better=True))
    _check(dom, img, n_img, "PASS", GREEN)
    assert _near(img[:250], RED).sum() == 0 and 'class="regressed"' not in dom
