"""`--ext-authz-tls`: ext_authz with meshca's serving certificate, and only callers holding a
certificate issued under meshca's trust bundle get an answer; a root rotation is followed
without a restart. `--ext-authz-verbose` puts the details back into deny bodies."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.service.auth.v3 import external_auth_pb2_grpc

from tests.integration.test_ca_rotation import api, bundle_roots, eventually
from tests.security.test_ext_authz_fail_closed import (
    FAST,
    NO_ADMIN,
    body,
    envoy_request,
    ext_authz_addr,
)
from tests.support import MeshcaProcess, csr_pem, start_meshca


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    root = tmp_path_factory.mktemp("extauthz-tls")
    (root / "policies").mkdir()
    (root / "policies" / "no-admin.yaml").write_text(yaml.safe_dump(NO_ADMIN))
    process = start_meshca(root / "data", "--policy-dir", str(root / "policies"),
                           "--ext-authz-tls", "--ext-authz-verbose", *FAST)
    yield process
    process.stop()


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def workload(server: MeshcaProcess, account: str = "web") -> tuple[bytes, bytes, list[str]]:
    """A meshca-issued client certificate: (chain without the bundle, key, whole answer)."""
    key = ec.generate_private_key(ec.SECP256R1())
    chain = server.create_certificate(csr_pem(key), token=server.token("shop", account))
    return "".join(chain[:-1]).encode(), _pem(key), chain


def stranger() -> tuple[bytes, bytes]:
    """A self-signed certificate meshca never issued."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/web")]),
                critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem(key)


def check(server: MeshcaProcess, chain: bytes | None, key: bytes | None, path: str = "/cart") -> Any:
    credentials = grpc.ssl_channel_credentials(server.bundle_pem, key, chain)
    with grpc.secure_channel(ext_authz_addr(server), credentials,
                             options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
        return external_auth_pb2_grpc.AuthorizationStub(channel).Check(envoy_request(path),
                                                                       timeout=5)


def refused(server: MeshcaProcess, chain: bytes | None, key: bytes | None) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failure:
        check(server, chain, key)
    code: grpc.StatusCode = failure.value.code()
    return code


def test_a_caller_with_a_meshca_certificate_is_answered(server: MeshcaProcess) -> None:
    chain, key, _ = workload(server)
    assert check(server, chain, key).status.code == 0
    # Verbose: the deny body names the policy, rule and reason again.
    denied = body(check(server, chain, key, "/admin/users"))
    assert denied["policy"] == "shop/no-admin" and denied["rule"] == 0
    assert denied["reason"] == "policy" and "no-admin" in denied["detail"]


def test_a_caller_without_a_meshca_certificate_is_refused_at_the_handshake(
        server: MeshcaProcess) -> None:
    assert refused(server, None, None) is grpc.StatusCode.UNAVAILABLE
    assert refused(server, *stranger()) is grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(ext_authz_addr(server)) as plaintext, pytest.raises(grpc.RpcError):
        external_auth_pb2_grpc.AuthorizationStub(plaintext).Check(envoy_request(), timeout=5)


def test_a_new_root_is_trusted_without_a_restart(server: MeshcaProcess) -> None:
    old_chain, old_key, first = workload(server)
    old_root = x509.load_pem_x509_certificate(first[1].encode()).issuer
    prepared = api(server, "POST", "/v1/ca:prepare", {"kind": "root"}, expect=201)
    api(server, "POST", "/v1/ca:activate", {"kind": "root", "waive_publish_lead": True})
    new_root = next(r.subject for r in bundle_roots(server) if r.subject != old_root)

    def under_new_root() -> tuple[bytes, bytes, list[str]] | None:
        issued = workload(server)
        intermediate = x509.load_pem_x509_certificate(issued[2][1].encode())
        return issued if intermediate.issuer == new_root else None

    chain, key, _ = eventually(under_new_root, what="a certificate under the new root")
    assert prepared["actions"][0]["kind"] == "root"
    eventually(lambda: _answered(server, chain, key), what="ext_authz trusting the new root")
    assert check(server, old_chain, old_key).status.code == 0  # the old root stays trusted


def _answered(server: MeshcaProcess, chain: bytes, key: bytes) -> bool:
    try:
        return bool(check(server, chain, key).status.code == 0)
    except grpc.RpcError:
        return False

