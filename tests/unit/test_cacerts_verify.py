"""What x509.verification now decides beyond meshca's own sentences: its words are the fallback."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from meshca.infra.cacerts import CERT_CHAIN, ROOT_CERT
from tests.unit.pki import NOW, ec_key
from tests.unit.test_cacerts import DAY, EC, key_pem, pem, refusal, write_cacerts


def _v1_root_and_signing_ca() -> tuple[x509.Certificate, x509.Certificate]:
    root_key = ec_key("secp256r1", 394)
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "v1 root")])
    root = (
        x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
        .public_key(root_key.public_key()).serial_number(0x6001)
        .not_valid_before(NOW - DAY).not_valid_after(NOW + 100 * DAY)
        .sign(root_key, hashes.SHA256())  # no extensions at all
    )
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False)
    signing = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "under a v1 root")]))
        .issuer_name(root_name).public_key(EC.key.public_key()).serial_number(0x6002)
        .not_valid_before(NOW - DAY).not_valid_after(NOW + 50 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(root_key, hashes.SHA256())
    )
    return root, signing


def test_a_v1_root_without_basic_constraints_cannot_anchor_the_chain(tmp_path: Path) -> None:
    root, signing = _v1_root_and_signing_ca()
    message = refusal(write_cacerts(tmp_path, cert=pem(signing), key=key_pem(EC.key),
                                    roots=pem(root), chain=pem(signing, root)))
    assert message.startswith(f"root {ROOT_CERT} (CN=v1 root) issues certificates but is not a CA")


def test_the_library_refusal_is_reported_when_no_rule_of_meshca_names_it(tmp_path: Path) -> None:
    """A root with a 1024-bit RSA key is below the verifier's policy and has no meshca sentence."""
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the point)
    weak_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak root")])
    weak = (
        x509.CertificateBuilder().subject_name(weak_name).issuer_name(weak_name)
        .public_key(weak_key.public_key()).serial_number(0x6003)
        .not_valid_before(NOW - DAY).not_valid_after(NOW + 100 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(weak_key, hashes.SHA256())
    )
    _, signing = _v1_root_and_signing_ca()
    signing = (
        x509.CertificateBuilder().subject_name(signing.subject).issuer_name(weak_name)
        .public_key(EC.key.public_key()).serial_number(0x6004)
        .not_valid_before(NOW - DAY).not_valid_after(NOW + 50 * DAY)
        .add_extension(signing.extensions.get_extension_for_class(x509.BasicConstraints).value,
                       critical=True)
        .add_extension(signing.extensions.get_extension_for_class(x509.KeyUsage).value,
                       critical=True)
        .sign(weak_key, hashes.SHA256())
    )
    message = refusal(write_cacerts(tmp_path, cert=pem(signing), key=key_pem(EC.key),
                                    roots=pem(weak), chain=pem(signing, weak)))
    assert message.startswith(f"{CERT_CHAIN} does not verify against {ROOT_CERT}: ")
