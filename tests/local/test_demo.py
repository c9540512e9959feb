"""`shadowgrpc demo` end to end (small counts, real Triton): its report must agree with what it sent.
Its consistency check on made-up reports, consistent or not: tests/unit/test_demo_check.py."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.triton
def test_demo_report_is_consistent():
    out = subprocess.run(
        [sys.executable, "-m", "shadowgrpc", "demo", "--requests", "200", "--intent-requests", "40", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sent 200 fraud + 40 merchant_intent requests (0 errors)" in out.stdout
    assert "pacing: " in out.stdout and "for shadow room" in out.stdout
    assert "route 'fraud'" in out.stdout and "fraud-v2" in out.stdout and "top-label agreement" in out.stdout
    assert "ground truth: 200 fraud outcomes sent, 200 joined" in out.stdout
    assert "improvements (shadow right, live wrong)" in out.stdout and "Brier live" in out.stdout
    assert "consistency check: OK" in out.stdout and "= every fraud request sampled by a shadow (200)" in out.stdout
