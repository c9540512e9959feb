"""Text outputs (kind "text", shadowgrpc/text.py): the edit-distance twins against each other and
against the textbook dynamic programme; the accumulator's figures against values computed here
from the same elements; exact merge and bytes; BYTES outputs through compare_responses (overall,
per slice bucket, per stream response position with its overflow bucket); snapshots, the report
and the config key."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as kserve

from shadowgrpc import report, report_text, snapshot, text
from shadowgrpc.compare import compare_responses
from shadowgrpc.config import ConfigError, Settings
from shadowgrpc.packing import encode_bytes_tensor
from shadowgrpc.sketches import _text_py
from shadowgrpc.stats import ShadowStats
from shadowgrpc.text import MAX_UNITS, STREAM_POSITIONS, TextAgreement, measure

TWINS = [pytest.param("c", marks=pytest.mark.c_extension), "py"]


@pytest.fixture(scope="module", params=TWINS)
def lev(request):
    name = "shadowgrpc.sketches._text_c" if request.param == "c" else "shadowgrpc.sketches._text_py"
    return importlib.import_module(name).levenshtein


def dp(a, b) -> int:
    """Levenshtein by the full dynamic programme: the oracle."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


ALPHABET = st.sampled_from("ab cé漢\U0001f600")
TEXTS = st.text(alphabet=ALPHABET, max_size=90) | st.text(max_size=40)


@settings(max_examples=300, deadline=None)
@given(a=TEXTS, b=TEXTS)
def test_levenshtein_twins_equal_the_dynamic_programme(lev, a: str, b: str) -> None:
    want = dp(a, b)
    assert lev(a, b) == want == lev(b, a)
    ab, bb = a.encode(), b.encode()
    assert lev(ab, bb) == dp(ab, bb)


@pytest.mark.c_extension
@settings(max_examples=200, deadline=None)
@given(a=st.text(alphabet=st.sampled_from("abc"), min_size=60, max_size=300), b=st.text(alphabet=st.sampled_from("abc"), min_size=60, max_size=300))
def test_levenshtein_compiled_equals_python_across_64_bit_words(a: str, b: str) -> None:
    from shadowgrpc.sketches import _text_c

    assert _text_c.levenshtein(a, b) == _text_py.levenshtein(a, b) == dp(a, b)


def test_levenshtein_known_values_and_errors(lev) -> None:
    assert lev("kitten", "sitting") == 3
    assert lev("", "") == 0 and lev("", "abc") == 3 and lev(b"abc", b"") == 3
    assert lev("flaw", "lawn") == 2
    assert lev("é", "e") == 1 and lev("é".encode(), b"e") == 2  # code points vs bytes
    long_a = "the quick brown fox " * 300  # 6000 code points: many words, distinct prefix/suffix
    long_b = long_a.replace("quick", "slow", 7)
    assert lev(long_a, long_b) == 7 * 5  # "quick" -> "slow": 4 substitutions + 1 deletion each
    for bad in (("a", b"a"), (1, 2), (None, None)):
        with pytest.raises(TypeError, match="two str or two bytes"):
            lev(*bad)


@pytest.mark.c_extension
def test_the_compiled_twin_is_the_one_used() -> None:
    assert text.TEXT_IMPLEMENTATION == "c"


def _expected(live: list[bytes], shadow: list[bytes]) -> dict:
    """The figures of text.py's rules, computed here without it."""
    rows = []
    for a, b in zip(live, shadow):
        try:
            sa, sb = a.decode(), b.decode()
        except UnicodeDecodeError:
            sa, sb = a, b
        ca, cb = sa[:MAX_UNITS], sb[:MAX_UNITS]
        d = dp(ca, cb) if a != b else 0
        rows.append((a == b, d / max(len(ca), len(cb)) if d else 0.0, len(sa), len(sb)))
    n = len(rows)
    ratios = [nb / na for _, _, na, nb in rows if na]
    return {
        "rows": n,
        "exact": sum(r[0] for r in rows),
        "edit_mean": math.fsum(r[1] for r in rows) / n,
        "edit_max": max(r[1] for r in rows),
        "live_mean": sum(r[2] for r in rows) / n,
        "shadow_mean": sum(r[3] for r in rows) / n,
        "ratio_mean": math.fsum(ratios) / len(ratios),
        "norm": [r[1] for r in rows],
    }


