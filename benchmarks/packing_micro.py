"""Micro-benchmark of the wire-level packer: ns per call, compiled vs pure-Python twin vs protobuf.

For a typical 8-feature fraud request (one FP32 [1, 8] input, one requested output, an id) and a
1 MiB request, it times:

- scan_request: the twins, against ``ModelInferRequest.FromString`` + reading the same fields;
- build_request (shadow rewrite: model name, version, ``shadow`` parameter): the twins, against
  ``FromString`` + modify + ``SerializeToString``;
- scan_response of the matching response, against ``ModelInferResponse.FromString`` + reading
  name, datatype, shape and raw contents of each output.

and pack_request (a request written from a numpy array) against tritonclient's InferInput +
set_data_from_numpy + request building + SerializeToString, for a 64x8 and a 1x(1 MiB) FP32 input.

Usage: python benchmarks/packing_micro.py [--json PATH] [--min-time SECONDS]
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import timeit
import uuid
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from tritonclient.grpc import InferInput, InferRequestedOutput  # noqa: E402
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc._utils import _get_inference_request  # noqa: E402  (what InferenceServerClient.infer calls)

import shadowgrpc._packing_py as packing_py  # noqa: E402

SHM = "shared_memory_region"


def fraud_request(payload_bytes: int) -> bytes:
    msg = pb.ModelInferRequest(model_name="fraud", model_version="1", id=str(uuid.UUID(int=12345)))
    msg.inputs.add(name="features", datatype="FP32", shape=[1, payload_bytes // 4])
    msg.outputs.add(name="probability").parameters["binary_data"].bool_param = True
    msg.raw_input_contents.append(bytes(range(256)) * (payload_bytes // 256) + bytes(payload_bytes % 256))
    return msg.SerializeToString()


def fraud_response(payload_bytes: int) -> bytes:
    msg = pb.ModelInferResponse(model_name="fraud", model_version="1", id=str(uuid.UUID(int=12345)))
    msg.outputs.add(name="probability", datatype="FP32", shape=[1, payload_bytes // 4])
    msg.raw_output_contents.append(bytes(payload_bytes))
    return msg.SerializeToString()


def pb_scan_request(raw: bytes) -> tuple[str, str, str, bool]:
    m = pb.ModelInferRequest.FromString(raw)
    shm = any(SHM in t.parameters for t in m.inputs) or any(SHM in o.parameters for o in m.outputs)
    return m.model_name, m.model_version, m.id, shm


def pb_build_request(raw: bytes) -> bytes:
    m = pb.ModelInferRequest.FromString(raw)
    m.model_name = "fraud_v2"
    m.model_version = "2"
    m.parameters["shadow"].bool_param = True
    return m.SerializeToString()


def pb_scan_response(raw: bytes) -> list:
    m = pb.ModelInferResponse.FromString(raw)
    contents = m.raw_output_contents
    return [
        (o.name, o.datatype, tuple(o.shape), contents[i] if i < len(contents) else None)
        for i, o in enumerate(m.outputs)
    ]


def tritonclient_pack(x) -> bytes:
    infer_input = InferInput("features", list(x.shape), "FP32").set_data_from_numpy(x)
    return _get_inference_request("fraud", [infer_input], "1", "r-1", [InferRequestedOutput("probability")], 0, False,
                                  False, 0, None, None).SerializeToString()


def pack_rows(packing_c, min_time: float) -> list[dict]:
    """pack_request (twins) vs tritonclient's request building, on the same input."""
    rows = []
    for case, shape in {"64x8 FP32": (64, 8), "1x(1 MiB) FP32": (1, 1 << 18)}.items():
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        args = ("fraud", "1", "r-1", [("features", "FP32", x.shape, x)], ["probability"])
        impls = {"py": lambda: packing_py.pack_request(*args), "tritonclient": lambda: tritonclient_pack(x)}
        if packing_c is not None:
            impls["c"] = lambda: packing_c.pack_request(*args)
            assert packing_c.pack_request(*args) == tritonclient_pack(x)  # the same bytes
        timing = {impl: ns_per_call(fn, min_time) for impl, fn in impls.items()}
        rows.append({"case": case, "message_bytes": len(tritonclient_pack(x)), "op": "pack_request", "ns_per_call": timing})
    return rows


