"""Test helpers for federation: a tiny CA, SPIFFE bundle documents, and a foreign bundle
endpoint (HTTPS) whose behaviour a test switches: good, down, slow, garbage, ..."""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(name: str, spiffe_trust_domain: str | None = None) -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                            False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if spiffe_trust_domain is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"spiffe://{spiffe_trust_domain}")]), critical=False)
    return Ca(builder.sign(key, hashes.SHA256()), key)


def issue(ca: Ca, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (),
          uri: str | None = None) -> tuple[str, str]:
    """A leaf for TLS server and client use: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if uri is not None:
        names.append(x509.UniformResourceIdentifier(uri))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=12))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def bundle_document(*roots: x509.Certificate, sequence: int = 1, refresh_hint: int = 1,
                    ) -> bytes:
    keys = [{"use": "x509-svid", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA",
             "x5c": [base64.b64encode(r.public_bytes(serialization.Encoding.DER)).decode()]}
            for r in roots]
    return json.dumps({"keys": keys, "spiffe_sequence": sequence,
                       "spiffe_refresh_hint": refresh_hint}).encode()


class ForeignEndpoint:
    """An HTTPS bundle endpoint on 127.0.0.1 with a certificate of `ca`. `mode`: "good"
    (serves `body`), "garbage", "slow" (answers after `slow_seconds`), "down" (closes the
    connection at once)."""

    def __init__(self, ca: Ca, tmp: Path) -> None:
        cert, key = issue(ca, dns=("localhost",), ips=("127.0.0.1",))
        (tmp / "endpoint.pem").write_text(cert)
        (tmp / "endpoint.key").write_text(key)
        self.mode = "good"
        self.body = b"{}"
        self.slow_seconds = 5.0
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests += 1
                if endpoint.mode == "down":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if endpoint.mode == "slow":
                    time.sleep(endpoint.slow_seconds)
                body = b"\x00not json{" if endpoint.mode == "garbage" else endpoint.body
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp / "endpoint.pem", tmp / "endpoint.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/bundle"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
