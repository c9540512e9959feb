"""`shadowgrpc demo` end to end (small counts): its report must agree with what it sent."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.triton


def test_demo_report_is_consistent():
    out = subprocess.run(
        [sys.executable, "-m", "shadowgrpc", "demo", "--requests", "200", "--intent-requests", "40", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sent 200 fraud + 40 merchant_intent requests (0 errors)" in out.stdout
    assert "route 'fraud'" in out.stdout and "fraud-v2" in out.stdout and "top-label agreement" in out.stdout
    assert "ground truth: 200 fraud outcomes sent, 200 joined" in out.stdout
    assert "improvements (shadow right, live wrong)" in out.stdout and "Brier live" in out.stdout
    assert "consistency check: OK" in out.stdout
