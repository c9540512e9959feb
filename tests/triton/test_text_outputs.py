"""Text outputs against the real Triton: BYTES answers of text_echo (unary, batched) and
text_stream (decoupled, a token per response) go through a front, live v1 and shadow v2, and the
report's exact-match rate, normalised edit distance and lengths, overall and per stream response
position, equal the figures computed here from the same answers (read from Triton directly, each
checked against the model's documented rule) with a plain dynamic-programme Levenshtein. The
snapshot of the front merges with itself exactly (counts double, means stay)."""

from __future__ import annotations

import math
import time

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb

from shadowgrpc import snapshot
from shadowgrpc.report import build_report, output_pb
from tests.frontctl import front_for
from tests.kserve import INFER
from tests.triton.test_streams import STREAM, _per_request
from tests.unit.test_text_compare import dp

pytestmark = pytest.mark.triton

CAP = 4096  # text.MAX_UNITS, restated: the test's own reading of the rule


def lev(a, b) -> int:
    """Levenshtein: common prefix and suffix stripped (the oracle's full programme is slow on the
    4096-unit rows), then tests/unit/test_text_compare.py's dynamic-programme oracle."""
    while a and b and a[0] == b[0]:
        a, b = a[1:], b[1:]
    while a and b and a[-1] == b[-1]:
        a, b = a[:-1], b[:-1]
    return dp(a, b)


def expected(pairs: list[tuple[bytes, bytes]]) -> dict:
    """text.py's figures, computed independently from (live, shadow) element pairs."""
    norm, llen, slen, ratios, invalid, trunc = [], [], [], [], [0, 0], 0
    for a, b in pairs:
        units = []
        for k, x in enumerate((a, b)):
            try:
                units.append(x.decode("utf-8"))
            except UnicodeDecodeError:
                invalid[k] += 1
        ua, ub = units if len(units) == 2 else (a, b)  # either side not UTF-8: bytes
        trunc += len(ua) > CAP or len(ub) > CAP
        ca, cb = ua[:CAP], ub[:CAP]
        d = lev(ca, cb)
        norm.append(d / max(len(ca), len(cb)) if d else 0.0)
        llen.append(len(ua))
        slen.append(len(ub))
        if ua:
            ratios.append(len(ub) / len(ua))
    n = len(pairs)
    return {
        "rows": n,
        "exact": sum(a == b for a, b in pairs),
        "edit_mean": math.fsum(norm) / n,
        "edit_max": max(norm),
        "live_mean": sum(llen) / n,
        "shadow_mean": sum(slen) / n,
        "live_max": max(llen),
        "shadow_max": max(slen),
        "ratio_mean": math.fsum(ratios) / len(ratios),
        "ratio_rows": len(ratios),
        "live_empty": llen.count(0),
        "shadow_empty": slen.count(0),
        "invalid": invalid,
        "truncated": trunc,
    }


def check(t, want: dict) -> None:  # t: a shadow_pb2.TextComparison
    assert (t.rows, t.exact_matches) == (want["rows"], want["exact"])
    assert t.exact_match_rate == want["exact"] / want["rows"]
    assert t.edit_distance_mean == pytest.approx(want["edit_mean"], rel=1e-12, abs=1e-15)
    assert t.edit_distance_max == pytest.approx(want["edit_max"], rel=1e-15)
    assert (t.live_length_mean, t.shadow_length_mean) == (want["live_mean"], want["shadow_mean"])
    assert (t.live_length_max, t.shadow_length_max) == (want["live_max"], want["shadow_max"])
    assert t.length_ratio_rows == want["ratio_rows"] and t.length_ratio_mean == pytest.approx(want["ratio_mean"], rel=1e-12)
    assert (t.live_empty, t.shadow_empty) == (want["live_empty"], want["shadow_empty"])
    assert [t.live_invalid_utf8, t.shadow_invalid_utf8] == want["invalid"] and t.truncated_rows == want["truncated"]


def rewrite(text: bytes) -> bytes:  # text_echo v2's documented rule
    out = text.replace(b"colour", b"color")
    return out + b" [v2]" if len(text) % 3 == 0 else out


TEXTS = [
    b"the colour of money", b"", b"caf\xc3\xa9 cr\xc3\xa8me", b"\xe6\xbc\xa2\xe5\xad\x97 \xf0\x9f\x98\x80 ok", b"abc",
    b"\xff\xfe not utf-8 colour", b"unchanged.", b"colour" * 3, b"colour " + b"x" * 4493, b"short",
    b"one two three four five", b"y" * 5000,
]  # fmt: skip


def echo_request(texts: list[bytes], rid: str, version: str = "1") -> bytes:
    req = pb.ModelInferRequest(model_name="text_echo", model_version=version, id=rid)
    req.inputs.add(name="TEXT", datatype="BYTES", shape=[len(texts), 1])
    req.raw_input_contents.append(b"".join(len(t).to_bytes(4, "little") + t for t in texts))
    return req.SerializeToString()


