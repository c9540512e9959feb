"""The security keys of ``[server]`` and of the routes' targets: admin API auth, TLS, limits, shadow
metadata. Their types (``Security`` is ``Settings.security``) and parsers; how they are used:
security.py.

    [server]
    admin_token_file = "/etc/shadowgrpc/admin.token"  # ShadowControl needs "authorization: Bearer <token>"
    # admin_token_env = "SHADOWGRPC_ADMIN_TOKEN"      # ... or the token from this environment variable
    admin_tls = { cert = "admin.pem", key = "admin.key", client_ca = "clients-ca.pem" }  # client_ca: mTLS
    tls = { cert = "front.pem", key = "front.key" }   # the data port over TLS (client_ca: mTLS)
    upstream_tls = { ca = "triton-ca.pem", cert = "front-client.pem", key = "front-client.key", server_name = "triton" }
    max_metadata_kb = 16                              # per call, received metadata (0: grpc's default, 8 soft / 16 hard)
    shadow_metadata_allow = ["traceparent", "tracestate"]  # the only caller metadata a shadow call carries

    [[routes]]
    live = { tls = { ca = "other-ca.pem" } }          # per target: overrides upstream_tls (false: plaintext)
    [[routes.shadows]]
    tls = false

A non-loopback ``admin_listen`` needs a token or ``admin_tls.client_ca`` (refused at start
otherwise). Certificate and key files are read and checked (they parse, the key matches) here;
``Front.reload_tls`` reads them again.
"""

from __future__ import annotations

import os
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import _checks as check
from ._checks import ConfigError

SECURITY_KEYS = {"admin_token_file", "admin_token_env", "admin_tls", "tls", "upstream_tls", "max_metadata_kb", "shadow_metadata_allow"}
DEFAULT_SHADOW_ALLOW = ("traceparent", "tracestate")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


@dataclass(frozen=True, slots=True)
class ServerTls:
    """A server's certificate (``cert``: PEM chain, ``key``: PEM key); ``client_ca``: clients must
    present a certificate signed by it (mTLS); "" = no client certificates asked."""

    cert: str
    key: str
    client_ca: str = ""
    where: str = "server.tls"


@dataclass(frozen=True, slots=True)
class ClientTls:
    """TLS to a Triton: ``ca`` (PEM roots; "" = the system's), an optional client certificate
    (``cert`` + ``key``: mTLS), ``server_name`` (the name checked in Triton's certificate; "" = the
    address's host)."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""
    where: str = "server.upstream_tls"


@dataclass(frozen=True, slots=True)
class Security:
    admin_token: str = field(default="", repr=False)  # from admin_token_file / admin_token_env; "" = none
    admin_token_source: str = ""  # the key it came from (messages)
    admin_tls: ServerTls | None = None
    tls: ServerTls | None = None
    upstream_tls: ClientTls | None = None  # server-wide default for every Triton channel
    upstream_by_address: tuple[tuple[str, ClientTls | None], ...] = ()  # per-target overrides (None: plaintext)
    max_metadata_bytes: int = 0  # 0 = grpc's default
    shadow_metadata_allow: frozenset[str] = frozenset(DEFAULT_SHADOW_ALLOW)

    @property
    def admin_auth(self) -> bool:
        return bool(self.admin_token) or (self.admin_tls is not None and bool(self.admin_tls.client_ca))

    def upstream_for(self, address: str) -> ClientTls | None:
        for a, t in self.upstream_by_address:
            if a == address:
                return t
        return self.upstream_tls


def is_loopback(address: str) -> bool:
    return address.rpartition(":")[0].lower() in LOOPBACK_HOSTS


def _file(t: Mapping[str, Any], key: str, where: str, required: bool) -> str:
    path = check.string(t, key, where, required=required)
    if path and not os.path.isfile(path):
        raise ConfigError(f"{where}{key}: no such file: {path}")
    return path


def check_server_pem(cert: str, key: str, ca: str, where: str) -> None:
    """Raise ConfigError (naming ``where``) unless ``cert`` + ``key`` load as a matching pair and
    ``ca`` (when set) as CA certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cert or key:
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"{where}.cert/key: {cert} and {key} are not a PEM certificate and its private key: {e}") from None
    if ca:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"{where}: {ca} is not a PEM CA certificate: {e}") from None


def _server_tls(server: Mapping[str, Any], key: str) -> ServerTls | None:
    if key not in server:
        return None
    where = f"server.{key}"
    t = check.table(server, key, where)
    check.only(t, where + ".", {"cert", "key", "client_ca"})
    tls = ServerTls(_file(t, "cert", where + ".", True), _file(t, "key", where + ".", True), _file(t, "client_ca", where + ".", False), where)
    check_server_pem(tls.cert, tls.key, "", where)
    check_server_pem("", "", tls.client_ca, where + ".client_ca")
    return tls


