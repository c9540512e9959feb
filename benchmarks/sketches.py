"""Benchmark of the streaming sketches and of response decoding, side by side in one run.

- histogram accumulation, values/s: 1e6 and 1e7 float32 values, 64 and 1024 uniform bins over
  [0, 1), values uniform on [-0.05, 1.05) (10% out of range), for shadowgrpc's selected twin
  (uniform-edge fast path, and binary search on the same edges perturbed), numpy.histogram,
  boost-histogram and fast-histogram (reported as missing when not installed);
- the whole divergence set (KL both ways, JS, PSI, TV, W1) for two 1024-bin histograms, with
  scipy.stats.entropy (KL alone) for reference when installed;
- one response's update of a route's sketches: 16 outputs of 8 float32 rows, each into a live and
  a shadow Histogram (64 bins) through one ``update_many`` call, plus live, shadow and front
  latency records (the figure the "route update <= 2 us" target is about), and its two parts alone;
- paired statistics, one update each, compiled twin against the Python twin in the same run:
  LabelAgreement.update_probs on 8x2 (also as an unaligned view, as a decoded output often is) and
  1024x10 float32 probabilities, BinaryAgreement / RegressionAgreement on 1024 float32 values,
  CosineStats.update_embeddings on 64x256 float32;
- decoding a ModelInferResponse's outputs to numpy: ``shadowgrpc.packing.scan_response`` +
  ``np.frombuffer`` / ``decode_bytes_tensor`` on the raw bytes, against tritonclient's
  ``InferResult(response).as_numpy(name)`` on the parsed message (and with the parse included).

Timings are the best of several repeats (time.perf_counter); the route update's repeats are short
(20,000 calls, ~30 ms), so it takes three times as many. Targets are printed PASS/FAIL.

Usage: python benchmarks/sketches.py [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from shadowgrpc import packing, sketches  # noqa: E402
from shadowgrpc.sketches import _py as sketches_py  # noqa: E402


ROUTE_TARGET_S = 2e-6  # one response's route update (bench_route_update's "update_s")


def optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def best_time(fn: Callable[[], object], repeats: int, number: int = 1) -> float:
    """Best seconds per call over ``repeats`` runs of ``number`` calls."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def bench_histograms(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    bh = optional("boost_histogram")
    fh = optional("fast_histogram")
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        x = rng.uniform(-0.05, 1.05, n).astype(np.float32)
        for nbins in (64, 1024):
            edges = np.linspace(0.0, 1.0, nbins + 1)
            jitter = edges.copy()
            jitter[1:-1] += (rng.random(nbins - 1) - 0.5) * 0.2 / nbins  # non-uniform: binary search

            def ours(e: np.ndarray = edges) -> object:
                h = sketches.Histogram(e)
                h.update(x)
                return h

            def ours_search(e: np.ndarray = jitter) -> object:
                h = sketches.Histogram(e)
                h.update(x)
                return h

            libs: dict[str, Callable[[], object] | None] = {
                f"shadowgrpc ({sketches.IMPLEMENTATION}, uniform)": ours,
                f"shadowgrpc ({sketches.IMPLEMENTATION}, binary search)": ours_search,
                "numpy.histogram": lambda nb=nbins: np.histogram(x, bins=nb, range=(0.0, 1.0)),
                "boost-histogram": (lambda nb=nbins: bh.Histogram(bh.axis.Regular(nb, 0.0, 1.0)).fill(x)) if bh else None,
                "fast-histogram": (lambda nb=nbins: fh.histogram1d(x, bins=nb, range=(0.0, 1.0))) if fh else None,
            }
            for name, fn in libs.items():
                if fn is None:
                    rows.append({"n": n, "bins": nbins, "impl": name, "values_per_s": None, "missing": True})
                    continue
                t = best_time(fn, repeats)
                rows.append({"n": n, "bins": nbins, "impl": name, "values_per_s": n / t, "missing": False})
    return rows


