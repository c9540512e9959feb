"""sequences.py without Triton: the wire reader of the sequence parameters (against protobuf's own
serialization) and the per-target sequence table (whole or nothing, broken sequences excluded,
bounds counted)."""

from __future__ import annotations

import pytest
from tritonclient.grpc import service_pb2 as kserve

from shadowgrpc.sequences import SequenceTable, SequenceTables, scan_sequence
from shadowgrpc.stats import ShadowStats


def _request(sid=None, start=None, end=None, string=False, extra=True) -> bytes:
    req = kserve.ModelInferRequest(model_name="seq_sum", id="r1")
    if extra:
        req.parameters["priority"].int64_param = 3
        req.inputs.add(name="INPUT", datatype="INT32", shape=[1, 1]).parameters["x"].string_param = "sequence_id"
        req.raw_input_contents.append(b"\x01\x00\x00\x00" * 1000)
    if sid is not None:
        if string:
            req.parameters["sequence_id"].string_param = sid
        else:
            req.parameters["sequence_id"].int64_param = sid
    if start is not None:
        req.parameters["sequence_start"].bool_param = start
    if end is not None:
        req.parameters["sequence_end"].bool_param = end
    return req.SerializeToString()


@pytest.mark.parametrize(
    "kw, want",
    [
        ({"sid": 42, "start": True}, (42, True, False)),
        ({"sid": 42, "end": True}, (42, False, True)),
        ({"sid": 7}, (7, False, False)),
        ({"sid": 2**63 - 1, "start": True, "end": True}, (2**63 - 1, True, True)),
        ({"sid": -5}, (-5, False, False)),
        ({"sid": "abc", "string": True, "start": True}, ("abc", True, False)),
        ({"sid": "", "string": True, "start": True}, (None, True, False)),
        ({"sid": 0, "start": True}, (None, True, False)),
        ({"start": False, "end": False}, (None, False, False)),
        ({}, (None, False, False)),
        ({"sid": 3, "extra": False}, (3, False, False)),
    ],
)
def test_scan_sequence_reads_the_parameters(kw, want):
    assert scan_sequence(_request(**kw)) == want
    assert scan_sequence(memoryview(_request(**kw))) == want


def test_scan_sequence_last_entry_wins_and_wrong_types_are_no_sequence():
    base = _request(sid=1, start=True)
    later = kserve.ModelInferRequest()
    later.parameters["sequence_id"].string_param = "later"
    later.parameters["sequence_start"].bool_param = False
    assert scan_sequence(base + later.SerializeToString()) == ("later", False, False)
    odd = kserve.ModelInferRequest()
    odd.parameters["sequence_id"].double_param = 4.0
    odd.parameters["sequence_start"].int64_param = 1  # not a bool_param: not a start
    assert scan_sequence(odd.SerializeToString()) == (None, False, False)
    u = kserve.ModelInferRequest()
    u.parameters["sequence_id"].uint64_param = 2**64 - 1
    assert scan_sequence(u.SerializeToString()) == (2**64 - 1, False, False)


@pytest.mark.parametrize("bad", [b"\x22\x05\x0a\x03ab", b"\x22\x02\x08\x01", b"\x22", b"\xff"])
def test_scan_sequence_rejects_malformed_bytes(bad):
    with pytest.raises(ValueError):
        scan_sequence(_request(sid=1) + bad)


def _table(**kw):
    s = ShadowStats()
    return s, SequenceTable(s, **kw)


def _run(table, sid, n, fail_at=None):
    """Admit, send and answer an n-request sequence; returns the pairs compared at the end."""
    out = []
    for i in range(n):
        seq = table.admit(sid, i == 0, i == n - 1)
        if seq is None:
            continue
        table.sent(seq)
        if i == fail_at:
            table.failed(seq)
        else:
            out += table.hold(seq, (sid, i), 10)
    return out


def test_a_whole_sequence_is_compared_at_its_end_in_order():
    s, t = _table()
    seq = t.admit(1, True, False)
    t.sent(seq)
    assert t.hold(seq, ("a",), 10) == []
    seq2 = t.admit(1, False, True)
    assert seq2 is seq
    t.sent(seq)
    assert t.hold(seq, ("b",), 10) == [("a",), ("b",)]
    assert (s.sequences_mirrored, s.sequences_shed_midway, s.sequence_requests_excluded) == (1, 0, 0)
    assert len(t) == 0 and t.held_bytes == 0