def client_tls(t: Any, where: str) -> ClientTls | None:
    """A ``{ ca, cert, key, server_name }`` table (or ``false``: plaintext) at ``where``."""
    if t is False:
        return None
    if not isinstance(t, Mapping):
        raise ConfigError(f"{where}: must be a table {{ ca, cert, key, server_name }} or false")
    w = where + "."
    check.only(t, w, {"ca", "cert", "key", "server_name"})
    tls = ClientTls(_file(t, "ca", w, False), _file(t, "cert", w, False), _file(t, "key", w, False), check.string(t, "server_name", w), where)
    if bool(tls.cert) != bool(tls.key):
        raise ConfigError(f"{w}cert: a client certificate needs both cert and key")
    check_server_pem(tls.cert, tls.key, "", where)
    check_server_pem("", "", tls.ca, w + "ca")
    return tls


def _token(server: Mapping[str, Any]) -> tuple[str, str]:
    if "admin_token_file" in server and "admin_token_env" in server:
        raise ConfigError("server.admin_token_file: set admin_token_file or admin_token_env, not both")
    if "admin_token_file" in server:
        path = check.string(server, "admin_token_file", "server.", required=True)
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"server.admin_token_file: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
        where = "server.admin_token_file"
    elif "admin_token_env" in server:
        name = check.string(server, "admin_token_env", "server.", required=True)
        token = os.environ.get(name, "").strip()
        if not token:
            raise ConfigError(f"server.admin_token_env: the environment variable {name} is not set or empty")
        where = "server.admin_token_env"
    else:
        return "", ""
    if len(token) < 16 or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(f"{where}: the token must be at least 16 printable characters without spaces")
    return token, where


def parse_security(data: Mapping[str, Any], admin_listen: str, default_live: str) -> Security:
    """The security keys of ``[server]`` (already checked to be known keys) and the routes'
    ``live.tls`` / ``shadows[].tls``."""
    server = check.table(data, "server", "server")
    token, source = _token(server)
    admin_tls = _server_tls(server, "admin_tls")
    upstream = client_tls(server["upstream_tls"], "server.upstream_tls") if "upstream_tls" in server else None
    md_kb = check.number(server, "max_metadata_kb", "server.", 0, lo=0, hi=1 << 20, integer=True)
    allow = check.strings(server, "shadow_metadata_allow", "server.") if "shadow_metadata_allow" in server else DEFAULT_SHADOW_ALLOW
    if any(a != a.lower() or not a for a in allow):
        raise ConfigError(f"server.shadow_metadata_allow: metadata keys are lower case, got {list(allow)!r}")
    sec = Security(
        admin_token=token, admin_token_source=source, admin_tls=admin_tls, tls=_server_tls(server, "tls"), upstream_tls=upstream,
        upstream_by_address=_overrides(data, default_live, upstream), max_metadata_bytes=int(md_kb) * 1024,
        shadow_metadata_allow=frozenset((*allow, "x-shadow-request")),
    )  # fmt: skip
    if not is_loopback(admin_listen) and not sec.admin_auth:
        raise ConfigError(
            f"server.admin_listen: {admin_listen} is not a loopback address and the admin API has no authentication: "
            "set server.admin_token_file, server.admin_token_env or server.admin_tls.client_ca (mTLS)"
        )
    return sec


def _overrides(data: Mapping[str, Any], default_live: str, default: ClientTls | None) -> tuple[tuple[str, ClientTls | None], ...]:
    """Per-address TLS from the routes' ``live.tls`` and ``shadows[].tls``. Channels are per
    address, so two targets on one address with different TLS are refused."""
    found: dict[str, tuple[ClientTls | None, str]] = {}
    routes = data.get("routes", [])
    for i, r in enumerate(routes if isinstance(routes, list) else ()):
        if not isinstance(r, Mapping):
            continue
        live = r.get("live", {})
        live_address = live.get("address", default_live) if isinstance(live, Mapping) else default_live
        targets = [(live, live_address, f"routes[{i}].live.tls")]
        for j, s in enumerate(r.get("shadows", []) if isinstance(r.get("shadows", []), list) else ()):
            if isinstance(s, Mapping):
                targets.append((s, s.get("address", live_address), f"routes[{i}].shadows[{j}].tls"))
        for t, address, where in targets:
            if not isinstance(t, Mapping) or "tls" not in t:
                continue
            tls = client_tls(t["tls"], where)
            tls_key = None if tls is None else (tls.ca, tls.cert, tls.key, tls.server_name)
            if address in found:
                other, other_where = found[address]
                other_key = None if other is None else (other.ca, other.cert, other.key, other.server_name)
                if other_key != tls_key:
                    raise ConfigError(f"{where}: {address} already has other TLS settings at {other_where} (one channel per address)")
            found[address] = (tls, where)
    return tuple((a, t) for a, (t, _) in found.items())


# One secret per parent process, made before the workers fork (so they share it): the token of the
# workers' private admin ports when the parent's admin API has mTLS but no token of its own.
_WORKER_TOKEN = secrets.token_urlsafe(32)


def worker_security(sec: Security) -> Security:
    """``serve --workers``: a worker's admin port is private (127.0.0.1:0, only the parent calls
    it) and plaintext; when the parent's admin API is closed, the workers' need a token too: the
    configured one, else a random one the parent holds."""
    if not sec.admin_auth:
        return replace(sec, admin_tls=None)
    return replace(sec, admin_tls=None, admin_token=sec.admin_token or _WORKER_TOKEN, admin_token_source="workers")