def answers(raw: bytes) -> list[bytes]:
    r = pb.ModelInferResponse.FromString(raw)
    buf, out, pos = r.raw_output_contents[0], [], 0
    while pos < len(buf):
        n = int.from_bytes(buf[pos : pos + 4], "little")
        out.append(buf[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def text_report(ft, model: str):
    rep = build_report(ft.router.state, model)
    (s,) = rep.routes[0].shadows
    return s, {o.name: o for o in s.outputs}


def test_text_outputs_are_compared_by_exact_match_edit_distance_and_lengths(triton):
    ft = front_for(triton.grpc_address, [{"model": "text_echo", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]}])
    batches = [TEXTS[i : i + 3] for i in range(0, len(TEXTS), 3)] + [TEXTS[:1], TEXTS[5:6]]
    tag = time.time_ns()
    try:
        with grpc.insecure_channel(ft.address) as chf, grpc.insecure_channel(triton.grpc_address) as chd:
            via, direct = (ch.unary_unary(INFER, request_serializer=None, response_deserializer=None) for ch in (chf, chd))
            pairs = []
            for k, batch in enumerate(batches):
                live = answers(via(echo_request(batch, f"t{k}-{tag}"), timeout=20))
                shadow = answers(direct(echo_request(batch, f"d{k}-{tag}", version="2"), timeout=20))
                assert live == batch and shadow == [rewrite(t) for t in batch]  # the models' rules hold
                pairs += list(zip(live, shadow))
        ft.drain()
        s, outs = text_report(ft, "text_echo")
        o = outs["ANSWER"]
        want = expected(pairs)
        assert s.compared == len(batches) and s.contract_mismatch == 0 and not s.errors
        assert o.kind == "text" and o.rows == want["rows"] == 14 and o.agreed_rows == want["exact"]
        assert o.agreement == o.text.exact_match_rate  # the report's agreement column is the exact-match rate
        check(o.text, want)
        assert want["exact"] == 5 and want["invalid"] == [2, 2] and want["truncated"] == 2 and want["live_empty"] == 1
        assert not o.text_positions  # unary: no response positions
        # snapshots: the front's state, merged with itself, doubles the counts and keeps the figures
        snap = snapshot.snapshot(ft.router.state)
        merged = snapshot.merge([snapshot.load(snap), snapshot.load(snap)])
        (m,) = [x for x in build_report(merged, "text_echo").routes[0].shadows[0].outputs if x.name == "ANSWER"]
        assert (m.text.rows, m.text.exact_matches, m.text.byte_rows) == (2 * o.text.rows, 2 * o.text.exact_matches, 2 * o.text.byte_rows)
        assert (m.text.edit_distance_mean, m.text.length_ratio_mean, m.text.edit_distance_p90) == (
            o.text.edit_distance_mean, o.text.length_ratio_mean, o.text.edit_distance_p90)  # fmt: skip
    finally:
        ft.stop()


PROMPTS = [b"a b c d e", b"the quick brown fox", b"one", b"", b"x y z", b"\xc3\xa9t\xc3\xa9 est l\xc3\xa0 encore aujourd'hui",
           b" ".join(b"w%d" % k for k in range(20))]  # 20 tokens: positions 16 .. 19 share the overflow bucket
OVERFLOW = 16  # text.STREAM_POSITIONS, restated


def stream_request(text: bytes, rid: str, version: str = "1") -> bytes:
    req = pb.ModelInferRequest(model_name="text_stream", model_version=version, id=rid)
    req.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(len(text).to_bytes(4, "little") + text)
    req.parameters["triton_enable_empty_final_response"].bool_param = True
    return req.SerializeToString()


def stream_tokens(address: str, msgs: list[bytes]) -> dict[str, list[bytes]]:
    """Each request id's tokens, in order (the empty final responses left out)."""
    with grpc.insecure_channel(address) as ch:
        call = ch.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
        got = list(call(iter(msgs), timeout=30))
    out = {}
    for rid, raws in _per_request(got).items():
        resps = [pb.ModelStreamInferResponse.FromString(r).infer_response for r in raws]
        out[rid] = [answers(r.SerializeToString())[0] for r in resps if r.outputs]
    return out


def test_stream_text_outputs_are_compared_per_response_position(triton):
    ft = front_for(triton.grpc_address, [{"model": "text_stream", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]}])
    tag = time.time_ns()
    try:
        live = stream_tokens(ft.address, [stream_request(p, f"p{i}-{tag}") for i, p in enumerate(PROMPTS)])
        shadow = stream_tokens(triton.grpc_address, [stream_request(p, f"p{i}-{tag}", "2") for i, p in enumerate(PROMPTS)])
        ft.drain()
        (ts,) = ft.router.state.routes["text_stream"].shadows
        s, o = ts.stats, output_pb("TOKEN", ts.stats.outputs["TOKEN"], ())
    finally:
        ft.stop()
    for i, p in enumerate(PROMPTS):  # the model's rule: v1 the words, v2 every third upper-cased and <eos> after 4+
        words = p.split()
        assert live.get(f"p{i}-{tag}", []) == words
        v2 = [w.upper() if k % 3 == 2 else w for k, w in enumerate(words)] + ([b"<eos>"] if len(words) >= 4 else [])
        assert shadow.get(f"p{i}-{tag}", []) == v2
    by_pos: dict[int, list] = {}
    for rid, toks in live.items():  # the pairs: each request's lists, up to the shorter one
        for k, pair in enumerate(zip(toks, shadow[rid])):
            by_pos.setdefault(min(k, OVERFLOW), []).append(pair)
    everything = [p for k in sorted(by_pos) for p in by_pos[k]]
    assert s.stream_responses_paired == len(everything) == 38 and s.stream_response_count_mismatch == 4
    check(o.text, expected(everything))
    assert [(x.position, x.and_later) for x in o.text_positions] == [(k, k == OVERFLOW) for k in range(OVERFLOW + 1)]
    assert o.text_positions[-1].text.rows == 4 and o.text_positions[-1].text.exact_matches == 3  # w17 upper-cased
    for x in o.text_positions:
        check(x.text, expected(by_pos[x.position]))
    assert [x.text.exact_match_rate for x in o.text_positions[:3]] == [1.0, 1.0, 0.0]  # the third word is upper-cased
