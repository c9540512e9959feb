"""encode.py: logged output tensors back to ModelInferResponse bytes (what a replay hands the log
writer as live's answer). Every datatype goes through the real writer (PairLog -> Parquet), back to
bytes, and through the writer again: the contents are the original bytes and the logged column is
the same. Also the compared / contract_mismatch decision."""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as kserve

from shadowgrpc.analysis.encode import encode_column, encode_outputs, pair_of
from shadowgrpc.packing import encode_bytes_tensor, scan_response
from shadowgrpc.pairlog import batch

NUMERIC = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([0, 1, 254, 255], np.uint8),
    "UINT16": np.array([0, 65535, 1234], np.uint16),
    "UINT32": np.array([0, 2**32 - 1, 2**31], np.uint32),
    "UINT64": np.array([0, 2**64 - 1, 2**63, 2**63 - 1, 12345], np.uint64),
    "INT8": np.array([-128, 127, 0, -1], np.int8),
    "INT16": np.array([-32768, 32767, 7], np.int16),
    "INT32": np.array([-(2**31), 2**31 - 1, -5], np.int32),
    "INT64": np.array([[-(2**63), 2**63 - 1], [0, -1]], np.int64),
    "FP16": np.array([0.0, -0.0, 1.5, 65504.0, 6e-8, np.inf, -np.inf, np.nan, 0.1], np.float16),
    "FP32": np.array([[0.0, -0.0, 1e-45, 3.4028235e38], [np.inf, -np.inf, np.nan, 0.1]], np.float32),
    "FP64": np.array([5e-324, -1.7976931348623157e308, np.nan, np.inf, 0.1, -0.0]),
}
BYTES = [b"", b"\x00\xff", "zürich".encode(), b"x" * 1000]


def _response(tensors: list[tuple[str, str, list[int], bytes | None]]) -> bytes:
    r = kserve.ModelInferResponse(model_name="m", id="r")
    for name, dt, shape, _ in tensors:
        r.outputs.add(name=name, datatype=dt, shape=shape)
    if all(c is not None for *_, c in tensors):
        r.raw_output_contents.extend(c for *_, c in tensors)
    return r.SerializeToString()


def _answers() -> list[bytes | None]:
    every = [(f"out_{dt.lower()}", dt, list(a.shape), a.astype(a.dtype.newbyteorder("<")).tobytes()) for dt, a in NUMERIC.items()]
    every.append(("text", "BYTES", [2, 2], encode_bytes_tensor(BYTES)))
    return [
        _response(every),
        _response([("scalar", "FP32", [], np.float32(2.5).tobytes()), ("empty", "INT64", [0, 3], b"")]),
        _response([("bad_size", "FP32", [2, 2], b"\x00" * 12), ("bad_bytes", "BYTES", [1], b"\x05\x00\x00\x00ab"),
                   ("bf16", "BF16", [2], b"\x00\x00\x80\x3f")]),  # fmt: skip
        None,  # no answer: a null row
    ]


def _typed() -> bytes:
    """Typed (not raw) contents: logged with a null payload."""
    r = kserve.ModelInferResponse()
    o = r.outputs.add(name="p", datatype="FP32", shape=[2])
    o.contents.fp32_contents.extend([0.25, 0.75])
    return r.SerializeToString()


def _write(tmp_path, name: str, answers: list[bytes | None]):
    """The answers through the real writer (as live's answers); the logged live_outputs column."""
    from shadowgrpc._config_log import LogSettings
    from shadowgrpc.config import Settings
    from shadowgrpc.pairlog.schema import SENT, PairRow
    from shadowgrpc.pairlog.writer import PairLog

    routes = Settings.from_dict({"server": {"default_live": "127.0.0.1:1"}, "routes": [{"model": "m", "shadows": [{"name": "s", "version": "2"}]}]}).routes
    pl = PairLog(LogSettings(path=str(tmp_path / name)), routes, writer_id="w")
    pl.start()
    now = time.time()
    for i, raw in enumerate(answers):
        pl.pair(PairRow("m", 0, f"r{i}", i, now, now, now, SENT, True, "OK", "OK", "compared", 0.001, 0.001, 0.0, None, None, raw, raw, None))
    pl.close()
    assert pl.stats.rows_written == len(answers) and not pl.stats.last_error
    files = sorted((tmp_path / name / "pairs").glob("**/*.parquet"))
    return pq.read_table(files, schema=None).sort_by("request_seq").column("live_outputs")