LIVE = [b"hello world", b"", b"caf\xc3\xa9", b"same", b"\xff\xfeabc", b"x" * 10]
SHADOW = [b"hello word", b"not empty", b"cafe", b"same", b"\xff\xfeabd", b""]


def test_accumulator_figures_equal_an_independent_computation() -> None:
    t = TextAgreement()
    t.add(measure(LIVE, SHADOW))
    want = _expected(LIVE, SHADOW)
    assert (t.count, t.within, t.invalid) == (want["rows"], want["exact"], 0)
    assert t.agreement == want["exact"] / want["rows"]
    assert t.edit_mean == pytest.approx(want["edit_mean"], rel=1e-15)
    assert t.edit_max == want["edit_max"] == 1.0
    assert t.live_len.mean == want["live_mean"] and t.shadow_len.mean == want["shadow_mean"]
    assert t.ratio_mean == pytest.approx(want["ratio_mean"], rel=1e-15)
    assert (t.live_empty, t.shadow_empty) == (1, 1)
    assert (t.live_invalid_utf8, t.shadow_invalid_utf8, t.byte_rows) == (1, 1, 1)
    assert t.live_len.max == 11 and t.live_len.quantile(1.0) == 11
    # "café" vs "cafe": 1 code point of 4 (as bytes it would be 2 of 5)
    assert measure([b"caf\xc3\xa9"], [b"cafe"])[0][1:3] == (1, 4)
    # the histogram: bin 0 holds the exact and zero-distance rows, bin k the distances in ((k-1)/100, k/100]
    assert sum(t.edit_hist) == t.count and t.edit_hist[0] == 1
    for d in want["norm"]:
        if d:
            assert t.edit_hist[math.ceil(d * 100)] >= 1
    assert t.edit_quantile(0.5) == min(math.ceil(sorted(want["norm"])[2] * 100) / 100, 1.0)


def test_long_texts_are_capped_and_counted() -> None:
    a = "a" * (MAX_UNITS + 100)
    b = "a" * MAX_UNITS + "b" * 100
    rows = measure([a.encode(), ("z" + a).encode()], [b.encode(), a.encode()])
    assert rows[0] == (False, 0, MAX_UNITS, MAX_UNITS + 100, MAX_UNITS + 100, True, True, True)  # same first 4096: distance 0
    assert rows[1][1] == 1 and rows[1][2] == MAX_UNITS and rows[1][7]
    t = TextAgreement()
    t.add(rows)
    assert t.truncated == 2 and t.within == 0 and t.live_len.max == MAX_UNITS + 101


def test_length_quantiles_are_bin_upper_bounds_within_a_sixteenth() -> None:
    s = text.LengthStats()
    values = list(range(0, 5000, 7))
    for v in values:
        s.add(v)
    for q in (0.1, 0.5, 0.9, 0.99):
        true = sorted(values)[max(1, math.ceil(q * len(values))) - 1]
        assert true <= s.quantile(q) <= true * (1 + 1 / 16)
    assert s.quantile(1.0) == max(values)


@settings(max_examples=50, deadline=None)
@given(items=st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=12)), min_size=2, max_size=30), cut=st.integers(0, 30))
def test_merge_of_parts_equals_the_whole_and_bytes_round_trip(items, cut: int) -> None:
    live, shadow = [a for a, _ in items], [b for _, b in items]
    whole, first, second = TextAgreement(), TextAgreement(), TextAgreement()
    whole.add(measure(live, shadow))
    first.add(measure(live[:cut], shadow[:cut]))
    second.add(measure(live[cut:], shadow[cut:]))
    second.merge(first)  # the other order: exact all the same
    assert second == whole
    assert TextAgreement.from_bytes(whole.to_bytes()) == whole
    assert second.edit_mean == whole.edit_mean and second.ratio_mean == whole.ratio_mean


