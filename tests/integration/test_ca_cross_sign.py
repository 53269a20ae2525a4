"""`meshca serve --root-rotation cross-sign`: after a root rotation, the chains meshca serves
verify for a peer holding only the old root, only the new root, or both (OpenSSL's
`verify -x509_strict` and Go-style path building), over its real gRPC and admin APIs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from tests.integration.test_ca_rotation import api, bundle_roots, eventually
from tests.support import MeshcaProcess, csr_pem, start_meshca
from tests.vault.chains import openssl_verify, path_to_root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    process = start_meshca(tmp_path_factory.mktemp("cross") / "data", "--root-rotation", "cross-sign")
    yield process
    process.stop()


def served(server: MeshcaProcess, trusted: bytes) -> list[x509.Certificate]:
    """CreateCertificate over a TLS channel trusting only `trusted`: the chain as sent."""
    channel = grpc.secure_channel(server.grpc_addr, grpc.ssl_channel_credentials(trusted),
                                  options=[("grpc.ssl_target_name_override", "localhost")])
    try:
        chain = server.create_certificate(csr_pem(), channel=channel)
    finally:
        channel.close()
    return [x509.load_pem_x509_certificate(c.encode()) for c in chain[:-1]]


def pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM)


def test_after_a_cross_signed_rotation_chains_verify_with_the_old_root_the_new_or_both(
        server: MeshcaProcess) -> None:
    [old_root] = bundle_roots(server)
    first = served(server, pem(old_root))
    assert len(first) == 2  # no cross certificate before a rotation

    api(server, "POST", "/v1/ca:prepare", {"kind": "root"}, expect=201)
    api(server, "POST", "/v1/ca:activate", {"kind": "root", "waive_publish_lead": True})
    new_root = eventually(lambda: next((r for r in bundle_roots(server) if r != old_root), None),
                          what="the new root in the bundle")

    def rotated() -> list[x509.Certificate] | None:
        chain = served(server, pem(old_root))  # meshca's own TLS chain verifies with the old root
        return chain if chain[1].issuer == new_root.subject else None

    leaf, intermediate, cross = eventually(rotated, timeout=20, what="a chain under the new root")
    assert cross.subject == new_root.subject and cross.issuer == old_root.subject
    assert cross.public_key() == new_root.public_key()
    for trusted in ([old_root], [new_root], [old_root, new_root]):
        checked = openssl_verify(trusted, [intermediate, cross], leaf)
        assert checked.returncode == 0, (trusted, checked.stdout + checked.stderr)
        path = path_to_root(trusted, [intermediate, cross], leaf)
        assert path[-1] == (new_root if new_root in trusted else old_root)
    assert openssl_verify([old_root], [intermediate], leaf).returncode != 0  # the cross does it


def test_cross_sign_with_an_upstream_is_refused_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "meshca", "serve", "--data-dir", str(tmp_path / "d"),
                             "--root-rotation", "cross-sign", "--upstream", "vault-pki"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--root-rotation cross-sign" in result.stderr and "Traceback" not in result.stderr
