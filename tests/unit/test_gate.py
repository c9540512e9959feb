"""The rollout gate (shadowgrpc/gate.py, gate_http.py) without Triton: the decision from hand-built
reports, the JSON document, the HTTP server's parsing and answers (bad method, unknown path and
route, tokens, oversized and garbage requests, Flagger payloads, keep-alive, timeouts, TLS/mTLS), the
example manifests against the tools' vendored CRD schemas, and ``shadowgrpc gate``'s exit statuses
against an in-process ShadowControl. The real decision through a real front: tests/triton/test_rollout_gate.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import ssl
from concurrent import futures

import grpc
import jsonschema
import pytest

from shadowgrpc import cli, gate_http
from shadowgrpc._config_security import ServerTls
from shadowgrpc.gate import GateError, decide, gate_json, hold_message, servicer_report
from shadowgrpc.gate_http import GateServer
from shadowgrpc.v1 import shadow_pb2 as pb
from shadowgrpc.v1 import shadow_pb2_grpc as pb_grpc
from tests.rollout_schemas import tools

pytestmark = pytest.mark.once  # the gate reads a Report proto: no twin code on its path

TOKEN = "gate-test-token-0123456789"


def _shadow(rr, name, decision, gates=(), status="MIRRORING", noise_floor=False, opened=1.0):
    s = rr.shadows.add(status=status, compared=100)
    s.target.name, s.target.noise_floor = name, noise_floor
    s.window.opened = opened
    s.verdict.decision = decision
    for g in gates:
        s.verdict.gates.add(**g)
    return s


def G(name, status, value=0.0, threshold=0.0, reason="why"):
    return {"name": name, "status": status, "value": value, "threshold": threshold, "reason": reason}


def report(*shadows, model="fraud") -> pb.Report:
    rep = pb.Report(version="t", replicas=1, uptime_s=5.0)
    rr = rep.routes.add(model=model)
    for args, kw in shadows:
        _shadow(rr, *args, **kw)
    return rep


def S(*args, **kw):
    return args, kw


PASSING = [G("latency_p99", "PASS", 3.0, 10.0), G("error_rate", "PASS", 0.0, 0.01), G("accuracy", "PASS", 0.01, -0.005)]


# -- the decision -------------------------------------------------------------------------------------
def test_every_open_non_floor_shadow_must_pass():
    rep = report(S("a", "PASS", PASSING), S("b", "PASS", PASSING), S("floor", "FAIL", [G("error_rate", "FAIL")], noise_floor=True), S("old", "FAIL", status="CLOSED"))
    doc = decide(rep, "fraud")
    assert doc["decision"] == "PASS" and doc["pass"] is True and doc["failing_gates"] == []
    assert {n: s["deciding"] for n, s in doc["shadows"].items()} == {"a": True, "b": True, "floor": False, "old": False}
    assert doc["shadows"]["floor"]["excluded_because"].startswith("noise floor")
    assert set(doc["gates"]) == {"latency_p99", "error_rate", "accuracy"}


@pytest.mark.parametrize(
    ("decisions", "want"),
    [(("PASS", "FAIL"), "FAIL"), (("PASS", "NOT_COMPARABLE"), "FAIL"), (("PASS", "NOT_ENOUGH_DATA"), "NOT_ENOUGH_DATA"), (("NOT_ENOUGH_DATA", "FAIL"), "FAIL"), ((), "NOT_ENOUGH_DATA")],
)
def test_route_decision(decisions, want):
    doc = decide(report(*(S(f"s{i}", d, [G("error_rate", "FAIL" if d == "FAIL" else "PASS")]) for i, d in enumerate(decisions))), "fraud")
    assert doc["decision"] == want and doc["pass"] is False


def test_a_named_shadow_decides_alone_and_keeps_its_own_decision():
    rep = report(S("good", "PASS", PASSING), S("broken", "NOT_COMPARABLE", [G("contract", "FAIL", reason="names differ")]))
    assert decide(rep, "fraud", "good")["decision"] == "PASS"
    doc = decide(rep, "fraud", "broken")
    assert doc["decision"] == "NOT_COMPARABLE" and doc["failing_gates"] == ["contract"] and list(doc["shadows"]) == ["broken"]
    assert "broken: contract: names differ" in hold_message(doc)


def test_a_name_with_several_windows_is_judged_on_the_open_one():
    rep = report(S("v", "FAIL", status="CLOSED", opened=1.0), S("v", "PASS", PASSING, opened=2.0))
    assert decide(rep, "fraud", "v")["decision"] == "PASS"
    assert decide(rep, "fraud")["decision"] == "PASS"  # the closed window of the same name does not decide
    closed = report(S("v", "FAIL", status="CLOSED", opened=1.0), S("v", "PASS", status="CLOSED", opened=2.0))
    assert decide(closed, "fraud", "v")["decision"] == "PASS"  # all closed: the newest


def test_unknown_route_or_shadow_is_an_error_not_a_decision():
    rep = report(S("a", "PASS"))
    with pytest.raises(GateError) as e:
        decide(rep, "nope")
    assert e.value.status == 404 and "'nope'" in e.value.message and "'fraud'" in e.value.message
    with pytest.raises(GateError) as e:
        decide(rep, "fraud", "b")
    assert e.value.status == 404 and "no shadow 'b'" in e.value.message and "'a'" in e.value.message


def test_document_shape_worst_gate_and_non_finite_figures():
    rep = report(
        S("a", "PASS", [G("error_rate", "PASS", 0.001, 0.01), G("latency_p99", "PASS", float("nan"), float("inf"))]),
        S("b", "FAIL", [G("error_rate", "FAIL", 1.0, 0.01, "100% failed"), G("latency_p99", "NOT_ENOUGH_DATA", reason="few")]),
    )
    doc = json.loads(gate_json(decide(rep, "fraud")))  # allow_nan=False: strict JSON
    assert doc["decision"] == "FAIL" and doc["failing_gates"] == ["error_rate"] and doc["undecided_gates"] == ["latency_p99"]
    assert doc["gates"]["error_rate"] == {"status": "FAIL", "value": 1.0, "threshold": 0.01, "reason": "100% failed", "shadow": "b"}
    assert doc["shadows"]["a"]["gates"]["latency_p99"]["value"] is None and doc["shadows"]["a"]["gates"]["latency_p99"]["threshold"] is None
    assert tools.argo_expr('result.decision in ["FAIL", "NOT_COMPARABLE"]', doc) is True
    assert tools.argo_expr('result.gates.error_rate.value <= 0.01', doc) is False


# -- HTTP ---------------------------------------------------------------------------------------------
async def _read_response(reader) -> tuple[int, dict, bytes]:
    status_line = await reader.readline()
    if not status_line:
        return 0, {}, b""
    status = int(status_line.split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers, body


def _serve(test, rep=None, token=TOKEN, tls=None, report_fn=None):
    """Run ``test(port)`` (a coroutine function) against a started GateServer."""

    async def fixed(route):
        return rep if rep is not None else report(S("v2", "PASS", PASSING), S("faulty", "FAIL", [G("error_rate", "FAIL", 1.0, 0.01, "all failed")]))

    async def main():
        gs = GateServer("127.0.0.1:0", report_fn or fixed, lambda: token, tls)
        port = await gs.start()
        try:
            return await test(port)
        finally:
            await gs.stop()

    return asyncio.run(main())


async def _exchange(port, *raw: bytes, ssl_ctx=None) -> list[tuple[int, dict, bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_ctx, server_hostname="127.0.0.1" if ssl_ctx else None)
    out = []
    try:
        for r in raw:
            writer.write(r)
            await writer.drain()
            out.append(await asyncio.wait_for(_read_response(reader), 10))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    return out


def _get(path: str, token: str | None = TOKEN, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: gate\r\n{auth}{extra}\r\n".encode()


def _post(path: str, body: bytes, token: str | None = TOKEN) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"POST {path} HTTP/1.1\r\nHost: gate\r\n{auth}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def _one(raw: bytes, **kw) -> tuple[int, dict, dict]:
    status, headers, body = _serve(lambda port: _exchange(port, raw), **kw)[0]
    return status, headers, json.loads(body) if body else {}


def test_get_gate_answers_the_document_with_200_whatever_the_decision():
    status, headers, doc = _one(_get("/gate?route=fraud&shadow=faulty"))
    assert status == 200 and headers["content-type"] == "application/json"
    assert doc["decision"] == "FAIL" and doc["pass"] is False and doc["gates"]["error_rate"]["value"] == 1.0
    status, _, doc = _one(_get("/gate?route=fraud&shadow=v2"))
    assert status == 200 and doc["decision"] == "PASS"


@pytest.mark.parametrize(
    ("raw", "status", "words"),
    [
        (b"DELETE /gate?route=fraud HTTP/1.1\r\n\r\n", 405, "takes GET"),
        (b"GET /flagger HTTP/1.1\r\n\r\n", 405, "takes POST"),
        (b"GET /nope HTTP/1.1\r\n\r\n", 404, "no endpoint"),
        (b"GET /gate HTTP/1.1\r\n\r\n", 401, "Bearer"),  # no token: refused before anything else is said
        (_get("/gate?route=fraud", token="wrong-token-wrong-token"), 401, "missing or wrong"),
        (_get("/gate"), 400, "no route"),
        (_get("/gate?route=nope"), 404, "no route for model 'nope'"),
        (_get("/gate?route=fraud&shadow=nope"), 404, "no shadow 'nope'"),
        (_get("/gate?route=fraud&color=red"), 400, "unknown query parameter 'color'"),
        (_get("/gate?route=fraud&route=x"), 400, "given twice"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "not an HTTP/1.1 request"),
        (b"GET /gate\r\n\r\n", 400, "malformed request line"),
        (b"GET /gate HTTP/2.0\r\n\r\n", 400, "malformed request line"),
        (b"GET /gate HTTP/1.1\r\nbad header\r\n\r\n", 400, "malformed header"),
        (b"GET /gate HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400, "malformed header"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "request line longer"),
        (b"GET /gate HTTP/1.1\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431, "header line longer"),
        (b"GET /gate HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(70)) + b"\r\n", 431, "too many headers"),
        (b"POST /flagger HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", 413, "at most 65536"),
        (b"POST /flagger HTTP/1.1\r\nContent-Length: x1\r\n\r\n", 400, "Content-Length"),
        (b"POST /flagger HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "Content-Length"),
    ],
)
def test_bad_requests_get_clear_json_errors(raw, status, words):
    got, headers, body = _one(raw)
    assert got == status and body["status"] == status and words in body["error"], body
    if status == 405:
        assert headers["allow"] in ("GET", "POST")
    if status == 401:
        assert headers["www-authenticate"].startswith("Bearer")


def test_healthz_needs_no_token_and_no_token_configured_needs_none():
    assert _one(b"GET /healthz HTTP/1.1\r\n\r\n")[0] == 200
    status, _, doc = _one(_get("/gate?route=fraud&shadow=v2", token=None), token="")
    assert status == 200 and doc["decision"] == "PASS"


def test_flagger_webhook_proceeds_on_pass_and_holds_naming_the_failing_gates():
    def payload(**meta):
        return json.dumps({"name": "fraud-scorer", "namespace": "ml", "phase": "Progressing", "checksum": "abc", "metadata": meta}).encode()

    status, _, body = _one(_post("/flagger?route=fraud&shadow=v2", payload()))
    assert status == 200 and body["proceed"] is True and body["canary"] == "ml/fraud-scorer" and body["phase"] == "Progressing"
    status, _, body = _one(_post("/flagger", payload(route="fraud", shadow="faulty")))
    assert status == 412 and body["proceed"] is False and body["failing_gates"] == ["error_rate"] and "faulty: error_rate: all failed" in body["message"]
    status, _, body = _one(_post("/flagger", payload(route="fraud")))  # the route as a whole: faulty fails it
    assert status == 412 and body["decision"] == "FAIL"
    # the token in metadata (Flagger cannot send headers), and only the right one
    assert _one(_post("/flagger", payload(route="fraud", shadow="v2", token=TOKEN), token=None))[0] == 200
    assert _one(_post("/flagger", payload(route="fraud", shadow="v2", token="x" * 20), token=None))[0] == 401
    assert _one(_post("/flagger", payload(route="fraud", shadow="v2", token=TOKEN), token=None), token="")[0] == 200
    # rollback hook: 200 (roll back) only on FAIL / NOT_COMPARABLE
    assert _one(_post("/flagger/rollback", payload(route="fraud", shadow="faulty")))[0] == 200
    assert _one(_post("/flagger/rollback", payload(route="fraud", shadow="v2")))[0] == 412
    # bad payloads
    for body, words in ((b"{not json", "not JSON"), (b"[1]", "JSON object"), (json.dumps({"metadata": {"route": 1}}).encode(), "object of strings")):
        status, _, err = _one(_post("/flagger", body))
        assert status == 400 and words in err["error"]
    status, _, err = _one(_post("/flagger?route=fraud", payload(route="other")))
    assert status == 400 and "'fraud' in the query but 'other'" in err["error"]


def test_keep_alive_serves_several_requests_on_one_connection_and_close_ends_it():
    async def test(port):
        return await _exchange(port, _get("/gate?route=fraud&shadow=v2"), _get("/healthz"), _get("/gate?route=fraud", extra="Connection: close\r\n"), b"GET /healthz HTTP/1.1\r\n\r\n")

    got = _serve(test)
    assert [g[0] for g in got[:3]] == [200, 200, 200] and got[2][1]["connection"] == "close"
    assert got[3][0] == 0  # the server closed the connection after "Connection: close"


def test_a_slow_request_gets_408_and_an_idle_connection_is_closed(monkeypatch):
    monkeypatch.setattr(gate_http, "REQUEST_TIMEOUT_S", 0.3)

    async def test(port):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /gate HTTP/1.1\r\n")  # never finished
        slow = await asyncio.wait_for(_read_response(r), 5)
        w.close()
        await w.wait_closed()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        idle = await asyncio.wait_for(r.read(), 5)  # nothing sent: closed without an answer
        w.close()
        await w.wait_closed()
        return slow, idle

    slow, idle = _serve(test)
    assert slow[0] == 408 and idle == b""


def test_report_failures_are_answered_not_raised():
    async def missing(route):
        raise GateError(503, "worker 1 (pid 7): UNAVAILABLE")

    async def broken(route):
        raise RuntimeError("boom")

    status, _, body = _one(_get("/gate?route=fraud"), report_fn=missing)
    assert status == 503 and "worker 1" in body["error"]
    status, _, body = _one(_get("/gate?route=fraud"), report_fn=broken)
    assert status == 500 and "front's log" in body["error"]


def test_servicer_report_maps_a_not_found_abort_to_404():
    class Control:
        async def GetReport(self, request, context):
            assert context.time_remaining() > 0
            if request.model != "fraud":
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no route for model '{request.model}'")
            return report(S("v2", "PASS", PASSING))

    status, _, body = _one(_get("/gate?route=other"), report_fn=servicer_report(Control(), pb.GetReportRequest))
    assert status == 404 and "no route for model 'other'" in body["error"]
    status, _, body = _one(_get("/gate?route=fraud"), report_fn=servicer_report(Control(), pb.GetReportRequest))
    assert status == 200 and body["decision"] == "PASS"


def test_a_non_loopback_gate_without_auth_is_refused(tmp_path):
    async def main():
        gs = GateServer("0.0.0.0:0", None, lambda: "")
        with pytest.raises(OSError, match="server.gate_listen: 0.0.0.0:0 is not a loopback address"):
            await gs.start()

    asyncio.run(main())


def test_tls_and_mtls_use_the_admin_port_s_files(tmp_path):
    from tests.certs import make_pki

    pki = make_pki(tmp_path)
    client = ssl.create_default_context(cafile=str(pki.ca))
    status, _, body = _serve(lambda port: _exchange(port, _get("/gate?route=fraud&shadow=v2"), ssl_ctx=client), tls=ServerTls(str(pki.server[0]), str(pki.server[1])))[0]
    assert status == 200 and json.loads(body)["decision"] == "PASS"
    mtls = ServerTls(str(pki.server[0]), str(pki.server[1]), str(pki.ca), "server.admin_tls")

    async def without_cert(port):  # TLS 1.3: the handshake "succeeds" on the client's side, then the server refuses
        try:
            return (await _exchange(port, _get("/healthz"), ssl_ctx=client))[0][0]
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
            return None

    assert _serve(without_cert, tls=mtls) in (None, 0)  # no answer at all
    with_cert = ssl.create_default_context(cafile=str(pki.ca))
    with_cert.load_cert_chain(str(pki.client[0]), str(pki.client[1]))
    assert _serve(lambda port: _exchange(port, _get("/healthz"), ssl_ctx=with_cert), tls=mtls)[0][0] == 200


def test_a_reload_hands_the_new_certificate_to_the_next_handshake(tmp_path):
    from tests.certs import leaf, make_pki, serial_of

    pki = make_pki(tmp_path)
    cert2 = leaf(tmp_path, "server-2", (pki.ca, pki.ca_key), 1002)
    client = ssl.create_default_context(cafile=str(pki.ca))

    async def serial(port):
        _, w = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="127.0.0.1")
        der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
        w.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await w.wait_closed()
        return serial_of(ssl.DER_cert_to_PEM_cert(der))

    async def main():
        gs = GateServer("127.0.0.1:0", None, lambda: "", ServerTls(str(pki.server[0]), str(pki.server[1])))
        port = await gs.start()
        try:
            before = await serial(port)
            gs.reload_tls(ServerTls(str(cert2[0]), str(cert2[1]), "", "server.admin_tls"))
            gs.reload_tls(ServerTls(str(tmp_path / "missing.pem"), str(cert2[1]), "", "server.admin_tls"))  # logged, the new one stays
            return before, await serial(port)
        finally:
            await gs.stop()

    assert asyncio.run(main()) == (1001, 1002)


# -- the example manifests against the tools' schemas ------------------------------------------------
@pytest.mark.parametrize("name", ["flagger-canary.yaml", "argo-analysistemplate.yaml"])
def test_examples_fit_the_tools_published_crd_schemas(name):
    docs = tools.load_docs(name)
    assert {d["kind"] for d in docs} == ({"Canary"} if name.startswith("flagger") else {"AnalysisTemplate", "Rollout"})
    for d in docs:
        tools.validate(d)
        bad = json.loads(json.dumps(d))
        bad["spec"]["misspelt"] = 1  # the strict schema really checks: an unknown key fails
        with pytest.raises(jsonschema.ValidationError):
            tools.validate(bad)


def test_the_examples_point_at_the_gate_s_endpoints():
    (canary,) = tools.load_docs("flagger-canary.yaml")
    hooks = {h["type"]: h for h in canary["spec"]["analysis"]["webhooks"]}
    assert {"pre-rollout", "confirm-promotion", "rollback"} <= set(hooks)
    assert hooks["confirm-promotion"]["url"].endswith("/flagger") and hooks["rollback"]["url"].endswith("/flagger/rollback")
    template, rollout = tools.load_docs("argo-analysistemplate.yaml")
    urls = [m["provider"]["web"]["url"] for m in template["spec"]["metrics"]]
    assert all("/gate?route={{args.route}}" in u for u in urls)
    step = rollout["spec"]["strategy"]["canary"]["steps"][0]["analysis"]
    assert step["templates"][0]["templateName"] == template["metadata"]["name"]


# -- shadowgrpc gate: exit statuses ----------------------------------------------------------------------
class _Control(pb_grpc.ShadowControlServicer):
    def __init__(self, rep):
        self.rep = rep

    def GetReport(self, request, context):
        if ("authorization", f"Bearer {TOKEN}") not in context.invocation_metadata():
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "token")
        if request.model not in [r.model for r in self.rep.routes]:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no route for model '{request.model}'")
        return self.rep


@pytest.fixture
def admin():
    rep = report(S("v2", "PASS", PASSING), S("faulty", "FAIL", [G("error_rate", "FAIL", 1.0, 0.01, "all failed")]), S("young", "NOT_ENOUGH_DATA", [G("error_rate", "NOT_ENOUGH_DATA")]))
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_ShadowControlServicer_to_server(_Control(rep), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None).wait()


def _gate(monkeypatch, *argv) -> tuple[int, str]:
    monkeypatch.setenv("SHADOWGRPC_ADMIN_TOKEN", TOKEN)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = cli.main(["gate", *argv])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue()


def test_cli_exit_statuses(admin, monkeypatch):
    code, out = _gate(monkeypatch, "--target", admin, "--route", "fraud", "--shadow", "v2")
    assert code == 0 and out.startswith("PASS: route fraud, shadow v2")
    code, out = _gate(monkeypatch, "--target", admin, "--route", "fraud", "--shadow", "faulty")
    assert code == 1 and "failing error_rate: all failed" in out
    code, out = _gate(monkeypatch, "--target", admin, "--route", "fraud", "--shadow", "young")
    assert code == 2 and out.startswith("NOT_ENOUGH_DATA")
    code, out = _gate(monkeypatch, "--target", admin, "--route", "fraud", "--json")
    assert code == 1 and json.loads(out)["failing_gates"] == ["error_rate"]
    for argv, words in (
        (("--target", admin, "--route", "nope"), "NOT_FOUND"),
        (("--target", admin, "--route", "fraud", "--shadow", "nope"), "no shadow 'nope'"),
        (("--target", "127.0.0.1:1", "--route", "fraud", "--timeout", "2"), "UNAVAILABLE"),
        (("--target", admin), "--route"),
        (("--route", "fraud", "--bogus"), "unrecognized arguments"),
        (("--route", "fraud", "--timeout", "soon"), "invalid float"),
    ):
        code, out = _gate(monkeypatch, *argv)
        assert code == 3 and words in out, (argv, out)
    with pytest.raises(SystemExit) as e:
        cli.main(["report", "--bogus"])  # other commands keep argparse's 2
    assert e.value.code == 2


def test_cli_wrong_token_cannot_decide(admin, monkeypatch, tmp_path):
    f = tmp_path / "token"
    f.write_text("not-the-token-at-all\n")
    code, out = _gate(monkeypatch, "--target", admin, "--route", "fraud", "--token-file", str(f))
    assert code == 3 and "UNAUTHENTICATED" in out
