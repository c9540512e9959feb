"""Test certificates made with the ``openssl`` command line (P-256 keys: quick): a CA, server
certificates for 127.0.0.1/localhost, client certificates, and a second CA nobody trusts.

``make_pki(folder)`` returns a ``Pki`` of file paths; ``leaf(...)`` adds one more certificate
(another serial and subject: what a reload test swaps in); ``serial_of(pem)`` reads a certificate's
serial number (of the PEM a TLS peer presented) with the stdlib.
"""

from __future__ import annotations

import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def _run(*args: str) -> None:
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr.strip()}")


def _key(path: Path) -> None:
    _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    _key(key)
    _run("req", "-x509", "-new", "-key", str(key), "-subj", f"/CN={name}", "-days", "2", "-out", str(cert),
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return cert, key


def leaf(folder: Path, name: str, ca: tuple[Path, Path], serial: int, client: bool = False) -> tuple[Path, Path]:
    """A certificate (CN ``name``, serial ``serial``) signed by ``ca`` = (cert, key); server
    certificates name 127.0.0.1 and localhost."""
    key, csr, cert, ext = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem", folder / f"{name}.ext"
    _key(key)
    _run("req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr))
    usage = "clientAuth" if client else "serverAuth"
    san = "" if client else "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    ext.write_text(f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n{san}")
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-set_serial", str(serial), "-days", "2",
         "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return cert, key


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Path
    ca_key: Path
    server: tuple[Path, Path]  # (cert, key), serial 1001, CN server-1
    client: tuple[Path, Path]  # signed by ca, serial 2001
    rogue_ca: Path  # a CA nobody trusts
    rogue_client: tuple[Path, Path]  # signed by rogue_ca

    def read(self, p: Path) -> bytes:
        return p.read_bytes()


def make_pki(folder: Path | None = None) -> Pki:
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="shadowgrpc-pki-"))
    ca = _ca(folder, "test-ca")
    rogue = _ca(folder, "rogue-ca")
    return Pki(
        folder=folder, ca=ca[0], ca_key=ca[1], server=leaf(folder, "server-1", ca, 1001), client=leaf(folder, "client-1", ca, 2001, client=True),
        rogue_ca=rogue[0], rogue_client=leaf(folder, "rogue-client", rogue, 3001, client=True),
    )  # fmt: skip


def serial_of(pem: str | bytes) -> int:
    """The serial number of a PEM certificate (stdlib only: ssl's private test decoder)."""
    text = pem.decode() if isinstance(pem, bytes) else pem
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(text)
        f.flush()
        return int(ssl._ssl._test_decode_cert(f.name)["serialNumber"], 16)


def peer_cert(host: str, port: int, ca: Path, client: tuple[Path, Path] | None = None) -> tuple[int, str]:
    """(serial, subject CN) of the certificate a TLS server on host:port presents now (a new
    connection; ALPN h2, as grpc)."""
    import socket

    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2"])
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    with socket.create_connection((host, port), timeout=5) as s, ctx.wrap_socket(s, server_hostname=host) as t:
        pem = ssl.DER_cert_to_PEM_cert(t.getpeercert(binary_form=True))
        cn = dict(x[0] for x in t.getpeercert()["subject"])["commonName"]
    return serial_of(pem), cn
