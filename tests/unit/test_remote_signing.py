"""Certificates and CRLs assembled from cryptography's TBS bytes and a signature made elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.core import templates
from meshca.core.authority import SigningAuthority, sign_leaf
from meshca.core.bundle import TrustBundle
from meshca.core.keys import SigningKey
from meshca.core.remote_signing import (
    LocalSigner,
    SignatureRejected,
    SigningPublicKey,
    hash_for,
    sign_certificate,
    sign_crl,
    sign_csr,
)
from meshca.core.spiffe import SpiffeId
from tests.unit.pki import CALLER, NOW, TRUST_DOMAIN, ec_key, rsa_key


class HiddenKeySigner:
    """Signs like a remote service would: the caller sees only bytes in, bytes out."""

    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self.calls: list[bytes] = []

    @property
    def public_key(self) -> SigningPublicKey:
        return self._key.public_key()

    def sign(self, tbs: bytes) -> bytes:
        self.calls.append(tbs)
        algorithm = hash_for(self.public_key)
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(tbs, ec.ECDSA(algorithm))
        return self._key.sign(tbs, padding.PKCS1v15(), algorithm)


class WrongKeySigner(HiddenKeySigner):
    """Claims one public key, signs with another: the assembly must refuse the result."""

    def __init__(self, claimed: SigningKey, actual: SigningKey) -> None:
        super().__init__(actual)
        self._claimed = claimed

    @property
    def public_key(self) -> SigningPublicKey:
        return self._claimed.public_key()


KEYS: dict[str, Callable[[], SigningKey]] = {
    "ec-p256": lambda: ec_key("secp256r1", 11),
    "ec-p384": lambda: ec_key("secp384r1", 11),
    "rsa-2048": lambda: rsa_key(2048, 11),
}


def _root_builder(key: SigningKey) -> x509.CertificateBuilder:
    subject = templates.ca_subject("meshca", "root", 1, 42)
    return templates.ca_certificate(
        public_key=key.public_key(), subject=subject,
        trust_domain=SpiffeId.for_trust_domain(TRUST_DOMAIN), issuer=None, serial=42,
        not_before=NOW - timedelta(minutes=5), not_after=NOW + timedelta(days=365), path_length=1)


@pytest.mark.parametrize("kind", KEYS)
def test_remote_self_signed_root_verifies_and_matches_local_signing(kind: str) -> None:
    key = KEYS[kind]()
    signer = HiddenKeySigner(key)
    remote = sign_certificate(_root_builder(key), signer)
    local = _root_builder(key).sign(key, hash_for(key.public_key()))

    remote.verify_directly_issued_by(remote)
    assert signer.calls == [remote.tbs_certificate_bytes]
    assert remote.signature_algorithm_oid == local.signature_algorithm_oid
    assert remote.signature_hash_algorithm is not None
    assert remote.signature_hash_algorithm.name == ("sha384" if kind == "ec-p384" else "sha256")
    # Everything but the signature is what cryptography would have produced itself.
    assert remote.tbs_certificate_bytes == local.tbs_certificate_bytes
    if kind.startswith("rsa"):  # PKCS#1 v1.5 is deterministic: byte-identical certificates
        assert remote == local


def test_ec_p384_key_signs_with_sha384_even_though_the_stand_in_is_p256() -> None:
    key = ec_key("secp384r1", 12)
    cert = sign_certificate(_root_builder(key), HiddenKeySigner(key))
    assert cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA384


@pytest.mark.parametrize("kind", KEYS)
def test_a_signature_from_another_key_is_refused(kind: str) -> None:
    claimed = KEYS[kind]()
    actual = ec_key("secp256r1", 13) if kind.startswith("ec") else rsa_key(2048, 13)
    if kind == "ec-p384":
        actual = ec_key("secp384r1", 13)
    with pytest.raises(SignatureRejected, match="does not verify"):
        sign_certificate(_root_builder(claimed), WrongKeySigner(claimed, actual))


def _intermediate(root_key: SigningKey, root: x509.Certificate, key: SigningKey) -> x509.Certificate:
    builder = templates.ca_certificate(
        public_key=key.public_key(), subject=templates.ca_subject("meshca", "intermediate", 1, 43),
        trust_domain=SpiffeId.for_trust_domain(TRUST_DOMAIN), issuer=root, serial=43,
        not_before=NOW - timedelta(minutes=5), not_after=NOW + timedelta(days=30), path_length=0)
    return sign_certificate(builder, HiddenKeySigner(root_key))


@pytest.mark.parametrize("kind", KEYS)
def test_authority_with_a_remote_signer_issues_leaves_that_chain_to_the_root(kind: str) -> None:
    root_key = KEYS[kind]()
    root = sign_certificate(_root_builder(root_key), HiddenKeySigner(root_key))
    inter_key = ec_key("secp256r1", 14)
    intermediate = _intermediate(root_key, root, inter_key)
    intermediate.verify_directly_issued_by(root)
    signer = HiddenKeySigner(inter_key)
    authority = SigningAuthority(generation_id=1, certificate=intermediate, private_key=None,
                                 chain=(), bundle=TrustBundle((root,)), signer=signer)
    assert authority.is_remote
    leaf_key = ec_key("secp256r1", 15)
    builder = templates.leaf_svid(
        public_key=leaf_key.public_key(), spiffe_id=CALLER, issuer=intermediate,
        serial=x509.random_serial_number(), not_before=NOW - timedelta(minutes=1),
        not_after=NOW + timedelta(hours=1))
    leaf = sign_leaf(authority, builder, CALLER)
    leaf.verify_directly_issued_by(intermediate)
    assert len(signer.calls) == 1


def test_authority_needs_exactly_one_of_key_and_signer() -> None:
    key = ec_key("secp256r1", 16)
    root = _root_builder(key).sign(key, hashes.SHA256())
    with pytest.raises(ValueError, match="exactly one"):
        SigningAuthority(generation_id=1, certificate=root, private_key=None, chain=(),
                         bundle=TrustBundle((root,)))
    with pytest.raises(ValueError, match="exactly one"):
        SigningAuthority(generation_id=1, certificate=root, private_key=key, chain=(),
                         bundle=TrustBundle((root,)), signer=HiddenKeySigner(key))
    with pytest.raises(ValueError, match="does not match"):
        SigningAuthority(generation_id=1, certificate=root, private_key=None, chain=(),
                         bundle=TrustBundle((root,)), signer=HiddenKeySigner(ec_key("secp256r1", 17)))


def test_local_signer_takes_cryptographys_own_path() -> None:
    key = rsa_key(2048, 11)
    assert sign_certificate(_root_builder(key), LocalSigner(key)) == \
        _root_builder(key).sign(key, hashes.SHA256())


@pytest.mark.parametrize("kind", KEYS)
def test_remote_crl_verifies_under_the_issuer(kind: str) -> None:
    key = KEYS[kind]()
    issuer = sign_certificate(_root_builder(key), HiddenKeySigner(key))
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
               .last_update(NOW).next_update(NOW + timedelta(hours=1))
               .add_extension(x509.CRLNumber(7), critical=False)
               .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(99)
                                        .revocation_date(NOW).build()))
    crl = sign_crl(builder, HiddenKeySigner(key))
    assert crl.is_signature_valid(key.public_key())
    assert crl.get_revoked_certificate_by_serial_number(99) is not None
    local = builder.sign(key, hash_for(key.public_key()))
    assert crl.signature_algorithm_oid == local.signature_algorithm_oid
    with pytest.raises(SignatureRejected):
        other = ec_key("secp256r1", 18) if kind.startswith("ec") else rsa_key(2048, 18)
        if kind == "ec-p384":
            other = ec_key("secp384r1", 18)
        sign_crl(builder, WrongKeySigner(key, other))


def test_long_certificates_use_multi_byte_der_lengths() -> None:
    """A 4096-bit RSA signature and many SANs push every length past one byte."""
    key = rsa_key(4096, 0)
    builder = _root_builder(key).add_extension(
        x509.IssuerAlternativeName([x509.DNSName(f"n{i}.example") for i in range(300)]), critical=False)
    cert = sign_certificate(builder, HiddenKeySigner(key))
    assert len(cert.public_bytes(Encoding.DER)) > 4096  # lengths of 2 bytes inside and out
    cert.verify_directly_issued_by(cert)


def test_unsupported_public_key_type_is_a_type_error() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    class EdSigner:
        public_key = ed25519.Ed25519PrivateKey.generate().public_key()

        def sign(self, tbs: bytes) -> bytes:
            return b""

    key = ec_key("secp256r1", 19)
    with pytest.raises(TypeError, match="Ed25519"):
        sign_certificate(_root_builder(key), EdSigner())  # type: ignore[arg-type]
    assert isinstance(rsa_key(2048, 11), rsa.RSAPrivateKey)


def _csr_builder() -> x509.CertificateSigningRequestBuilder:
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "meshca intermediate")]))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}")]), critical=False))


@pytest.mark.parametrize("kind", KEYS)
def test_a_remote_csr_carries_the_signers_key_and_verifies(kind: str) -> None:
    key = KEYS[kind]()
    signer = HiddenKeySigner(key)
    csr = sign_csr(_csr_builder(), signer)
    assert csr.public_key() == key.public_key()  # not the stand-in's
    assert csr.is_signature_valid
    assert signer.calls == [csr.tbs_certrequest_bytes]
    local = sign_csr(_csr_builder(), LocalSigner(key))
    assert local.subject == csr.subject and list(local.extensions) == list(csr.extensions)
    assert csr.signature_algorithm_oid == local.signature_algorithm_oid


def test_a_remote_csr_signed_by_another_key_is_refused() -> None:
    claimed, actual = ec_key("secp256r1", 11), ec_key("secp256r1", 13)
    with pytest.raises(SignatureRejected, match="does not verify"):
        sign_csr(_csr_builder(), WrongKeySigner(claimed, actual))