def _same(a, b) -> bool:
    """Equal, NaN equal to NaN (the logged values as Python objects)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_every_datatype_round_trips_through_the_writer(tmp_path):
    answers = [*_answers(), _typed()]
    logged = _write(tmp_path, "first", answers)
    again = encode_column(logged)
    assert again[3] is None and all(isinstance(x, bytes) for i, x in enumerate(again) if i != 3)
    # The contents are the original bytes, tensor by tensor; a tensor logged without values comes
    # back with empty contents (and is logged without values again).
    for raw, back in zip(answers, again):
        if raw is None:
            continue
        orig, new = scan_response(raw), scan_response(back)
        assert [t[:3] for t in orig] == [t[:3] for t in new]
        for (name, dt, _, c), (_, _, _, c2) in zip(orig, new):
            if name in ("bad_size", "bad_bytes", "bf16") or raw is answers[-1]:
                assert bytes(c2) == b"", name
            else:
                assert bytes(c2) == bytes(c), (name, dt)
    # The writer logs the re-encoded answers as it logged the originals.
    relogged = _write(tmp_path, "second", again)
    assert _same(relogged.to_pylist(), logged.to_pylist())
    # Per row from the logged structs (lists) gives the same bytes as the column path (numpy).
    for row, b in zip(logged.to_pylist(), again):
        assert (None if row is None else encode_outputs(row)) == b


def test_encode_column_of_slices_and_chunks(tmp_path):
    logged = _write(tmp_path, "log", _answers() * 3)
    whole = encode_column(logged)
    col = logged.combine_chunks()
    assert encode_column(col.slice(5, 4)) == whole[5:9]
    assert encode_column(col.slice(2, 0)) == []
    import pyarrow as pa

    assert encode_column(pa.chunked_array([col.slice(0, 3), col.slice(3)])) == whole


_DTYPES = [d for d in NUMERIC if d != "BOOL"]


@settings(max_examples=60, deadline=None)
@given(dt=st.sampled_from(_DTYPES + ["BOOL", "BYTES"]), rows=st.integers(0, 4), cols=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_random_tensors_round_trip(dt, rows, cols, seed):
    rng = np.random.default_rng(seed)
    n = rows * cols
    if dt == "BYTES":
        contents = encode_bytes_tensor([rng.bytes(int(k)) for k in rng.integers(0, 9, n)])
    elif dt == "BOOL":
        contents = rng.integers(0, 2, n).astype(np.bool_).tobytes()
    else:
        contents = rng.bytes(n * np.dtype(NUMERIC[dt].dtype).itemsize)  # any bit pattern: NaNs, subnormals
        if dt == "FP16":  # NaN payloads do not survive fp32 and back: quiet them to the canonical one
            a = np.frombuffer(contents, np.float16).copy()
            a[np.isnan(a)] = np.nan
            contents = a.tobytes()
    raw = _response([("y", dt, [rows, cols], contents)])
    logged = batch.tensors([raw])
    back = encode_column(logged)[0]
    assert bytes(scan_response(back)[0][3]) == contents
    assert _same(batch.tensors([back]).to_pylist(), logged.to_pylist())


@pytest.mark.parametrize(
    ("shadow", "want"),
    [
        ([("a", "FP32", [2, 2]), ("b", "INT64", [2])], "compared"),
        ([("b", "INT64", [2]), ("a", "FP32", [2, 2])], "compared"),  # another order: still comparable
        ([("a", "FP32", [2, 3]), ("b", "INT64", [2])], "contract_mismatch"),  # shape
        ([("a", "FP64", [2, 2]), ("b", "INT64", [2])], "contract_mismatch"),  # datatype
        ([("a", "FP32", [2, 2])], "contract_mismatch"),  # an output missing
    ],
)
def test_pair_of(shadow, want):
    live = _response([("a", "FP32", [2, 2], b"\x00" * 16), ("b", "INT64", [2], b"\x00" * 16)])
    assert pair_of(live, _response([(n, d, s, b"") for n, d, s in shadow])) == want
    assert pair_of(live, b"\xff\xff") == "contract_mismatch"  # malformed
