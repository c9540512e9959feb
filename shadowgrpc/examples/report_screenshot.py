"""Screenshot of the HTML report of a short demo run (``make report-screenshot``): the README's
shadowgrpc/examples/report.png.

Runs, all on 127.0.0.1 and all stopped at the end: the embedded Triton with the example
repository, the front with the shipped example config (as ``shadowgrpc demo`` does), paced demo
traffic through it and the fraud outcomes afterwards; then takes the front's report with its
snapshot (as ``shadowgrpc report`` does for merged replicas), writes the HTML page
(shadowgrpc.report_html) and has headless Chromium (Debian's ``chromium``) render its top to a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


async def _run(triton_address: str, requests: int, intent_requests: int, batch: int = 4, concurrency: int = 8):
    from shadowgrpc.client import fetch_report
    from shadowgrpc.config import Settings
    from shadowgrpc.local.demo import _drive, _send_outcomes, example_config, shadow_room
    from shadowgrpc.server import Front

    cfg = example_config()
    cfg["server"].update(default_live=triton_address, listen="127.0.0.1:0", admin_listen="127.0.0.1:0")
    front = Front(Settings.from_dict(cfg))
    await front.start()
    try:
        sent = await _drive(front.port, requests, intent_requests, concurrency, batch, False, shadow_room(front.router, concurrency))
        await front.router.drain(timeout=5.0)
        got = await _send_outcomes(front.admin_port, requests, batch, sent["labels"])
        print(f"sent {sent['fraud']} fraud + {sent['merchant_intent']} merchant_intent requests; {got.accepted} outcomes joined")
        return await asyncio.to_thread(fetch_report, f"127.0.0.1:{front.admin_port}", "", 30.0, True)
    finally:
        await front.stop(grace=1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="shadowgrpc/examples/report.png", help="PNG to write")
    ap.add_argument("--html", help="also keep the HTML page here")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium", help="headless Chromium")
    ap.add_argument("--requests", type=int, default=2000, help="demo fraud requests (default 2000)")
    ap.add_argument("--intent-requests", type=int, default=200, help="merchant_intent requests (default 200)")
    ap.add_argument("--window-size", default="1280,1800", help="WIDTH,HEIGHT of the screenshot (default 1280,1800)")
    args = ap.parse_args(argv)

    from shadowgrpc.local import EmbeddedTriton, example_repository
    from shadowgrpc.report_html import write_html
    from shadowgrpc.snapshot import load

    with tempfile.TemporaryDirectory(prefix="shadowgrpc-report-") as tmp:
        env = {"SHADOWGRPC_PREFERENCE_CACHE": str(Path(tmp) / "preference_cache.jsonl")}
        with EmbeddedTriton(example_repository(), log_path=Path(tmp) / "tritonserver.log", env=env) as triton:
            rep = asyncio.run(_run(triton.grpc_address, args.requests, args.intent_requests))
        state = load(rep.snapshot)
        rep.ClearField("snapshot")
        page = Path(args.html or Path(tmp) / "report.html").resolve()
        write_html(state, rep, str(page), title="shadowgrpc demo report")
        out = Path(args.out).resolve()
        subprocess.run(
            [args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={Path(tmp) / 'chromium'}", "--hide-scrollbars",
             f"--window-size={args.window_size}", f"--screenshot={out}", page.as_uri()],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip
        print(f"wrote {out}" + (f" and {page}" if args.html else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
