"""A sidecar's happy path, over gRPC+TLS against the real server."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support import MeshcaProcess, csr_pem, ec_key, uri


def test_chain_layout_leaf_intermediate_bundle_last(meshca: MeshcaProcess, tmp_path: Path) -> None:
    before = meshca.issued_count()
    chain = meshca.create_certificate(csr_pem())
    assert len(chain) == 3
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    intermediate = x509.load_pem_x509_certificate(chain[1].encode())
    assert chain[2] == meshca.bundle_pem.decode()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/default/sa/web"]
    assert len(leaf.subject) == 0
    assert leaf.issuer == intermediate.subject
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=24, minutes=1)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert meshca.issued_count() == before + 1
    (tmp_path / "leaf.pem").write_text(chain[0])
    (tmp_path / "inter.pem").write_text(chain[1])
    (tmp_path / "bundle.pem").write_text(chain[2])
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "bundle.pem"),
         "-untrusted", str(tmp_path / "inter.pem"), str(tmp_path / "leaf.pem")],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")


def test_csr_with_own_spiffe_id_is_accepted(meshca: MeshcaProcess) -> None:
    chain = meshca.create_certificate(
        csr_pem(sans=[uri("spiffe://cluster.local/ns/prod/sa/api")]),
        token=meshca.token("prod", "api"))
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/prod/sa/api"]


def test_requested_lifetime_is_honoured(meshca: MeshcaProcess) -> None:
    chain = meshca.create_certificate(csr_pem(ec_key()), validity=3600)
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=1, minutes=1)
