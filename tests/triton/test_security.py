"""Security against the real Triton (issue 13 item 5): the admin API closed to callers without the
token or the client certificate, TLS/mTLS on the data port, the admin port and to Triton
(tritonserver itself serving mTLS: --grpc-use-ssl / --grpc-use-ssl-mutual), certificates reloaded
without a restart, the metadata limit, shadows that never carry the caller's credentials (seen by
Triton: --grpc-header-forward-pattern hands the headers to the fraud_recorder model as request
parameters), the paired log's drop/hash/redact read back with DuckDB, and a report without inputs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import signal
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2

from shadowgrpc.client import admin_credentials, fetch_report
from shadowgrpc.config import ConfigError
from shadowgrpc.v1 import shadow_pb2
from tests.certs import leaf, make_pki, peer_cert
from tests.fixtures_triton import TEST_MODELS, copy_models, require_pytriton
from tests.frontctl import front_for
from tests.serveproc import serve

pytestmark = [pytest.mark.triton, pytest.mark.once]

TOKEN = "s3cret-admin-token-0123456789"
LOG_KEY = b"log-hash-key-0123456789abcdef"
SERVICE = shadow_pb2.DESCRIPTOR.services_by_name["ShadowControl"]
SECRET_HEADERS = (("authorization", "Bearer caller-secret"), ("cookie", "session=caller-secret"), ("x-api-key", "caller-secret"))
FORWARD = "authorization|cookie|x-api-key|x-shadow-request|traceparent"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_triton(tmp_path_factory, pki):
    """An own tritonserver serving fraud and fraud_recorder over mTLS (client certificates signed by
    the test CA), forwarding the named headers to the models as request parameters."""
    require_pytriton()
    from shadowgrpc.local import EmbeddedTriton, example_repository

    repo = copy_models(tmp_path_factory.mktemp("tls-repo"), example_repository(), TEST_MODELS, only=["fraud", "fraud_recorder"])
    state = tmp_path_factory.mktemp("tls-triton")
    recorder = state / "recorder.jsonl"
    args = ["--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true", f"--grpc-server-cert={pki.server[0]}", f"--grpc-server-key={pki.server[1]}",
            f"--grpc-root-cert={pki.ca}", f"--grpc-header-forward-pattern={FORWARD}"]  # fmt: skip
    server = EmbeddedTriton(repo, log_path=state / "tritonserver.log", env={"SHADOWGRPC_RECORDER_PATH": str(recorder)}, extra_args=args)
    server.start()
    try:
        yield server, recorder
    finally:
        server.stop(timeout=1.0)  # nothing to keep: SIGKILL after 1 s


def _features(n: int = 2, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-3, 3, size=(n, 8)).astype(np.float32)


def _infer_request(model: str, x: np.ndarray, rid: str = "") -> bytes:
    req = service_pb2.ModelInferRequest(model_name=model, id=rid)
    t = req.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
    del t  # raw contents below
    req.raw_input_contents.append(x.tobytes())
    return req.SerializeToString()


def _call(channel: grpc.Channel, method, md):
    """One ShadowControl call with an empty request (no messages for the client-streaming ones)."""
    path = f"/{SERVICE.full_name}/{method.name}"
    if method.client_streaming:
        return channel.stream_unary(path)(iter(()), timeout=10, metadata=md)
    return channel.unary_unary(path)(b"", timeout=10, metadata=md)


def _code(fn) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


# -- admin token ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_front(triton, tmp_path_factory):
    """Session Triton (plaintext); admin token from a file; the paired log with drop/hash/redact."""
    d = tmp_path_factory.mktemp("token-front")
    (d / "token").write_text(TOKEN + "\n")
    (d / "log.key").write_bytes(LOG_KEY)
    routes = [
        {"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]},
        {"model": "basket_value", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]},
        {"model": "merchant_intent", "live": {"version": "1"}, "shadows": [{"name": "v2", "version": "2"}]},
    ]
    log = {"path": str(d / "log"), "flush_s": 0.2, "keep_inputs": True,
           "redact": {"hash": ["probability"], "redact": ["value"], "drop": ["scores", "features"], "hash_key_file": str(d / "log.key")}}  # fmt: skip
    ft = front_for(triton.grpc_address, routes, log=log, admin_token_file=str(d / "token"))
    yield ft, d
    ft.stop()


def test_admin_every_method_needs_the_token(token_front, tmp_path, capsys):
    ft, d = token_front
    with grpc.insecure_channel(ft.admin_address) as ch:
        for m in SERVICE.methods:
            for md in (None, (("authorization", "Bearer wrong-token-0123456789"),), (("authorization", TOKEN),)):
                assert _code(lambda: _call(ch, m, md)) == grpc.StatusCode.UNAUTHENTICATED, (m.name, md)
            good = _code(lambda: _call(ch, m, (("authorization", f"Bearer {TOKEN}"),)))
            assert good != grpc.StatusCode.UNAUTHENTICATED, m.name
            if m.name in ("GetReport", "ListRoutes", "RecordOutcomes", "ReportPairs"):
                assert good == grpc.StatusCode.OK, (m.name, good)
        # health stays open (it says SERVING, nothing else)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    # the client library and the CLI
    with pytest.raises(grpc.RpcError) as e:
        fetch_report(ft.admin_address)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert [r.model for r in fetch_report(ft.admin_address, token=TOKEN).routes] == ["fraud", "basket_value", "merchant_intent"]
    from shadowgrpc.cli import main

    assert main(["report", "--target", ft.admin_address]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert main(["report", "--target", ft.admin_address, "--token-file", str(d / "token"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["routes"][0]["model"] == "fraud"


def test_paired_log_drop_hash_redact_and_report_without_inputs(token_front):
    import duckdb

    ft, d = token_front
    x = _features(3, seed=11)
    x4 = np.ascontiguousarray(x[:, :4]) * 10
    client = tc.InferenceServerClient(ft.address)
    live = {}
    for model, xs in (("fraud", x), ("basket_value", x4)):
        inp = tc.InferInput("features", list(xs.shape), "FP32")
        inp.set_data_from_numpy(xs)
        r = client.infer(model, [inp], request_id=f"{model}-1")
        live[model] = r.as_numpy("probability" if model == "fraud" else "value")
    text = tc.InferInput("text", [2, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"coffee shop"], [b"airline ticket"]], dtype=object))
    client.infer("merchant_intent", [text], request_id="intent-1")
    client.close()
    ft.drain()
    ft.flush_log()
    rows = duckdb.sql(
        f"select request_id, live_outputs, shadow_outputs, request from read_parquet('{d}/log/pairs/**/*.parquet', hive_partitioning=true) order by request_id"
    ).fetchall()
    by_id = {r[0]: r for r in rows}
    assert set(by_id) == {"fraud-1", "basket_value-1", "intent-1"}
    # hash: one keyed SHA-256 per element of live's answer
    (t,) = by_id["fraud-1"][1]
    assert t["name"] == "probability" and t["datatype"] == "HMAC-SHA256" and t["fp32"] is None
    want = [hmac.new(LOG_KEY, np.float32(v).tobytes(), hashlib.sha256).digest() for v in live["fraud"].ravel()]
    assert list(t["bytes"]) == want and list(t["shape"]) == list(live["fraud"].shape)
    assert all(o["datatype"] == "HMAC-SHA256" for o in by_id["fraud-1"][2])
    # redact: a marker, no values
    (t,) = by_id["basket_value-1"][1]
    assert t["datatype"] == "REDACTED" and list(t["bytes"]) == [b"[REDACTED]"] and t["fp32"] is None
    # drop: the output is gone (merchant_intent's only output)
    assert by_id["intent-1"][1] == [] and by_id["intent-1"][2] == []
    # keep_inputs: a configured input is not in the kept request bytes; the others are
    for rid, xs in (("fraud-1", x), ("basket_value-1", x4)):
        req = service_pb2.ModelInferRequest.FromString(by_id[rid][3])
        assert [i.name for i in req.inputs] == [] and xs.tobytes() not in by_id[rid][3]
    assert [i.name for i in service_pb2.ModelInferRequest.FromString(by_id["intent-1"][3]).inputs] == ["text"]
    # the report (with its full state snapshot) holds no request input: neither the features' bytes nor a value
    rep = fetch_report(ft.admin_address, token=TOKEN, snapshot=True)
    blob = rep.SerializeToString()
    assert x.tobytes() not in blob and not any(np.float32(v).tobytes() in blob for v in x.ravel()[:6])
    assert b"coffee shop" not in blob and b"airline ticket" not in blob


def test_client_mirror_reports_with_the_token(triton, token_front):
    """The client-side mirror's reports (ReportPairs) to a token-protected admin port: acknowledged
    with control_metadata carrying the token, refused (counted, never raised to the caller) without."""
    from shadowgrpc.client import ShadowMirror, mirror_tritonclient

    ft, _ = token_front
    x = _features(2, seed=13)
    for md, want in (((("authorization", f"Bearer {TOKEN}"),), 3), ((), 0)):
        mirror = ShadowMirror(triton.grpc_address, ft.admin_address, "fraud", "v2", model="fraud", version="2", control_metadata=md)
        with tc.InferenceServerClient(triton.grpc_address) as client:
            mirror_tritonclient(client, mirror)
            inp = tc.InferInput("features", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            for i in range(3):
                client.infer("fraud", [inp], model_version="1", request_id=f"cm-{want}-{i}", client_timeout=10)
        mirror.close(10)
        st = mirror.stats()
        assert (st["sent"], st["ok"], st["acknowledged"]) == (3, 3, want), st


# -- mTLS on the data and admin ports ------------------------------------------------------------
def test_mtls_data_and_admin_ports(triton, pki, tmp_path):
    tls = {"cert": str(pki.server[0]), "key": str(pki.server[1]), "client_ca": str(pki.ca)}
    ft = front_for(triton.grpc_address, [{"model": "fraud", "live": {"version": "1"}}], tls=tls, admin_tls=tls)
    try:
        x = _features()
        ca, cert, key = pki.ca.read_bytes(), pki.client[0].read_bytes(), pki.client[1].read_bytes()
        c = tc.InferenceServerClient(ft.address, ssl=True, root_certificates=str(pki.ca), private_key=str(pki.client[1]), certificate_chain=str(pki.client[0]))
        inp = tc.InferInput("features", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = c.infer("fraud", [inp]).as_numpy("probability")
        c.close()
        direct = tc.InferenceServerClient(triton.grpc_address)
        want = direct.infer("fraud", [inp], model_version="1").as_numpy("probability")
        direct.close()
        np.testing.assert_array_equal(got, want)
        # raw grpc: with the client certificate OK; without one, or with one of another CA: no connection
        creds = {"ok": grpc.ssl_channel_credentials(ca, key, cert), "none": grpc.ssl_channel_credentials(ca),
                 "rogue": grpc.ssl_channel_credentials(ca, pki.rogue_client[1].read_bytes(), pki.rogue_client[0].read_bytes())}  # fmt: skip
        for name, cr in creds.items():
            with grpc.secure_channel(ft.address, cr) as ch:
                call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
                code = _code(lambda: call(_infer_request("fraud", x), timeout=5))
            assert code == (grpc.StatusCode.OK if name == "ok" else grpc.StatusCode.UNAVAILABLE), name
        with grpc.insecure_channel(ft.address) as ch:  # plaintext to a TLS port
            assert _code(lambda: ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")(_infer_request("fraud", x), timeout=5)) == grpc.StatusCode.UNAVAILABLE
        # the admin port: mTLS is its authentication (no token configured)
        assert fetch_report(ft.admin_address, credentials=admin_credentials(str(pki.ca), str(pki.client[0]), str(pki.client[1]))).routes[0].model == "fraud"
        for cr in (admin_credentials(str(pki.ca)), admin_credentials(str(pki.ca), str(pki.rogue_client[0]), str(pki.rogue_client[1]))):
            with pytest.raises(grpc.RpcError) as e:
                fetch_report(ft.admin_address, credentials=cr, timeout=3)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        ft.stop()


# -- TLS to Triton, reload, shadow metadata, metadata limit --------------------------------------
@pytest.fixture(scope="module")
def tls_front(tls_triton, pki, tmp_path_factory):
    """A front with a TLS data port (certificate files it may reload) in front of the mTLS Triton."""
    triton, recorder = tls_triton
    d = tmp_path_factory.mktemp("tls-front")
    cert, key = d / "front.pem", d / "front.key"
    shutil.copy(pki.server[0], cert)
    shutil.copy(pki.server[1], key)
    routes = [
        {"model": "fraud", "live": {"version": "1"}, "shadows": [{"name": "rec", "model": "fraud_recorder"}]},
        {"model": "fraud_recorder"},  # live itself: shows what Triton forwards of a live call
    ]
    upstream = {"ca": str(pki.ca), "cert": str(pki.client[0]), "key": str(pki.client[1])}
    ft = front_for(triton.grpc_address, routes, tls={"cert": str(cert), "key": str(key)}, upstream_tls=upstream, max_metadata_kb=4)
    yield ft, triton, recorder, d
    ft.stop()


def _tls_client(ft, pki):
    return tc.InferenceServerClient(ft.address, ssl=True, root_certificates=str(pki.ca))


def test_tls_data_port_and_upstream_mtls(tls_front, pki):
    ft, triton, _, _ = tls_front
    x = _features(2, seed=3)
    inp = tc.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    c = _tls_client(ft, pki)
    got = c.infer("fraud", [inp]).as_numpy("probability")
    c.close()
    direct = tc.InferenceServerClient(triton.grpc_address, ssl=True, root_certificates=str(pki.ca), private_key=str(pki.client[1]), certificate_chain=str(pki.client[0]))
    np.testing.assert_array_equal(got, direct.infer("fraud", [inp], model_version="1").as_numpy("probability"))
    direct.close()
    # Triton refuses a client without the certificate: the front's upstream really is mTLS
    with grpc.secure_channel(triton.grpc_address, grpc.ssl_channel_credentials(pki.ca.read_bytes())) as ch:
        assert _code(lambda: ch.unary_unary("/inference.GRPCInferenceService/ServerLive")(b"", timeout=5)) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(ft.address, grpc.ssl_channel_credentials(pki.ca.read_bytes())) as ch:  # raw grpc over TLS
        raw = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")(_infer_request("fraud", x), timeout=5)
    np.testing.assert_array_equal(np.frombuffer(service_pb2.ModelInferResponse.FromString(raw).raw_output_contents[0], np.float32).reshape(2, 2), got)


def test_shadow_never_carries_the_callers_credentials(tls_front, pki):
    ft, _, recorder, _ = tls_front
    start = recorder.stat().st_size if recorder.exists() else 0
    md = (*SECRET_HEADERS, ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
    x = _features(1, seed=5)
    inp = tc.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    c = _tls_client(ft, pki)
    c.infer("fraud", [inp], request_id="unary-1", headers=dict(md))
    c.infer("fraud_recorder", [inp], request_id="live-1", headers=dict(md))
    # a stream: its shadow stream forwards the same allow-list
    import queue

    results: queue.Queue = queue.Queue()
    c.start_stream(lambda result, error: results.put((result, error)), headers=dict(md))
    c.async_stream_infer("fraud", [inp], request_id="stream-1")
    r, e = results.get(timeout=10)
    assert e is None
    c.stop_stream()
    c.close()
    ft.drain()
    lines = {}
    deadline = time.monotonic() + 10
    while set(lines) != {"unary-1", "live-1", "stream-1"} and time.monotonic() < deadline:
        lines = {j["request_id"]: j["parameters"] for j in map(json.loads, recorder.read_bytes()[start:].decode().splitlines())}
        time.sleep(0.05)
    assert set(lines) == {"unary-1", "live-1", "stream-1"}, lines
    # live: Triton forwards every named header (so their absence below is what the front sent)
    assert {k: lines["live-1"].get(k) for k, _ in SECRET_HEADERS} == dict(SECRET_HEADERS)
    for rid in ("unary-1", "stream-1"):
        p = lines[rid]
        assert not {k for k, _ in SECRET_HEADERS} & set(p), (rid, p)
        assert p.get("x-shadow-request") == "1" and p.get("traceparent") == md[-1][1], (rid, p)


def test_metadata_over_the_limit(tls_front, pki):
    ft = tls_front[0]
    x = _features(1)
    with grpc.secure_channel(ft.address, grpc.ssl_channel_credentials(pki.ca.read_bytes())) as ch:
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        assert _code(lambda: call(_infer_request("fraud", x), timeout=5, metadata=(("x-small", "a" * 1000),))) == grpc.StatusCode.OK
        code = _code(lambda: call(_infer_request("fraud", x), timeout=5, metadata=(("x-big", "a" * 8000),)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, code


def test_reload_tls_picks_up_a_new_certificate(tls_front, pki):
    ft, _, _, d = tls_front
    host, port = "127.0.0.1", ft.front.port
    assert peer_cert(host, port, pki.ca) == (1001, "server-1")
    cert2, key2 = leaf(d, "server-2", (pki.ca, pki.ca_key), 1002)
    shutil.copy(cert2, d / "front.pem")
    shutil.copy(key2, d / "front.key")

    async def reload():
        ft.front.reload_tls()

    ft.call(reload())
    assert peer_cert(host, port, pki.ca) == (1002, "server-2")
    c = _tls_client(ft, pki)  # a new connection, the new certificate, the new upstream channel
    inp = tc.InferInput("features", [1, 8], "FP32")
    inp.set_data_from_numpy(_features(1))
    assert c.infer("fraud", [inp]).as_numpy("probability").shape == (1, 2)
    c.close()
    # a bad new file: refused with the key named; the old certificate stays
    (d / "front.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"server\.tls"):
        ft.call(reload())
    assert peer_cert(host, port, pki.ca) == (1002, "server-2")
    shutil.copy(cert2, d / "front.pem")


# -- serve --workers: the parent's admin port ----------------------------------------------------
def test_workers_parent_admin_needs_the_token_and_reloads_its_certificate(triton, pki, tmp_path):
    (tmp_path / "token").write_text(TOKEN)
    shutil.copy(pki.server[0], tmp_path / "admin.pem")
    shutil.copy(pki.server[1], tmp_path / "admin.key")
    body = (f'admin_token_file = "{tmp_path / "token"}"\n'
            f'admin_tls = {{ cert = "{tmp_path / "admin.pem"}", key = "{tmp_path / "admin.key"}" }}\n'
            '[[routes]]\nmodel = "fraud"\nlive = { version = "1" }\n')  # fmt: skip
    proc, _, admin = serve(tmp_path, triton.grpc_address, body, args=("--workers", "2"), output=tmp_path / "out.txt")
    creds = admin_credentials(str(pki.ca))
    try:
        with pytest.raises(grpc.RpcError) as e:
            fetch_report(f"127.0.0.1:{admin}", credentials=creds)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        rep = fetch_report(f"127.0.0.1:{admin}", token=TOKEN, credentials=creds)  # merged from the workers, called with the token
        assert rep.replicas == 2 and rep.routes[0].model == "fraud"
        # SIGHUP to the parent: its own admin port's certificate files are read again too
        assert peer_cert("127.0.0.1", admin, pki.ca) == (1001, "server-1")
        cert2, key2 = leaf(tmp_path, "server-2", (pki.ca, pki.ca_key), 1002)
        shutil.copy(cert2, tmp_path / "admin.pem")
        shutil.copy(key2, tmp_path / "admin.key")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while peer_cert("127.0.0.1", admin, pki.ca)[0] != 1002 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert peer_cert("127.0.0.1", admin, pki.ca) == (1002, "server-2")
        assert fetch_report(f"127.0.0.1:{admin}", token=TOKEN, credentials=creds).replicas == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
