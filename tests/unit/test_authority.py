"""The signing authority and the checks every leaf passes before it leaves meshca."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshca.core import templates
from meshca.core.authority import (
    SigningAuthority,
    SigningFailed,
    is_supported_ca_key,
    sign_leaf,
    validate_leaf,
)
from meshca.core.bundle import TrustBundle, certificate_pem
from meshca.core.spiffe import SpiffeId
from tests.unit.pki import (
    CALLER,
    NOW,
    ec_key,
    ed25519_key,
    make_authority,
    make_intermediate,
    make_root,
    rsa_key,
)

AUTHORITY = make_authority()
OTHER = SpiffeId.for_service_account("cluster.local", "default", "db")
URI = x509.UniformResourceIdentifier
EKU_MTLS = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def _usage(*, digital_signature: bool = True, cert_sign: bool = False,
           crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False,
    )


def _caller_sans() -> list[x509.GeneralName]:
    return [URI(CALLER.uri)]


@dataclass
class LeafSpec:
    """A leaf builder with every part open to being wrong on purpose."""

    sans: list[x509.GeneralName] | None = field(default_factory=_caller_sans)
    san_critical: bool = True
    subject: x509.Name = field(default_factory=lambda: x509.Name([]))
    ca: bool | None = False
    usage: x509.KeyUsage | None = field(default_factory=_usage)
    usage_critical: bool = True
    eku: list[x509.ObjectIdentifier] | None = field(default_factory=lambda: list(EKU_MTLS))
    not_after_delta: timedelta = timedelta(hours=1)  # after NOW, or after the issuer if None
    relative_to_issuer: bool = False

    def builder(self, authority: SigningAuthority = AUTHORITY) -> x509.CertificateBuilder:
        base = authority.not_after if self.relative_to_issuer else NOW
        b = (
            x509.CertificateBuilder()
            .subject_name(self.subject)
            .issuer_name(authority.certificate.subject)
            .public_key(ec_key("secp256r1", 50).public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(minutes=5))
            .not_valid_after(base + self.not_after_delta)
        )
        if self.ca is not None:
            b = b.add_extension(x509.BasicConstraints(ca=self.ca, path_length=None), critical=True)
        if self.usage is not None:
            b = b.add_extension(self.usage, critical=self.usage_critical)
        if self.eku is not None:
            b = b.add_extension(x509.ExtendedKeyUsage(self.eku), critical=False)
        if self.sans is not None:
            b = b.add_extension(x509.SubjectAlternativeName(self.sans), critical=self.san_critical)
        return b


def _template_builder(authority: SigningAuthority, spiffe_id: SpiffeId = CALLER,
                      public_key: Any = None, hours: int = 24) -> x509.CertificateBuilder:
    return templates.leaf_svid(
        public_key=public_key or ec_key("secp256r1", 51).public_key(), spiffe_id=spiffe_id,
        issuer=authority.certificate, serial=x509.random_serial_number(),
        not_before=NOW - timedelta(minutes=5), not_after=NOW + timedelta(hours=hours),
    )


# ---- SigningAuthority -----------------------------------------------------------------------

def test_authority_refuses_a_key_that_does_not_match_its_certificate() -> None:
    good = make_authority()
    for wrong in (ec_key("secp256r1", 60), rsa_key(2048)):
        with pytest.raises(ValueError, match="signing key does not match the signing certificate"):
            SigningAuthority(generation_id=1, certificate=good.certificate, private_key=wrong,
                             chain=good.chain, bundle=good.bundle)


def test_authority_exposes_chain_pem_and_not_after() -> None:
    assert AUTHORITY.chain_pem == (certificate_pem(AUTHORITY.certificate),
                                   certificate_pem(AUTHORITY.chain[0]))
    assert AUTHORITY.chain_pem[0].startswith("-----BEGIN CERTIFICATE-----")
    assert AUTHORITY.not_after == AUTHORITY.certificate.not_valid_after_utc
    assert AUTHORITY.generation_id == 7


@pytest.mark.parametrize(
    ("ca_key", "hash_name"),
    [(lambda: ec_key("secp256r1", 61), "sha256"), (lambda: ec_key("secp384r1", 61), "sha384"),
     (lambda: rsa_key(2048, 1), "sha256")],
    ids=["p256", "p384", "rsa"],
)
def test_sign_leaf_with_each_ca_key_type(ca_key: Any, hash_name: str) -> None:
    authority = make_authority(ca_key())
    cert = sign_leaf(authority, _template_builder(authority), CALLER)
    cert.verify_directly_issued_by(authority.certificate)
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == hash_name
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(URI) == [CALLER.uri]


@pytest.mark.parametrize("leaf_key", [lambda: rsa_key(2048), lambda: ed25519_key()],
                         ids=["rsa-leaf", "ed25519-leaf"])
def test_sign_leaf_for_other_workload_key_types(leaf_key: Any) -> None:
    cert = sign_leaf(AUTHORITY, _template_builder(AUTHORITY, public_key=leaf_key().public_key()), CALLER)
    assert cert.public_key() == leaf_key().public_key()


def test_a_hand_built_leaf_meeting_the_profile_passes() -> None:
    cert = sign_leaf(AUTHORITY, LeafSpec().builder(), CALLER)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_leaf_without_extended_key_usage_passes() -> None:
    sign_leaf(AUTHORITY, LeafSpec(eku=None).builder(), CALLER)


def test_leaf_ending_exactly_with_its_issuer_passes() -> None:
    sign_leaf(AUTHORITY, LeafSpec(relative_to_issuer=True, not_after_delta=timedelta(0)).builder(), CALLER)


def test_leaf_with_a_subject_may_have_a_non_critical_san() -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web")])
    sign_leaf(AUTHORITY, LeafSpec(subject=subject, san_critical=False).builder(), CALLER)


# ---- validation refusals --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (LeafSpec(sans=[URI(OTHER.uri)]), "leaf SAN is not exactly the expected SPIFFE ID"),
        (LeafSpec(sans=[URI(CALLER.uri), URI(OTHER.uri)]), "not exactly the expected SPIFFE ID"),
        (LeafSpec(sans=[URI(CALLER.uri), URI(CALLER.uri)]), "not exactly the expected SPIFFE ID"),
        (LeafSpec(sans=[URI(CALLER.uri), x509.DNSName("web")]), "not exactly the expected SPIFFE ID"),
        (LeafSpec(sans=[x509.DNSName("web")]), "not exactly the expected SPIFFE ID"),
        (LeafSpec(sans=[URI(CALLER.uri + "/x")]), "not exactly the expected SPIFFE ID"),
        (LeafSpec(san_critical=False), "leaf with an empty subject needs a critical SAN"),
        (LeafSpec(relative_to_issuer=True, not_after_delta=timedelta(seconds=1)),
         "leaf would outlive its issuer"),
        (LeafSpec(relative_to_issuer=True, not_after_delta=timedelta(days=400)),
         "leaf would outlive its issuer"),
        (LeafSpec(ca=True), "leaf is marked as a CA"),
        (LeafSpec(usage_critical=False), "leaf key usage is wrong"),
        (LeafSpec(usage=_usage(digital_signature=False)), "leaf key usage is wrong"),
        (LeafSpec(usage=_usage(cert_sign=True)), "leaf key usage is wrong"),
        (LeafSpec(usage=_usage(crl_sign=True)), "leaf key usage is wrong"),
        (LeafSpec(eku=[ExtendedKeyUsageOID.SERVER_AUTH]), "lacks serverAuth or clientAuth"),
        (LeafSpec(eku=[ExtendedKeyUsageOID.CLIENT_AUTH]), "lacks serverAuth or clientAuth"),
        (LeafSpec(eku=[ExtendedKeyUsageOID.CODE_SIGNING]), "lacks serverAuth or clientAuth"),
        (LeafSpec(sans=None), "leaf lacks a required extension: 2.5.29.17"),
        (LeafSpec(ca=None), "leaf lacks a required extension: 2.5.29.19"),
        (LeafSpec(usage=None), "leaf lacks a required extension: 2.5.29.15"),
    ],
    ids=[
        "other-id", "two-uris", "same-uri-twice", "uri-and-dns", "dns-only", "longer-path",
        "san-not-critical", "outlives-by-1s", "outlives-by-far", "ca-true", "usage-not-critical",
        "no-digital-signature", "cert-sign", "crl-sign", "eku-server-only", "eku-client-only",
        "eku-code-signing", "no-san", "no-basic-constraints", "no-key-usage",
    ],
)
def test_sign_leaf_refuses_a_leaf_that_breaks_the_profile(spec: LeafSpec, message: str) -> None:
    with pytest.raises(SigningFailed, match=message):
        sign_leaf(AUTHORITY, spec.builder(), CALLER)


def test_template_for_another_identity_is_caught() -> None:
    # The template and the caller disagree: the check, not the template, must stop it.
    with pytest.raises(SigningFailed, match="not exactly the expected SPIFFE ID"):
        sign_leaf(AUTHORITY, _template_builder(AUTHORITY, spiffe_id=OTHER), CALLER)


def test_template_leaf_outliving_its_issuer_is_caught() -> None:
    short = make_authority(ec_key("secp256r1", 62), not_after=NOW + timedelta(hours=1))
    with pytest.raises(SigningFailed, match="leaf would outlive its issuer"):
        sign_leaf(short, _template_builder(short, hours=2), CALLER)


def test_leaf_from_another_issuer_does_not_verify() -> None:
    other_authority = make_authority(ec_key("secp256r1", 63))
    cert = other_authority.sign(_template_builder(AUTHORITY))
    with pytest.raises(SigningFailed, match="leaf signature does not verify under its issuer"):
        validate_leaf(cert, AUTHORITY.certificate, CALLER)


def test_validate_leaf_uses_the_prepared_issuer_key() -> None:
    # The authority's loaded key is what checks each leaf: a right name with a wrong key fails.
    cert = AUTHORITY.sign(_template_builder(AUTHORITY))
    validate_leaf(cert, AUTHORITY.certificate, CALLER, issuer_key=AUTHORITY.issuer_key)
    wrong = make_authority(ec_key("secp256r1", 64)).issuer_key
    with pytest.raises(SigningFailed, match="leaf signature does not verify under its issuer"):
        validate_leaf(cert, AUTHORITY.certificate, CALLER, issuer_key=wrong)
    assert AUTHORITY.issuer_key == AUTHORITY.certificate.public_key()


def test_leaf_naming_another_issuer_is_caught() -> None:
    # Signed with the right key, but its issuer field names another CA.
    elsewhere = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another CA")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(elsewhere)
        .public_key(ec_key("secp256r1", 50).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(_caller_sans()), critical=True)
    )
    cert = AUTHORITY.sign(builder)
    with pytest.raises(SigningFailed, match="issuer name is not its issuer's subject"):
        validate_leaf(cert, AUTHORITY.certificate, CALLER, issuer_key=AUTHORITY.issuer_key)


def test_validate_leaf_accepts_a_correct_leaf() -> None:
    cert = AUTHORITY.sign(_template_builder(AUTHORITY))
    validate_leaf(cert, AUTHORITY.certificate, CALLER)
    with pytest.raises(SigningFailed):
        validate_leaf(cert, AUTHORITY.certificate, OTHER)


# ---- keys and bundles -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("key", "supported"),
    [(lambda: ec_key(), True), (lambda: ec_key("secp384r1"), True), (lambda: rsa_key(2048), True),
     (lambda: ed25519_key(), False), (lambda: ec_key().public_key(), False), (lambda: "key", False)],
)
def test_is_supported_ca_key(key: Any, supported: bool) -> None:
    assert is_supported_ca_key(key()) is supported


def test_trust_bundle_concatenates_every_root() -> None:
    first = make_root(ec_key("secp256r1", 70), generation=1, serial=0x71)
    second = make_root(ec_key("secp256r1", 72), generation=2, serial=0x73)
    bundle = TrustBundle((first, second))
    assert bundle.pem == certificate_pem(first) + certificate_pem(second)
    assert bundle.pem.count("-----BEGIN CERTIFICATE-----") == 2
    assert x509.load_pem_x509_certificates(bundle.pem.encode()) == [first, second]


def test_trust_bundle_needs_a_root() -> None:
    with pytest.raises(ValueError, match="at least one root"):
        TrustBundle(())


def test_intermediate_chain_verifies_up_to_the_bundle() -> None:
    root = AUTHORITY.bundle.roots[0]
    AUTHORITY.certificate.verify_directly_issued_by(root)
    assert AUTHORITY.chain == (root,)
    intermediate = make_intermediate(ec_key("secp256r1", 74), root, ec_key("secp256r1", 100))
    intermediate.verify_directly_issued_by(root)
    wrong_root = make_root(ec_key("secp256r1", 75))
    with pytest.raises(InvalidSignature):
        intermediate.verify_directly_issued_by(wrong_root)


def test_authority_signs_with_the_curve_matched_hash() -> None:
    key = ec_key("secp384r1", 76)
    authority = make_authority(key)
    cert = authority.sign(_template_builder(authority))
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
    assert isinstance(authority.private_key, ec.EllipticCurvePrivateKey)
