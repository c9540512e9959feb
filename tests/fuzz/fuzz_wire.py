"""Coverage-guided, differential fuzzer of the compiled wire code (atheris, i.e. libFuzzer).

The compiled twins come from build-fuzz/lib (tests/fuzz/setup_fuzz.py: clang with libFuzzer
coverage, ASan and UBSan), not from the in-place build. Each input picks one entry point by its
first byte and feeds it the rest: ``scan_request``, ``scan_response``, ``decode_bytes_tensor``
(as bytes and through the buffer protocol), ``build_request``, ``sample_key``, ``pack_request``
(fuzzed names, datatypes, shapes and data). The compiled result must equal the pure-Python twin's,
or both must raise the same ValueError/TypeError with the same message; anything else (another
exception, a difference, a sanitizer report, a crash) stops the run with the input saved by libFuzzer.

Run it through ``make fuzz`` (tests/fuzz/run_fuzz.py), which builds, preloads atheris's ASan+libFuzzer
runtime and counts executions; by hand:

    LD_PRELOAD=$(python -c 'import atheris; print(atheris.path())')/asan_with_fuzzer.so \\
    ASAN_OPTIONS=detect_leaks=0 python tests/fuzz/fuzz_wire.py -runs=1000000 build-fuzz/corpus
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(ROOT, "build-fuzz", "lib", "shadowgrpc")
sys.path.insert(0, ROOT)

import atheris  # noqa: E402


def _load(name: str):
    """The instrumented extension ``shadowgrpc.<name>`` from build-fuzz/lib, registered under its
    own name (so that _packing_c's import of _packing_build_c finds the instrumented one too)."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    path = os.path.join(LIB, name + suffix)
    if not os.path.exists(path):
        sys.exit(f"fuzz_wire: {path} is missing: build it with tests/fuzz/setup_fuzz.py (make fuzz does)")
    spec = importlib.util.spec_from_file_location(f"shadowgrpc.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build_c = _load("_packing_build_c")
packing_c = _load("_packing_c")
# The Python twin is the oracle, not a target: not instrumented (coverage feedback comes from the
# compiled code's libFuzzer counters; Python-level tracing would cost most of the speed).
import shadowgrpc._packing_build_py as build_py  # noqa: E402
import shadowgrpc._packing_py as packing_py  # noqa: E402

import numpy as np  # noqa: E402

assert packing_c.pack_request is build_c.pack_request and build_c.__file__.startswith(LIB)
DATATYPES = ["FP32", "INT64", "UINT8", "BOOL", "FP16", "BYTES", "", "NOPE", "fp32"]


def _outcome(fn, *args):
    try:
        result = fn(*args)
    except (ValueError, TypeError) as e:  # the documented errors; anything else escapes: a finding
        return (type(e).__name__, str(e))
    if isinstance(result, list):  # scan_response: views -> bytes; decode_bytes_tensor: bytes
        result = [tuple(bytes(x) if isinstance(x, memoryview) else x for x in r) if isinstance(r, tuple) else r for r in result]
    return ("ok", result)


def _same(name: str, *args) -> None:
    c = _outcome(getattr(packing_c, name), *args)
    py = _outcome(getattr(packing_py, name), *args)
    if c != py:
        raise AssertionError(f"{name}: compiled {c!r} != python {py!r} for {args!r}"[:2000])


def _text(fdp: atheris.FuzzedDataProvider, n: int) -> str:
    return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, n)).decode("utf-8", "surrogateescape")  # lone surrogates too


def _pack(fdp: atheris.FuzzedDataProvider) -> None:
    inputs = []
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        datatype = fdp.PickValueInList(DATATYPES)
        ndim = fdp.ConsumeIntInRange(0, 3)
        if fdp.ConsumeBool():
            shape = [fdp.ConsumeIntInRange(0, 6) for _ in range(ndim)]
        else:  # absurd dimensions: negative, huge, products past 64 bits
            shape = [fdp.ConsumeIntInRange(-(2**63), 2**64) for _ in range(ndim)]
        if datatype == "BYTES" and fdp.ConsumeBool():
            data = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 6)) for _ in range(fdp.ConsumeIntInRange(0, 8))]
        else:
            data = np.frombuffer(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)), np.uint8)
        inputs.append((_text(fdp, 6), datatype, tuple(shape), data))
    params = None
    if fdp.ConsumeBool():
        value = fdp.PickValueInList([True, 7, -(2**63), 2**63, "s", 1.5, None])
        params = {_text(fdp, 6): value}
    outputs = [_text(fdp, 6) for _ in range(fdp.ConsumeIntInRange(0, 2))]
    args = (_text(fdp, 8), _text(fdp, 4), _text(fdp, 8), inputs, outputs, params)
    c, py = _outcome(build_c.pack_request, *args), _outcome(build_py.pack_request, *args)
    if c != py:
        raise AssertionError(f"pack_request: compiled {c!r} != python {py!r}"[:2000])
    if c[0] == "ok":  # what the packer writes the scanner reads back
        _same("scan_request", c[1])


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    op, raw = data[0] % 8, data[1:]
    if op <= 2:
        for name in ("scan_request", "scan_response", "decode_bytes_tensor") if op == 0 else (("scan_request",) if op == 1 else ("scan_response",)):
            _same(name, raw)
    elif op == 3:  # through the buffer protocol: a bytearray and an offset memoryview
        for name in ("scan_request", "scan_response", "decode_bytes_tensor"):
            _same(name, bytearray(raw))
            _same(name, memoryview(b"\x00" + raw)[1:])
    elif op == 4:
        fdp = atheris.FuzzedDataProvider(raw)
        name = _text(fdp, 12) if fdp.ConsumeBool() else None
        version = _text(fdp, 4) if fdp.ConsumeBool() else None
        shadow = fdp.ConsumeBool()
        body = fdp.ConsumeBytes(fdp.remaining_bytes())
        _same("build_request", body, name, version, shadow)
        built = packing_py.build_request(body, name, version, shadow) if _outcome(packing_py.build_request, body, name, version, shadow)[0] == "ok" else None
        if built is not None:
            _same("scan_request", built)
    elif op == 5:
        _same("sample_key", raw.decode("utf-8", "surrogateescape"))
    else:
        _pack(atheris.FuzzedDataProvider(raw))


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