def test_bad_bytes_are_refused_with_a_reason() -> None:
    good = TextAgreement()
    good.add(measure(LIVE, SHADOW))
    raw = good.to_bytes()
    for bad, match in ((b"XXXX" + raw[4:], "magic"), (raw[:4] + b"\x09\x00" + raw[6:], "format 9"), (raw[:-5], "bad TextAgreement"),
                       (raw.replace(b'"count":6', b'"count":7'), "does not fit")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            TextAgreement.from_bytes(bad)


def _response(*outputs: tuple[str, list[bytes]], shape: list[int] | None = None) -> bytes:
    r = kserve.ModelInferResponse(model_name="m")
    for name, items in outputs:
        r.outputs.add(name=name, datatype="BYTES", shape=shape or [len(items), 1])
        r.raw_output_contents.append(encode_bytes_tensor(items))
    return r.SerializeToString()


def test_bytes_outputs_are_compared_as_text_overall_per_slice_and_per_position() -> None:
    cfg = {"server": {"default_live": "127.0.0.1:1"},
           "routes": [{"model": "m", "shadows": [{"name": "v2"}], "slices": [{"name": "lang", "input": "lang", "values": ["en"]}]}]}  # fmt: skip
    route = Settings.from_dict(cfg).routes[0]
    s = ShadowStats()
    buckets = [np.array([0, 1, 0, 1, 2, 0], np.int16)]  # en, other, en, other, missing, en
    assert compare_responses(_response(("out", LIVE)), _response(("out", SHADOW)), s, route, buckets) is None  # text: no primary
    o = s.outputs["out"]
    assert o.kind == "text" and o.rows == 6 and o.agreed_rows == 1 and o.positions == []
    en = o.slices[0][0]
    assert (en.count, en.within) == (3, 0) and o.slices[0][1].count == 2 and o.slices[0][2].count == 1
    want = _expected([LIVE[i] for i in (0, 2, 5)], [SHADOW[i] for i in (0, 2, 5)])
    assert en.edit_mean == pytest.approx(want["edit_mean"], rel=1e-15)
    # a stream: positions 0 .. STREAM_POSITIONS - 1 one by one, later ones in the overflow bucket
    for pos in range(STREAM_POSITIONS + 3):
        s.stream_position = pos
        compare_responses(_response(("out", [b"tok%d" % pos])), _response(("out", [b"tok%d" % pos if pos % 2 else b"tik"])), s, route)
    s.stream_position = -1
    assert len(o.positions) == STREAM_POSITIONS + 1
    assert [p.count for p in o.positions] == [1] * STREAM_POSITIONS + [3]
    assert [p.within for p in o.positions[:4]] == [0, 1, 0, 1] and o.positions[-1].within == 1  # 16, 17, 18: 17 matches
    assert o.rows == 6 + STREAM_POSITIONS + 3
    # malformed BYTES contents from the shadow: its rows are invalid, nothing compared
    bad = kserve.ModelInferResponse.FromString(_response(("out", [b"abc"])))
    bad.raw_output_contents[0] = b"\x09\x00\x00\x00ab"
    compare_responses(_response(("out", [b"abc"])), bad.SerializeToString(), s, route)
    assert o.shadow_invalid == 1 and o.live_invalid == 0 and o.rows == 6 + STREAM_POSITIONS + 3


def test_snapshot_merge_and_report_of_text_outputs() -> None:
    route = Settings.from_dict({"server": {"default_live": "127.0.0.1:1"}, "routes": [{"model": "m", "shadows": [{"name": "v2"}]}]}).routes[0]
    one, a, b = ShadowStats(), ShadowStats(), ShadowStats()
    pairs = [(LIVE, SHADOW, -1), ([b"x", b"yy"], [b"x", b"y"], 0), ([b"abc"], [b"abd"], 1), ([b"q"], [b"q"], 40)]
    for k, (lv, sh, pos) in enumerate(pairs):
        for st_ in (one, a if k % 2 else b):
            st_.stream_position = pos
            compare_responses(_response(("out", lv)), _response(("out", sh)), st_, route)
    back = [snapshot._unshadow_stats(snapshot._shadow_stats(x)) for x in (a, b)]
    assert snapshot._merge_output(back[0].outputs["out"], back[1].outputs["out"], "here") == 0
    merged, whole = back[0].outputs["out"], one.outputs["out"]
    assert merged.paired == whole.paired and len(merged.positions) == len(whole.positions) == STREAM_POSITIONS + 1
    assert all(x == y for x, y in zip(merged.positions, whole.positions))
    oc = report.output_pb("out", merged, ())
    assert oc.kind == "text" and oc.agreement == oc.text.exact_match_rate == whole.paired.within / whole.paired.count
    assert oc.text.rows == 10 and oc.text.exact_matches == 3 and oc.text.live_invalid_utf8 == 1
    assert [(x.position, x.and_later, x.text.rows) for x in oc.text_positions] == [(0, False, 2), (1, False, 1), (STREAM_POSITIONS, True, 1)]
    assert oc.text.edit_distance_mean == pytest.approx(whole.paired.edit_mean) and sum(oc.text.edit_histogram) == 10
    lines = report_text.text_lines(oc)
    assert lines[0].startswith("lengths: live mean") and "not UTF-8 live 1 shadow 1" in lines[1]
    assert lines[-1].startswith("by response position: 0: exact 50.00%") and f"{STREAM_POSITIONS}+: exact 100.00%" in lines[-1]
    assert report_text._paired_text(oc).startswith("exact match 30.00% (3/10 elements)")


def test_config_kind_text() -> None:
    cfg = {"server": {"default_live": "127.0.0.1:1"}, "routes": [{"model": "m", "outputs": {"answer": {"kind": "text"}}}]}
    assert Settings.from_dict(cfg).routes[0].output_spec("answer").kind == "text"
    cfg["routes"][0]["outputs"]["answer"]["kind"] = "txt"
    with pytest.raises(ConfigError, match="text, got 'txt'"):
        Settings.from_dict(cfg)


def test_text_and_html_reports_show_text_outputs() -> None:
    pytest.importorskip("matplotlib")
    from shadowgrpc.report_html import render_html
    from shadowgrpc.state import FrontState

    settings = Settings.from_dict({"server": {"default_live": "127.0.0.1:1"}, "routes": [{"model": "m", "shadows": [{"name": "v2"}]}]})
    state = FrontState.for_routes(settings.routes, 0, 60.0, 1 << 20)
    ts = state.routes["m"].shadows[0]
    compare_responses(_response(("out", LIVE)), _response(("out", SHADOW)), ts.stats, settings.routes[0])
    ts.stats.stream_position = 2
    compare_responses(_response(("out", [b"tok"])), _response(("out", [b"tak"])), ts.stats, settings.routes[0])
    rep = report.build_report(state)
    (o,) = rep.routes[0].shadows[0].outputs
    assert o.kind == "text" and o.agreement == 1 / 7 and [x.position for x in o.text_positions] == [2]
    txt = report_text.format_report(rep)
    assert "out (text): exact match 14.29% (1/7 elements)" in txt and "mean |live-shadow|" not in txt
    assert "by response position: 2: exact 0.00% edit 0.3333 len 3.0/3.0 (1)" in txt
    page = render_html(state, rep)
    assert "<b>out</b> (text): exact match 14.29% (1/7 elements)" in page and "<br>by response position: 2: exact 0.00%" in page
