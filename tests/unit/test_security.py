"""Security config (_config_security.py, [log.redact]) refused with the key named; the admin-token
check, the shadow metadata allow-list and the paired log's redaction on their own."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pyarrow as pa
import pytest
from tritonclient.grpc import service_pb2

from shadowgrpc.config import ConfigError, Settings
from shadowgrpc.pairlog.redact import redact_table, strip_inputs
from shadowgrpc.pairlog.schema import TENSOR
from shadowgrpc.security import bearer_ok, shadow_metadata
from tests.certs import make_pki

TOKEN = "0123456789abcdef-token"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _server(**kw):
    return Settings.from_dict({"server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", **kw}})


def test_non_loopback_admin_needs_auth(tmp_path, pki, monkeypatch):
    for host in ("0.0.0.0:8011", "10.1.2.3:8011", "[::]:8011"):
        with pytest.raises(ConfigError, match=r"^server\.admin_listen: .* is not a loopback address .*admin_token_file"):
            _server(admin_listen=host)
    (tmp_path / "t").write_text(TOKEN)
    assert _server(admin_listen="0.0.0.0:8011", admin_token_file=str(tmp_path / "t")).security.admin_token == TOKEN
    monkeypatch.setenv("ADMIN_TOK", TOKEN)
    assert _server(admin_listen="0.0.0.0:8011", admin_token_env="ADMIN_TOK").security.admin_auth
    mtls = {"cert": str(pki.server[0]), "key": str(pki.server[1]), "client_ca": str(pki.ca)}
    assert _server(admin_listen="0.0.0.0:8011", admin_tls=mtls).security.admin_auth
    with pytest.raises(ConfigError, match=r"^server\.admin_listen"):  # TLS without client certificates authenticates nobody
        _server(admin_listen="0.0.0.0:8011", admin_tls={"cert": str(pki.server[0]), "key": str(pki.server[1])})
    for host in ("127.0.0.1:0", "localhost:8011", "[::1]:8011"):
        assert not _server(admin_listen=host).security.admin_auth


def test_token_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^server\.admin_token_file: cannot read"):
        _server(admin_token_file=str(tmp_path / "missing"))
    (tmp_path / "short").write_text("abc")
    with pytest.raises(ConfigError, match=r"^server\.admin_token_file: the token must be at least 16"):
        _server(admin_token_file=str(tmp_path / "short"))
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    with pytest.raises(ConfigError, match=r"^server\.admin_token_env: the environment variable NO_SUCH_TOKEN_VAR is not set"):
        _server(admin_token_env="NO_SUCH_TOKEN_VAR")
    (tmp_path / "t").write_text(TOKEN)
    monkeypatch.setenv("T", TOKEN)
    with pytest.raises(ConfigError, match=r"^server\.admin_token_file: set admin_token_file or admin_token_env, not both"):
        _server(admin_token_file=str(tmp_path / "t"), admin_token_env="T")
    assert TOKEN not in repr(_server(admin_token_env="T"))  # never in a repr (logs)


def test_tls_errors(tmp_path, pki):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^server\.tls\.cert: no such file"):
        _server(tls={"cert": str(tmp_path / "nope.pem"), "key": str(pki.server[1])})
    with pytest.raises(ConfigError, match=r"^server\.tls\.key: required"):
        _server(tls={"cert": str(pki.server[0])})
    with pytest.raises(ConfigError, match=r"^server\.tls\.cert/key: .* not a PEM certificate and its private key"):
        _server(tls={"cert": str(junk), "key": str(pki.server[1])})
    with pytest.raises(ConfigError, match=r"^server\.tls\.cert/key"):  # a key of another certificate
        _server(tls={"cert": str(pki.server[0]), "key": str(pki.client[1])})
    with pytest.raises(ConfigError, match=r"^server\.admin_tls\.client_ca: .* not a PEM CA"):
        _server(admin_tls={"cert": str(pki.server[0]), "key": str(pki.server[1]), "client_ca": str(junk)})
    with pytest.raises(ConfigError, match=r"^server\.tls\.port: unknown key"):
        _server(tls={"cert": str(pki.server[0]), "key": str(pki.server[1]), "port": 1})
    with pytest.raises(ConfigError, match=r"^server\.upstream_tls\.cert: a client certificate needs both"):
        _server(upstream_tls={"cert": str(pki.client[0])})
    with pytest.raises(ConfigError, match=r"^server\.upstream_tls\.ca: .* not a PEM CA"):
        _server(upstream_tls={"ca": str(junk)})


def test_upstream_tls_per_target(pki):
    up = {"ca": str(pki.ca), "cert": str(pki.client[0]), "key": str(pki.client[1]), "server_name": "triton"}
    s = Settings.from_dict({
        "server": {"default_live": "127.0.0.1:9001", "upstream_tls": up},
        "routes": [{"model": "m", "shadows": [{"name": "s", "address": "127.0.0.1:9002", "tls": False},
                                               {"name": "t", "address": "127.0.0.1:9003", "tls": {"ca": str(pki.ca)}}]}],
    })  # fmt: skip
    sec = s.security
    assert sec.upstream_for("127.0.0.1:9001").server_name == "triton"
    assert sec.upstream_for("127.0.0.1:9002") is None
    assert sec.upstream_for("127.0.0.1:9003").cert == "" and sec.upstream_for("127.0.0.1:9003").ca == str(pki.ca)
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.shadows\[1\]\.tls: 127\.0\.0\.1:9002 already has other TLS settings"):
        Settings.from_dict({"routes": [{"model": "m", "shadows": [{"name": "a", "address": "127.0.0.1:9002", "tls": False},
                                                                   {"name": "b", "address": "127.0.0.1:9002", "tls": {"ca": str(pki.ca)}}]}]})  # fmt: skip
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.live\.tls: must be a table"):
        Settings.from_dict({"routes": [{"model": "m", "live": {"tls": True}}]})


def test_limits_and_allow_list_config():
    assert _server(max_metadata_kb=16).security.max_metadata_bytes == 16 * 1024
    with pytest.raises(ConfigError, match=r"^server\.max_metadata_kb: must be an integer"):
        _server(max_metadata_kb="big")
    assert _server(shadow_metadata_allow=["x-tenant"]).security.shadow_metadata_allow == {"x-tenant", "x-shadow-request"}
    with pytest.raises(ConfigError, match=r"^server\.shadow_metadata_allow: metadata keys are lower case"):
        _server(shadow_metadata_allow=["Authorization"])


def test_bearer_check_and_shadow_metadata():
    assert bearer_ok((("authorization", f"Bearer {TOKEN}"),), TOKEN)
    for md in (None, (), (("authorization", TOKEN),), (("authorization", f"Bearer {TOKEN}x"),), (("x-token", f"Bearer {TOKEN}"),)):
        assert not bearer_ok(md, TOKEN), md
    md = (("authorization", "Bearer x"), ("cookie", "a=b"), ("x-api-key", "k"), ("traceparent", "00-ab"), ("x-shadow-request", "0"))
    allow = Settings.from_dict({}).security.shadow_metadata_allow
    assert shadow_metadata(md, allow) == (("traceparent", "00-ab"), ("x-shadow-request", "1"))
    assert shadow_metadata(None, allow) == (("x-shadow-request", "1"),)


def test_log_redact_config(tmp_path, monkeypatch):
    def log(**redact):
        return Settings.from_dict({"log": {"path": str(tmp_path), "redact": redact}}).log.redact

    with pytest.raises(ConfigError, match=r"^log\.redact\.hash: needs a secret key"):
        log(hash=["probability"])
    monkeypatch.setenv("LOGKEY", "k" * 32)
    assert log(hash=["p"], hash_key_env="LOGKEY").key == b"k" * 32
    with pytest.raises(ConfigError, match=r"^log\.redact\.redact: 'p' is also in log\.redact\.drop"):
        log(drop=["p"], redact=["p"])
    with pytest.raises(ConfigError, match=r"^log\.redact\.salt: unknown key"):
        log(salt="x")
    with pytest.raises(ConfigError, match=r"^log\.redact\.hash_key_file: cannot read"):
        log(hash=["p"], hash_key_file=str(tmp_path / "missing"))


def test_redact_table_and_request_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("LOGKEY", "k" * 32)
    r = Settings.from_dict({"log": {"path": str(tmp_path), "redact": {"drop": ["a"], "hash": ["b"], "redact": ["c"], "hash_key_env": "LOGKEY"}}}).log.redact
    t = lambda name, vals: {"name": name, "datatype": "FP32", "shape": [len(vals)], "fp32": vals, "fp64": None, "ints": None, "bytes": None}  # noqa: E731
    outs = pa.array([[t("a", [1.0]), t("b", [2.0, 3.0]), t("c", [4.0]), t("d", [5.0])], None], type=pa.list_(TENSOR))
    req = service_pb2.ModelInferRequest(model_name="m")
    for name in ("a", "keep"):
        req.inputs.add(name=name, datatype="FP32", shape=[1])
        req.raw_input_contents.append(np.float32(7.5 if name == "a" else 1.25).tobytes())
    table = pa.table({"live_outputs": outs, "shadow_outputs": outs, "request": pa.array([req.SerializeToString(), None], pa.binary())})
    got = redact_table(table, r).to_pylist()
    row = got[0]["live_outputs"]
    assert [x["name"] for x in row] == ["b", "c", "d"]
    assert row[0]["datatype"] == "HMAC-SHA256" and row[0]["bytes"] == [hmac.new(b"k" * 32, np.float32(v).tobytes(), hashlib.sha256).digest() for v in (2.0, 3.0)]
    assert row[1]["bytes"] == [b"[REDACTED]"] and row[1]["fp32"] is None and row[2]["fp32"] == [5.0]
    assert got[1]["live_outputs"] is None and got[1]["request"] is None
    kept = service_pb2.ModelInferRequest.FromString(got[0]["request"])
    assert [i.name for i in kept.inputs] == ["keep"] and list(kept.raw_input_contents) == [np.float32(1.25).tobytes()]
    assert strip_inputs(b"\x0a\x01m", frozenset({"zz"})) == b"\x0a\x01m"


def test_upstream_tls_reloads_retire_the_old_channels(pki):
    """Every reload_tls swaps in new channels; the old ones close and are then forgotten (a front
    reloaded daily must not keep one closed channel per TLS upstream per reload)."""
    import asyncio

    from shadowgrpc.backends import Upstreams

    sec = Settings.from_dict({"server": {"default_live": "127.0.0.1:9001", "upstream_tls": {"ca": str(pki.ca)}}}).security

    async def body():
        ups = Upstreams(4 << 20, "none", sec)
        first = ups.get("127.0.0.1:9001", "live")
        ch0 = first.channel
        for _ in range(3):
            assert ups.reload_tls(sec, grace_s=0.0) == 1
        assert first.channel is not ch0  # the same Upstream, a new channel
        for _ in range(100):  # the close tasks run on this loop
            if not ups._old and not ups._retiring:
                break
            await asyncio.sleep(0.01)
        assert ups._old == [] and not ups._retiring
        await ups.close()

    asyncio.run(body())