def ns_per_call(fn: Callable[[], object], min_time: float) -> float:
    timer = timeit.Timer(fn)
    number, elapsed = timer.autorange()
    number = max(1, int(number * min_time / max(elapsed, 1e-9)))
    best = min(timer.repeat(repeat=5, number=number))
    return best / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per timing repeat")
    args = parser.parse_args()

    try:
        packing_c = importlib.import_module("shadowgrpc._packing_c")
    except ImportError:
        packing_c = None
        print("note: shadowgrpc._packing_c is not built; run `python setup.py build_ext --inplace`")

    cases = {"fraud 8-feature": 32, "1 MiB": 1 << 20}
    rows = []
    for case, size in cases.items():
        raw = fraud_request(size)
        resp = fraud_response(size)
        ops: dict[str, dict[str, Callable[[], object]]] = {
            "scan_request": {
                "py": lambda raw=raw: packing_py.scan_request(raw),
                "protobuf": lambda raw=raw: pb_scan_request(raw),
            },
            "build_request": {
                "py": lambda raw=raw: packing_py.build_request(raw, "fraud_v2", "2", True),
                "protobuf": lambda raw=raw: pb_build_request(raw),
            },
            "scan_response": {
                "py": lambda resp=resp: packing_py.scan_response(resp),
                "protobuf": lambda resp=resp: pb_scan_response(resp),
            },
        }
        if packing_c is not None:
            ops["scan_request"]["c"] = lambda raw=raw: packing_c.scan_request(raw)
            ops["build_request"]["c"] = lambda raw=raw: packing_c.build_request(raw, "fraud_v2", "2", True)
            ops["scan_response"]["c"] = lambda resp=resp: packing_c.scan_response(resp)
            # The twins agree here too (the tests check it at large).
            assert packing_c.build_request(raw, "fraud_v2", "2", True) == packing_py.build_request(
                raw, "fraud_v2", "2", True
            )
        for op, impls in ops.items():
            timing = {impl: ns_per_call(fn, args.min_time) for impl, fn in impls.items()}
            rows.append({"case": case, "message_bytes": len(resp if op == "scan_response" else raw), "op": op,
                         "ns_per_call": timing})

    pack = pack_rows(packing_c, args.min_time)
    header = f"{'case':<16} {'op':<14} {'bytes':>9} {'c ns':>10} {'py ns':>10} {'protobuf ns':>12} {'pb / c':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        t = r["ns_per_call"]
        c = t.get("c")
        ratio = f"{t['protobuf'] / c:7.1f}x" if c else "     n/a"
        c_text = f"{c:10.0f}" if c else f"{'n/a':>10}"
        print(f"{r['case']:<16} {r['op']:<14} {r['message_bytes']:>9} {c_text} {t['py']:10.0f} "
              f"{t['protobuf']:12.0f} {ratio}")
    print(f"\n{'case':<16} {'op':<14} {'bytes':>9} {'c ns':>10} {'py ns':>10} {'tritonclient ns':>16} {'tc / c':>8}")
    for r in pack:
        t = r["ns_per_call"]
        c = t.get("c")
        print(f"{r['case']:<16} {r['op']:<14} {r['message_bytes']:>9} {c or float('nan'):10.0f} {t['py']:10.0f} "
              f"{t['tritonclient']:16.0f} {t['tritonclient'] / c if c else float('nan'):7.1f}x")
    rows += pack
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "compiled_twin": packing_c is not None,
    }
    print(f"\n{meta}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
