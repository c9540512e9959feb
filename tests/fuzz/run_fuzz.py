"""``make fuzz``: build the instrumented wire extensions (tests/fuzz/setup_fuzz.py, into build-fuzz/),
seed a corpus with valid KServe messages, run tests/fuzz/fuzz_wire.py under atheris's
ASan+UBSan+libFuzzer runtime for a fixed number of executions, and print executions, exec/s and
coverage. Exits non-zero on a crash, a sanitizer report, a twin difference, or fewer executions
than asked (libFuzzer saves the input that failed under build-fuzz/crashes/)."""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "build-fuzz")
SOURCES = glob.glob(os.path.join(ROOT, "ext", "shadowgrpc", "*.p*")) + [os.path.join(ROOT, "tests", "fuzz", "setup_fuzz.py")]
FINDINGS = re.compile(r"ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:|Uncaught Python exception|deadly signal")


def build() -> None:
    libs = glob.glob(os.path.join(OUT, "lib", "shadowgrpc", "_packing_*c.*.so"))
    newest = max(os.path.getmtime(s) for s in SOURCES)
    if len(libs) == 2 and min(os.path.getmtime(p) for p in libs) > newest:
        return
    env = {**os.environ, "CC": "clang", "LDSHARED": "clang -shared"}
    cmd = [sys.executable, "tests/fuzz/setup_fuzz.py", "-q", "build_ext", "--force",
           "--build-lib", os.path.join(OUT, "lib"), "--build-temp", os.path.join(OUT, "tmp")]
    print("fuzz: building the instrumented extensions into build-fuzz/ (clang, -fsanitize=fuzzer-no-link,address,undefined)", flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def seed(directory: str) -> None:
    """Valid messages for each entry point (first byte: which one; fuzz_wire.TestOneInput)."""
    import numpy as np
    from tritonclient.grpc import service_pb2 as pb

    sys.path.insert(0, ROOT)
    from shadowgrpc._packing_py import encode_bytes_tensor

    os.makedirs(directory, exist_ok=True)
    req = pb.ModelInferRequest(model_name="fraud", model_version="1", id="r-1")
    t = req.inputs.add(name="features", datatype="FP32", shape=[2, 4])
    t.parameters["shared_memory_region"].string_param = "r"
    req.outputs.add(name="probability").parameters["binary_data"].bool_param = True
    req.parameters["priority"].int64_param = 3
    req.raw_input_contents.append(np.arange(8, dtype=np.float32).tobytes())
    resp = pb.ModelInferResponse(model_name="fraud", model_version="1", id="r-1")
    resp.outputs.add(name="probability", datatype="FP32", shape=[2, -1, 1 << 40])
    resp.raw_output_contents.append(b"\x00" * 8)
    group = b"\x43\x48\x01\x4b\x4d\x00\x00\x00\x00\x4c\x44"
    seeds = {
        "request": b"\x00" + req.SerializeToString(),
        "request-groups": b"\x01" + group + req.SerializeToString(),
        "response": b"\x02" + resp.SerializeToString(),
        "buffer": b"\x03" + encode_bytes_tensor([b"ab", b"", b"xyz"]),
        "build": b"\x04\x01\x05fraud\x01\x012\x01" + req.SerializeToString(),
        "key": b"\x05req-42",
        "pack": b"\x06" + bytes(range(64)),
    }
    for name, data in seeds.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=1_000_000, help="executions (default 1,000,000)")
    ap.add_argument("--max-len", type=int, default=1024, help="largest input in bytes")
    ap.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (fixed: runs are repeatable)")
    args = ap.parse_args()
    import atheris

    build()
    corpus, seeds, crashes = (os.path.join(OUT, d) for d in ("corpus", "seeds", "crashes"))
    seed(seeds)
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(crashes, exist_ok=True)
    env = {
        **os.environ,
        "LD_PRELOAD": os.path.join(atheris.path(), "asan_with_fuzzer.so"),
        # Python itself is not built with ASan: its leaks are not findings; a small quarantine keeps RSS flat.
        "ASAN_OPTIONS": "detect_leaks=0:quarantine_size_mb=16:abort_on_error=1:symbolize=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    }
    cmd = [sys.executable, os.path.join(ROOT, "tests", "fuzz", "fuzz_wire.py"), f"-runs={args.runs}",
           f"-max_len={args.max_len}", f"-seed={args.seed}", "-print_final_stats=1",
           f"-artifact_prefix={crashes}/", corpus, seeds]
    log_path = os.path.join(OUT, "fuzz.log")
    print(f"fuzz: {args.runs:,} executions of tests/fuzz/fuzz_wire.py (log: build-fuzz/fuzz.log)", flush=True)
    t0 = time.monotonic()
    last = ""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if "pulse" in line or "DONE" in line or "INITED" in line or FINDINGS.search(line):
                print("  " + line.rstrip()[:160], flush=True)
            if line.startswith("#") and "exec/s" in line:
                last = line
        rc = proc.wait()
    wall = time.monotonic() - t0
    text = open(log_path, errors="replace").read()
    done = re.search(r"Done (\d+) runs in (\d+) second", text)
    runs = int(done.group(1)) if done else 0
    stats = dict(re.findall(r"stat::(\w+):\s+(\d+)", text))
    cov = re.search(r"cov: (\d+) ft: (\d+) corp: (\d+)", last)
    print(f"fuzz: {runs:,} executions in {wall:.0f} s wall: {runs / wall:,.0f} exec/s overall"
          f" (libFuzzer: {stats.get('average_exec_per_sec', '?')} exec/s average, peak RSS {stats.get('peak_rss_mb', '?')} MB)")
    if cov:
        print(f"fuzz: coverage {cov.group(1)} edges, {cov.group(2)} features, corpus of {cov.group(3)} inputs")
    finding = FINDINGS.search(text)
    if rc != 0 or finding or runs < args.runs:
        print(f"fuzz: FAILED (exit {rc}{', ' + finding.group(0) if finding else ''}; {runs:,} of {args.runs:,} runs); "
              f"see build-fuzz/fuzz.log and build-fuzz/crashes/", file=sys.stderr)
        return 1
    print("fuzz: no crash, no sanitizer report, compiled == Python twin on every input")
    return 0


if __name__ == "__main__":
    sys.exit(main())