def test_end_answered_before_earlier_steps_waits_for_them():
    s, t = _table()
    a = t.admit(9, True, False)
    t.sent(a)
    b = t.admit(9, False, True)
    t.sent(b)
    assert t.hold(b, ("end",), 1) == []  # the start is still in flight
    assert t.hold(a, ("start",), 1) == [("end",), ("start",)]


def test_a_sequence_first_seen_midway_is_not_mirrored():
    s, t = _table()
    assert t.admit(5, False, False) is None
    assert t.admit(5, False, True) is None
    assert t.seen_midway == 1 and s.sequences_mirrored == 0 and len(t) == 0
    assert t.admit(5, True, False) is not None  # a new start is mirrored


def test_shed_midway_breaks_the_sequence_and_excludes_every_request():
    s, t = _table()
    seq = t.admit(1, True, False)
    t.sent(seq)
    assert t.hold(seq, ("a",), 10) == []
    seq = t.admit(1, False, False)
    t.not_sent(seq)  # shed
    assert t.held_bytes == 0
    assert t.admit(1, False, False) is None
    assert t.admit(1, False, True) is None
    assert (s.sequences_mirrored, s.sequences_shed_midway, s.sequence_requests_excluded) == (1, 1, 4)
    assert len(t) == 0


def test_a_shed_start_means_not_mirrored_at_all():
    s, t = _table()
    seq = t.admit(1, True, False)
    t.not_sent(seq)
    assert t.admit(1, False, False) is None and t.admit(1, False, True) is None
    assert (s.sequences_mirrored, s.sequences_shed_midway, s.sequence_requests_excluded) == (0, 0, 0)
    assert len(t) == 0


def test_a_failed_shadow_call_excludes_the_sequence():
    s, t = _table()
    assert _run(t, 3, 5, fail_at=2) == []
    assert (s.sequences_mirrored, s.sequences_shed_midway, s.sequence_requests_excluded) == (1, 1, 5)
    assert _run(t, 4, 3) == [(4, 0), (4, 1), (4, 2)]


def test_held_pairs_are_bounded():
    s, t = _table(max_pairs=3)
    assert _run(t, 1, 4) == []
    assert t.over_bound == 1 and s.sequences_shed_midway == 1 and s.sequence_requests_excluded == 4
    s, t = _table(max_bytes=25)
    assert _run(t, 1, 3) == []  # 3 x 10 bytes > 25
    assert t.over_bound == 1 and t.held_bytes == 0
    assert _run(t, 2, 2) == [(2, 0), (2, 1)]


def test_the_table_is_bounded_and_idle_sequences_are_evicted():
    now = [0.0]
    s, t = _table(max_sequences=2, idle_s=10.0, clock=lambda: now[0])
    for sid in (1, 2, 3):
        t.sent(t.admit(sid, True, False))
    assert len(t) == 2 and t.evicted == 1 and s.sequences_shed_midway == 1
    assert t.admit(1, False, True) is None and t.seen_midway == 1  # evicted: its end is midway
    now[0] = 100.0
    t.sent(t.admit(4, True, False))
    assert len(t) == 1 and t.evicted == 3 and s.sequences_shed_midway == 3


def test_a_new_start_on_an_open_id_ends_the_old_sequence():
    s, t = _table()
    old = t.admit(1, True, False)
    t.sent(old)
    new = t.admit(1, True, True)
    assert new is not old and s.sequences_shed_midway == 1
    t.sent(new)
    assert t.hold(new, ("x",), 1) == [("x",)]
    assert t.hold(old, ("late",), 1) == []  # the old one's late answer is dropped


def test_tables_are_per_route_and_target_and_follow_the_stats_object():
    tables = SequenceTables(max_pairs=7)
    a = ShadowStats()
    t = tables.table("seq_sum", "v2", a)
    assert tables.table("seq_sum", "v2", a) is t and t.max_pairs == 7
    assert tables.table("other", "v2", a) is not t
    assert tables.table("seq_sum", "v2", ShadowStats()) is not t
