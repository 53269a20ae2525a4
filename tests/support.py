"""Helpers the tests share: a real meshca server in a subprocess, a sidecar-like client,
CSRs and tokens of every shape (good and bad)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf import struct_pb2
from sqlalchemy import create_engine, func, select

from meshca.core import jwt
from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from meshca.infra.db.engine import open_engine
from meshca.infra.db.schema import issued_certificates
from meshca.infra.dev_issuer import DEV_ISSUER, DevIssuer
from meshca.infra.keyfiles import KeyEncryptionKey

CA_METHOD = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
TRACEBACK = "Traceback (most recent call last)"

# Logs in which a test provokes a traceback on purpose (a crash it then checks for), with why:
# tests/conftest.py fails the session on a traceback in any other log under the session's tmp.
PROVOKED_TRACEBACKS: dict[Path, str] = {}


def expect_traceback(log_path: Path, why: str) -> None:
    """Declare that `log_path` may hold a traceback because the test provokes one."""
    PROVOKED_TRACEBACKS[log_path.resolve()] = why


def logs_with_tracebacks(root: Path) -> dict[Path, str]:
    """Every `*.log` under `root` holding a traceback not declared with expect_traceback, with
    the lines around the first one."""
    found: dict[Path, str] = {}
    for path in sorted(root.rglob("*.log")):
        if not path.is_file() or path.resolve() in PROVOKED_TRACEBACKS:
            continue
        text = path.read_text(errors="replace")
        at = text.find(TRACEBACK)
        if at >= 0:
            found[path] = text[max(0, at - 300):at + 1500]
    return found


@dataclass
class MeshcaProcess:
    """`meshca serve` running in a subprocess on ephemeral ports."""

    data_dir: Path
    process: subprocess.Popen[bytes]
    grpc_addr: str
    metrics_addr: str
    database_url: str
    log_path: Path
    admin_addr: str = ""
    kek_text: str | None = None  # the server's $MESHCA_KEK, when the test gave one
    _channel: grpc.Channel | None = field(default=None, repr=False)

    @property
    def bundle_pem(self) -> bytes:
        return (self.data_dir / "root-cert.pem").read_bytes()

    @property
    def issuer(self) -> DevIssuer:
        kek = KeyEncryptionKey.from_text(self.kek_text, "MESHCA_KEK") if self.kek_text else None
        return DevIssuer.load(self.data_dir, kek)

    def token(self, namespace: str = "default", account: str = "web", **kw: Any) -> str:
        kw.setdefault("audiences", ["istio-ca"])
        kw.setdefault("ttl_seconds", 600)
        return self.issuer.token(namespace, account, **kw)

    def channel(self, client_chain: bytes | None = None, client_key: bytes | None = None) -> grpc.Channel:
        if client_chain is None and self._channel is not None:
            return self._channel
        credentials = grpc.ssl_channel_credentials(self.bundle_pem, client_key, client_chain)
        channel = grpc.secure_channel(
            self.grpc_addr, credentials,
            options=[("grpc.ssl_target_name_override", "localhost"),
                     ("grpc.max_send_message_length", 64 * 1024 * 1024)],
        )
        if client_chain is None:
            self._channel = channel
        return channel

    def create_certificate(
        self,
        csr: str,
        *,
        token: str | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        validity: int = 0,
        struct: dict[str, Any] | None = None,
        channel: grpc.Channel | None = None,
    ) -> list[str]:
        request = ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=validity)
        if struct is not None:
            s = struct_pb2.Struct()
            s.update(struct)
            request.metadata.CopyFrom(s)
        if metadata is None:
            metadata = [("authorization", f"Bearer {token or self.token()}")]
        stub = ca_pb2_grpc.IstioCertificateServiceStub(channel or self.channel())
        response = stub.CreateCertificate(request, metadata=list(metadata), timeout=30)
        return list(response.cert_chain)

    def issued_count(self) -> int:
        engine = open_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return int(connection.execute(
                    select(func.count()).select_from(issued_certificates)).scalar_one())
        finally:
            engine.dispose()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_meshca(data_dir: Path, *extra: str, database_url: str | None = None,
                 timeout: float = 60.0, env: dict[str, str] | None = None) -> MeshcaProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    endpoints = data_dir / "endpoints.json"
    endpoints.unlink(missing_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}.log"
    args = [sys.executable, "-m", "meshca", "serve", "--data-dir", str(data_dir),
            "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
            "--admin-addr", "127.0.0.1:0", "--ext-authz-addr", "127.0.0.1:0", *extra]
    if database_url:
        args += ["--database-url", database_url]
    log_file = log_path.open("ab")
    process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    deadline = time.monotonic() + timeout
    while not endpoints.exists():
        if process.poll() is not None:
            raise RuntimeError(f"meshca exited with {process.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"meshca did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    info = json.loads(endpoints.read_text())
    url = database_url or f"sqlite:///{data_dir / 'meshca.db'}"
    return MeshcaProcess(data_dir, process, info["grpc"], info["metrics"], url, log_path,
                         admin_addr=info["admin"], kek_text=(env or {}).get("MESHCA_KEK"))


# ---- CSRs -------------------------------------------------------------------------------

def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def csr_pem(key: Any = None, *, sans: Sequence[x509.GeneralName] = (), ca: bool | None = None,
            key_usage: x509.KeyUsage | None = None, san_critical: bool = False,
            hash_alg: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None) -> str:
    key = key or ec_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=san_critical)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    algorithm = None if _is_edwards(key) else (hash_alg or hashes.SHA256())
    return builder.sign(key, algorithm).public_bytes(Encoding.PEM).decode()


def _is_edwards(key: Any) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
    return isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


# ---- tokens -----------------------------------------------------------------------------

def projected_claims(namespace: str = "default", account: str = "web", *, now: float | None = None,
                     ttl: int = 600, audience: Sequence[str] = ("istio-ca",),
                     issuer: str = DEV_ISSUER) -> dict[str, Any]:
    issued = int(time.time() if now is None else now)
    return {
        "aud": list(audience), "exp": issued + ttl, "iat": issued, "nbf": issued, "iss": issuer,
        "jti": "6b1a7c0e-0c4e-4d1c-9a51-2f5d3f0f9a11",
        "sub": f"system:serviceaccount:{namespace}:{account}",
        "kubernetes.io": {"namespace": namespace,
                          "serviceaccount": {"name": account, "uid": "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"}},
    }


def signed_token(server: MeshcaProcess, claims: dict[str, Any],
                 header: dict[str, Any] | None = None) -> str:
    """A token signed by the server's development issuer key with arbitrary claims/header."""
    issuer = server.issuer
    token = jwt.sign(claims, issuer._key, issuer.kid)
    if header is None:
        return token
    _, body, _ = token.split(".")
    head = jwt.b64url_encode(json.dumps(header).encode())
    key = issuer._key
    signing_input = f"{head}.{body}".encode()
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{jwt.b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def postgres_url() -> str | None:
    return os.environ.get("MESHCA_TEST_POSTGRES_URL")


def reset_postgres(url: str) -> None:
    """Drop meshca's tables so a test starts from an empty database."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as connection:
        # Every table in the schema, so a table a later migration adds is dropped too.
        tables = connection.exec_driver_sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").scalars().all()
        if tables:
            connection.exec_driver_sql(
                "DROP TABLE IF EXISTS " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
    engine.dispose()


# ---- admin REST API ---------------------------------------------------------------------

@dataclass
class AdminResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)


class AdminClient:
    """A plain HTTPS client of the admin API: trusts the server's root-cert.pem, checks the
    server name `localhost`, and may present a client certificate (chain and key as PEM)."""

    def __init__(self, server: MeshcaProcess, client_chain: bytes | None = None,
                 client_key: bytes | None = None, *, timeout: float = 30.0) -> None:
        host, _, port = server.admin_addr.rpartition(":")
        self.host, self.port, self.timeout = host, int(port), timeout
        self.context = ssl.create_default_context(cadata=server.bundle_pem.decode())
        if client_chain is not None:
            assert client_key is not None
            with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain wants files
                chain_file, key_file = Path(tmp) / "chain.pem", Path(tmp) / "key.pem"
                chain_file.write_bytes(client_chain)
                key_file.write_bytes(client_key)
                self.context.load_cert_chain(chain_file, key_file)

    def request(self, method: str, path: str, *, token: str | None = None,
                authorization: str | None = None, json_body: Any = None,
                accept: str | None = None) -> AdminResponse:
        """`token` sends `Authorization: Bearer <token>`; `authorization` sends the header
        verbatim. Raises OSError (ssl.SSLError, ConnectionError) when TLS refuses us."""
        headers = {"Connection": "close"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if authorization is not None:
            headers["Authorization"] = authorization
        if accept is not None:
            headers["Accept"] = accept
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                 context=self.context)
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            connection.sock = self.context.wrap_socket(raw, server_hostname="localhost")
        except BaseException:
            raw.close()
            raise
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return AdminResponse(response.status,
                                 {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def get(self, path: str, **kw: Any) -> AdminResponse:
        return self.request("GET", path, **kw)

    def post(self, path: str, json_body: Any = None, **kw: Any) -> AdminResponse:
        return self.request("POST", path, json_body=json_body, **kw)


def admin_token(server: MeshcaProcess) -> str:
    """The bootstrap admin token meshca wrote on its first start."""
    return (server.data_dir / "admin-token").read_text().strip()