def bench_divergences(repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    edges = np.linspace(0.0, 1.0, 1025)
    p, q = sketches.Histogram(edges), sketches.Histogram(edges)
    p.update(rng.beta(2, 5, 100_000))
    q.update(rng.beta(2.2, 5, 100_000))
    pc, qc = p.counts[0], q.counts[0]
    out: dict[str, Any] = {"bins": int(pc.size)}
    out["divergences_s"] = best_time(lambda: sketches.divergences(pc, qc), repeats, 2000)
    out["divergences_with_edges_s"] = best_time(lambda: sketches.divergences(pc, qc, edges=edges), repeats, 500)
    stats = optional("scipy.stats")
    if stats is not None:
        pp, qq = (pc + 0.5) / (pc.sum() + 0.5 * pc.size), (qc + 0.5) / (qc.sum() + 0.5 * qc.size)
        out["scipy_entropy_kl_s"] = best_time(lambda: stats.entropy(pp, qq), repeats, 500)
    else:
        out["scipy_entropy_kl_s"] = None
    return out


def bench_route_update(repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    n_outputs, rows = 16, 8
    edges = np.linspace(0.0, 1.0, 65)
    live_h = [sketches.Histogram(edges) for _ in range(n_outputs)]
    shadow_h = [sketches.Histogram(edges) for _ in range(n_outputs)]
    lat = [sketches.LatencySketch() for _ in range(3)]
    live = [rng.random(rows).astype(np.float32) for _ in range(n_outputs)]
    shadow = [rng.random(rows).astype(np.float32) for _ in range(n_outputs)]
    hists = live_h + shadow_h
    values = live + shadow
    l0, l1, l2 = lat

    def update() -> None:
        sketches.update_many(hists, values)
        l0.record(0.0021)
        l1.record(0.0034)
        l2.record(0.00004)

    def histograms_only() -> None:
        sketches.update_many(hists, values)

    def latencies_only() -> None:
        l0.record(0.0021)
        l1.record(0.0034)
        l2.record(0.00004)

    nbytes = sum(h.nbytes for h in live_h + shadow_h) + sum(s.nbytes for s in lat)
    repeats *= 3
    return {"outputs": n_outputs, "rows": rows, "update_s": best_time(update, repeats, 20_000),
            "update_many_s": best_time(histograms_only, repeats, 20_000),
            "latency_records_s": best_time(latencies_only, repeats, 20_000), "target_s": ROUTE_TARGET_S,
            "sketch_bytes": nbytes}


def unaligned(a: np.ndarray) -> np.ndarray:
    """The values of ``a`` in a read-only view one byte off alignment (a decoded output's place)."""
    return np.frombuffer(b"\0" + a.tobytes(), dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)


def bench_paired(repeats: int) -> list[dict[str, Any]]:
    """Seconds per update of each paired statistic, compiled (when built) and Python twin."""
    compiled = None if sketches.IMPLEMENTATION == "py" else importlib.import_module("shadowgrpc.sketches._c")
    rng = np.random.default_rng(3)
    f32 = np.float32

    def probs(rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        live = rng.random((rows, k)).astype(f32)
        return live, (live + rng.normal(0, 0.1, live.shape)).astype(f32)

    small, big = probs(8, 2), probs(1024, 10)
    values = rng.random(1024).astype(f32)
    shadow_values = (values + rng.normal(0, 0.01, 1024)).astype(f32)
    emb = rng.standard_normal((64, 256)).astype(f32)
    emb_shadow = (emb + rng.normal(0, 0.1, emb.shape)).astype(f32)
    cases = [  # (name, class, constructor args, method, live, shadow, calls per repeat)
        ("LabelAgreement.update_probs 8x2 f32", "LabelAgreement", (2,), "update_probs", *small, 20_000),
        ("  the same, unaligned views", "LabelAgreement", (2,), "update_probs", unaligned(small[0]), unaligned(small[1]), 20_000),
        ("LabelAgreement.update_probs 1024x10 f32", "LabelAgreement", (10,), "update_probs", *big, 2_000),
        ("BinaryAgreement.update_binary 1024 f32", "BinaryAgreement", (0.5,), "update_binary", values, shadow_values, 5_000),
        ("RegressionAgreement.update_regression 1024 f32", "RegressionAgreement", (1e-3, 1e-2), "update_regression",
         values, shadow_values, 2_000),
        ("CosineStats.update_embeddings 64x256 f32", "CosineStats", (), "update_embeddings", emb, emb_shadow, 2_000),
    ]
    rows = []
    for name, cls, args, method, live, shadow, number in cases:
        row: dict[str, Any] = {"case": name, "py_s": None, "c_s": None, "speedup": None}
        for impl, mod in (("py", sketches_py), ("c", compiled)):
            if mod is None:
                continue
            update = getattr(getattr(mod, cls)(*args), method)
            row[f"{impl}_s"] = best_time(lambda u=update, a=live, b=shadow: u(a, b), repeats,
                                         number if impl == "c" else max(number // 20, 50))
        if row["c_s"]:
            row["speedup"] = row["py_s"] / row["c_s"]
        rows.append(row)
    return rows


def bench_decode(repeats: int) -> list[dict[str, Any]]:
    from tritonclient.grpc import InferResult
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.utils import serialize_byte_tensor

    rows = []
    for kind in ("FP32", "BYTES"):
        msg = pb.ModelInferResponse(model_name="m", model_version="1", id="r")
        names = []
        for i in range(4):
            name = f"out{i}"
            names.append(name)
            if kind == "FP32":
                arr = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)
                msg.outputs.add(name=name, datatype="FP32", shape=list(arr.shape))
                msg.raw_output_contents.append(arr.tobytes())
            else:
                arr = np.array([f"label-{j}".encode() for j in range(64)], dtype=np.object_)
                msg.outputs.add(name=name, datatype="BYTES", shape=[64])
                msg.raw_output_contents.append(serialize_byte_tensor(arr).item())
        raw = msg.SerializeToString()

        dtypes = {"FP32": np.dtype(np.float32)}

        def ours() -> list[object]:
            # np.ndarray(shape, dtype, buffer) is one call (np.frombuffer + reshape is two); it
            # needs len(view) >= the shape's size: the codec checks len(view) == size first.
            out = []
            for _name, dtype, shape, view in packing.scan_response(raw):
                if dtype == "BYTES":
                    out.append(packing.decode_bytes_tensor(view))
                else:
                    out.append(np.ndarray(shape, dtypes[dtype], view))
            return out

        def theirs(m: Any = msg) -> list[object]:
            r = InferResult(m)
            return [r.as_numpy(n) for n in names]

        def theirs_parse() -> list[object]:
            return theirs(pb.ModelInferResponse.FromString(raw))

        t_ours = best_time(ours, repeats, 2000)
        t_theirs = best_time(theirs, repeats, 2000)
        t_parse = best_time(theirs_parse, repeats, 2000)
        rows.append({"datatype": kind, "outputs": len(names), "ours_s": t_ours, "as_numpy_s": t_theirs,
                     "parse_and_as_numpy_s": t_parse, "speedup": t_theirs / t_ours,
                     "speedup_with_parse": t_parse / t_ours})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write every figure as JSON to this path")
    parser.add_argument("--quick", action="store_true", help="1e6 values only, fewer repeats")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    sizes = [1_000_000] if args.quick else [1_000_000, 10_000_000]

    meta = {"python": platform.python_version(), "machine": platform.machine(), "numpy": np.__version__,
            "sketches": sketches.IMPLEMENTATION, "packing": packing.IMPLEMENTATION, "quick": args.quick}
    for mod in ("boost_histogram", "fast_histogram", "scipy", "tritonclient"):
        m = optional(mod)
        meta[mod] = getattr(m, "__version__", "installed") if m else "missing"
    print("# " + ", ".join(f"{k}={v}" for k, v in meta.items()))

    hist = bench_histograms(sizes, repeats)
    print(f"\n{'values':>10} {'bins':>5}  {'implementation':<38} {'M values/s':>11}")
    for r in hist:
        v = "missing" if r["missing"] else f"{r['values_per_s'] / 1e6:11.1f}"
        print(f"{r['n']:>10.0e} {r['bins']:>5}  {r['impl']:<38} {v:>11}")

    div = bench_divergences(repeats)
    print(f"\ndivergences, two {div['bins']}-column histograms: {div['divergences_s'] * 1e6:.1f} us "
          f"(with edges: {div['divergences_with_edges_s'] * 1e6:.1f} us); scipy.stats.entropy (KL only): "
          + (f"{div['scipy_entropy_kl_s'] * 1e6:.1f} us" if div["scipy_entropy_kl_s"] else "missing"))

    route = bench_route_update(repeats)
    print(f"\nroute update, one response ({route['outputs']} outputs x {route['rows']} rows into live+shadow "
          f"histograms, 3 latency records); sketches hold {route['sketch_bytes']} bytes")
    for label, key in ((f"whole update (the <= {ROUTE_TARGET_S * 1e6:g} us target figure)", "update_s"),
                       (f"  of which update_many, {2 * route['outputs']} histograms", "update_many_s"),
                       ("  of which 3 LatencySketch.record calls", "latency_records_s")):
        print(f"  {label:<46} {route[key] * 1e6:6.2f} us")

    paired = bench_paired(repeats)
    print(f"\n{'paired statistic, one update':<48} {'twin us':>9} {'compiled us':>12} {'x':>7}")
    for r in paired:
        c = f"{r['c_s'] * 1e6:12.2f}" if r["c_s"] else f"{'not built':>12}"
        x = f"{r['speedup']:7.1f}" if r["speedup"] else f"{'':>7}"
        print(f"{r['case']:<48} {r['py_s'] * 1e6:9.2f} {c} {x}")

    dec = bench_decode(repeats)
    print(f"\n{'decode':<8} {'ours us':>9} {'as_numpy us':>12} {'x':>6} {'parse+as_numpy us':>18} {'x':>6}")
    for r in dec:
        print(f"{r['datatype']:<8} {r['ours_s'] * 1e6:9.2f} {r['as_numpy_s'] * 1e6:12.2f} {r['speedup']:6.1f} "
              f"{r['parse_and_as_numpy_s'] * 1e6:18.2f} {r['speedup_with_parse']:6.1f}")

    def rate(n: int, bins: int, prefix: str) -> float | None:
        for r in hist:
            if r["n"] == n and r["bins"] == bins and r["impl"].startswith(prefix) and not r["missing"]:
                return r["values_per_s"]
        return None

    n_t = max(sizes)
    ours = rate(n_t, 1024, f"shadowgrpc ({sketches.IMPLEMENTATION}, uniform)")
    targets = []

    def target(name: str, ok: bool | None, detail: str) -> None:
        targets.append({"target": name, "result": "PASS" if ok else ("FAIL" if ok is not None else "N/A"), "detail": detail})

    for lib, need in (("numpy.histogram", 5.0), ("fast-histogram", 1.5)):
        other = rate(n_t, 1024, lib)
        ratio = ours / other if ours and other else None
        target(f">= {need}x {lib} ({n_t:.0e} float32, 1024 bins)", ratio >= need if ratio else None,
               f"{ratio:.2f}x" if ratio else f"{lib} missing")
    target(f"route update <= {ROUTE_TARGET_S * 1e6:g} us (one response)", route["update_s"] <= ROUTE_TARGET_S,
           f"{route['update_s'] * 1e6:.2f} us")
    target("divergences <= 50 us", div["divergences_s"] <= 50e-6, f"{div['divergences_s'] * 1e6:.1f} us")
    for r in dec:
        target(f">= 3x as_numpy ({r['datatype']})", r["speedup"] >= 3.0,
               f"{r['speedup']:.1f}x ({r['speedup_with_parse']:.1f}x counting the parse)")
    target("route sketches <= 1 MiB", route["sketch_bytes"] <= 1 << 20, f"{route['sketch_bytes']} bytes")
    print("\ntargets:")
    for t in targets:
        print(f"  {t['result']:<5} {t['target']:<52} {t['detail']}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "histograms": hist, "divergences": div, "route_update": route,
                                         "paired": paired, "decode": dec, "targets": targets}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
