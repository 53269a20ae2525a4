"""`meshca request`: make a key and CSR, call CreateCertificate over TLS, write the files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.config import ENDPOINTS_FILE
from meshca.core.certificates import spiffe_id_of
from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from meshca.infra.dev_issuer import DevIssuer
from meshca.infra.keyfiles import KeyFileError, private_key_pem, write_private_file

DEFAULT_ADDR = "localhost:15012"
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _refusal(addr: str, exc: grpc.RpcError) -> str:
    """One line for a failed call: the server's refusal as it gave it, or, when there was no
    server to refuse, the same words the admin commands use."""
    code, details = exc.code(), str(exc.details() or "")
    if code in _UNREACHABLE:
        lowered = details.lower()
        why = ("connection refused" if "refused" in lowered
               else "timed out" if code is grpc.StatusCode.DEADLINE_EXCEEDED or "timeout" in lowered
               else "TLS failed" if "ssl" in lowered or "handshake" in lowered
               else "no answer")
        return f"cannot reach meshca at {addr}: {why}; is `meshca serve` running?"
    return f"{code.name}: {details}"


def make_csr(key: ec.EllipticCurvePrivateKey, spiffe_id: str | None) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if spiffe_id:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM).decode()


def run_request(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    bundle_path = data_dir / "root-cert.pem"
    if not bundle_path.exists():
        print(f"meshca: no trust bundle at {bundle_path}; is `meshca serve` running with "
              f"--data-dir {data_dir}?", file=sys.stderr)
        return 1
    addr = args.addr
    if addr is None:
        endpoints = data_dir / ENDPOINTS_FILE
        try:
            addr = json.loads(endpoints.read_text())["grpc"] if endpoints.exists() else DEFAULT_ADDR
        except (ValueError, KeyError, TypeError, OSError):
            print(f"meshca: {endpoints} has no usable \"grpc\" address (pass --addr)", file=sys.stderr)
            return 1
    if args.token_file:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            print(f"meshca: cannot read the token file {args.token_file}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
    else:
        try:
            issuer = DevIssuer.load(data_dir, kek_file=args.kek_file)
        except (FileNotFoundError, KeyFileError) as exc:
            print(f"meshca: {exc}", file=sys.stderr)
            return 1
        token = issuer.token(
            args.namespace, args.service_account, audiences=["istio-ca"], ttl_seconds=600
        )
    key = ec.generate_private_key(ec.SECP256R1())
    request = ca_pb2.IstioCertificateRequest(
        csr=make_csr(key, None),
        validity_duration=int(args.ttl.total_seconds()) if args.ttl else 0,
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=bundle_path.read_bytes())
    options = [("grpc.ssl_target_name_override", args.server_name)]
    with grpc.secure_channel(addr, credentials, options=options) as channel:
        stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
        try:
            response = stub.CreateCertificate(
                request, metadata=[("authorization", f"Bearer {token}")], timeout=30
            )
        except grpc.RpcError as exc:
            print(f"meshca: {_refusal(addr, exc)}", file=sys.stderr)
            return 1
    chain = list(response.cert_chain)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "cert-chain.pem").write_text("".join(chain[:-1]))
    (out / "root-cert.pem").write_text(chain[-1])
    write_private_file(out / "key.pem", private_key_pem(key))
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    print(f"{spiffe_id_of(leaf)} "
          f"valid until {leaf.not_valid_after_utc.isoformat()}; wrote {out}/cert-chain.pem, "
          f"key.pem, root-cert.pem")
    return 0
