"""What a workload does with its certificate: parse it as an X509-SVID, and talk mTLS."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from spiffe import X509Bundle, X509Svid

from meshca.infra.keyfiles import private_key_pem
from tests.support import MeshcaProcess, csr_pem, ec_key, rsa_key, uri


def _svid_files(meshca: MeshcaProcess, tmp: Path, namespace: str, account: str,
                key: object = None) -> tuple[Path, Path, list[str]]:
    key = key or ec_key()
    chain = meshca.create_certificate(csr_pem(key), token=meshca.token(namespace, account))
    chain_path = tmp / f"{account}-chain.pem"
    key_path = tmp / f"{account}-key.pem"
    chain_path.write_text("".join(chain[:-1]))
    key_path.write_bytes(private_key_pem(key))  # type: ignore[arg-type]
    return chain_path, key_path, chain


def test_spiffe_library_parses_the_svid(meshca: MeshcaProcess, tmp_path: Path) -> None:
    key = ec_key()
    chain_path, key_path, chain = _svid_files(meshca, tmp_path, "shop", "cart", key)
    svid = X509Svid.parse(chain_path.read_bytes(), key_path.read_bytes())
    assert str(svid.spiffe_id) == "spiffe://cluster.local/ns/shop/sa/cart"
    assert len(svid.cert_chain) == 2
    bundle = X509Bundle.parse(svid.spiffe_id.trust_domain, chain[-1].encode())
    assert len(bundle.x509_authorities) == 1


@pytest.mark.parametrize("key_factory", [ec_key, lambda: rsa_key(2048)], ids=["ecdsa", "rsa"])
def test_two_workloads_complete_mutual_tls(meshca: MeshcaProcess, tmp_path: Path,
                                           key_factory: object) -> None:
    server_chain, server_key, chain = _svid_files(meshca, tmp_path, "shop", "backend",
                                                  key_factory())  # type: ignore[operator]
    client_chain, client_key, _ = _svid_files(meshca, tmp_path, "shop", "frontend",
                                              key_factory())  # type: ignore[operator]
    bundle = chain[-1]

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_chain, server_key)
    server_ctx.load_verify_locations(cadata=bundle)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False  # SPIFFE peers are checked by URI SAN, not host name
    client_ctx.load_cert_chain(client_chain, client_key)
    client_ctx.load_verify_locations(cadata=bundle)

    seen: dict[str, str] = {}
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen["server_sees"] = _peer_spiffe_id(tls)
            tls.sendall(b"ok")

    thread = threading.Thread(target=accept)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            client_ctx.wrap_socket(raw) as tls:
        seen["client_sees"] = _peer_spiffe_id(tls)
        assert tls.recv(2) == b"ok"
    thread.join(10)
    listener.close()
    assert seen == {
        "server_sees": "spiffe://cluster.local/ns/shop/sa/frontend",
        "client_sees": "spiffe://cluster.local/ns/shop/sa/backend",
    }


def _peer_spiffe_id(tls: ssl.SSLSocket) -> str:
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return str(san.get_values_for_type(x509.UniformResourceIdentifier)[0])


def test_foreign_client_certificate_is_refused_at_handshake(meshca: MeshcaProcess,
                                                            tmp_path: Path) -> None:
    """Client certificates are verified when presented: one from another CA fails TLS."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")])
    now = datetime.now(UTC)
    rogue = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
             .add_extension(x509.SubjectAlternativeName(
                 [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/web")]),
                 critical=False)
             .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding
    channel = meshca.channel(rogue.public_bytes(Encoding.PEM), private_key_pem(key))
    with pytest.raises(grpc.RpcError) as err:
        meshca.create_certificate(csr_pem(), channel=channel)
    channel.close()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake itself failed
    assert meshca.process.poll() is None


def test_mesh_client_certificate_is_accepted(meshca: MeshcaProcess, tmp_path: Path) -> None:
    chain_path, key_path, _ = _svid_files(meshca, tmp_path, "shop", "renewer")
    channel = meshca.channel(chain_path.read_bytes(), key_path.read_bytes())
    chain = meshca.create_certificate(csr_pem(), channel=channel)
    channel.close()
    assert len(chain) == 3


def test_renewal_by_client_certificate_without_a_token(meshca: MeshcaProcess, tmp_path: Path) -> None:
    chain_path, key_path, _ = _svid_files(meshca, tmp_path, "shop", "renew-me")
    channel = meshca.channel(chain_path.read_bytes(), key_path.read_bytes())
    before = meshca.issued_count()
    chain = meshca.create_certificate(csr_pem(), metadata=[], channel=channel)
    channel.close()
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/shop/sa/renew-me"]
    assert meshca.issued_count() == before + 1


def test_renewal_cannot_change_identity(meshca: MeshcaProcess, tmp_path: Path) -> None:
    chain_path, key_path, _ = _svid_files(meshca, tmp_path, "shop", "holder")
    channel = meshca.channel(chain_path.read_bytes(), key_path.read_bytes())
    with pytest.raises(grpc.RpcError) as err:
        meshca.create_certificate(csr_pem(sans=[uri("spiffe://cluster.local/ns/shop/sa/other")]),
                                  metadata=[], channel=channel)
    channel.close()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
