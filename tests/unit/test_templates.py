"""Certificate templates: the exact X509-SVID leaf and CA profiles (docs/contracts.md §3)."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshca.core import templates
from meshca.core.spiffe import SpiffeId
from tests.unit.pki import CALLER, NOW, ec_key, ed25519_key, make_intermediate, make_root, rsa_key

ROOT_KEY = ec_key("secp256r1", 10)
INTERMEDIATE_KEY = ec_key("secp256r1", 11)
ROOT = make_root(ROOT_KEY)
INTERMEDIATE = make_intermediate(INTERMEDIATE_KEY, ROOT, ROOT_KEY)

LEAF_KEYS: list[tuple[str, Any]] = [
    ("p256", lambda: ec_key("secp256r1")),
    ("p384", lambda: ec_key("secp384r1")),
    ("rsa2048", lambda: rsa_key(2048)),
    ("ed25519", lambda: ed25519_key()),
]


def _leaf(public_key: Any, *, serial: int = 0x1234, spiffe_id: SpiffeId = CALLER) -> x509.Certificate:
    builder = templates.leaf_svid(
        public_key=public_key, spiffe_id=spiffe_id, issuer=INTERMEDIATE, serial=serial,
        not_before=NOW - timedelta(minutes=5), not_after=NOW + timedelta(hours=24),
    )
    return builder.sign(INTERMEDIATE_KEY, hashes.SHA256())


@pytest.fixture(params=[k for _, k in LEAF_KEYS], ids=[i for i, _ in LEAF_KEYS])
def leaf_and_key(request: pytest.FixtureRequest) -> tuple[x509.Certificate, Any]:
    key = request.param().public_key()
    return _leaf(key), key


# ---- leaf profile ---------------------------------------------------------------------------

def test_leaf_has_an_empty_subject_and_the_issuers_subject_as_issuer(leaf_and_key: Any) -> None:
    leaf, _ = leaf_and_key
    assert len(leaf.subject) == 0
    assert leaf.issuer == INTERMEDIATE.subject
    leaf.verify_directly_issued_by(INTERMEDIATE)


def test_leaf_san_is_critical_and_exactly_the_spiffe_id(leaf_and_key: Any) -> None:
    leaf, _ = leaf_and_key
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical is True
    assert list(san.value) == [x509.UniformResourceIdentifier(CALLER.uri)]


def test_leaf_is_not_a_ca(leaf_and_key: Any) -> None:
    leaf, _ = leaf_and_key
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical is True
    assert bc.value.ca is False
    assert bc.value.path_length is None


def test_leaf_key_usage_is_critical_digital_signature_and_never_signing(leaf_and_key: Any) -> None:
    leaf, key = leaf_and_key
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical is True
    assert usage.value.digital_signature is True
    assert usage.value.key_cert_sign is False
    assert usage.value.crl_sign is False
    assert usage.value.content_commitment is False
    assert usage.value.data_encipherment is False
    assert usage.value.key_agreement is False
    # keyEncipherment only for RSA keys (RSA key transport); never for EC or Ed25519.
    assert usage.value.key_encipherment is isinstance(key, rsa.RSAPublicKey)


def test_leaf_extended_key_usage_is_server_and_client_auth(leaf_and_key: Any) -> None:
    leaf, _ = leaf_and_key
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert set(eku.value) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert len(list(eku.value)) == 2


def test_leaf_key_identifiers(leaf_and_key: Any) -> None:
    leaf, key = leaf_and_key
    ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ski.critical is False
    assert ski.value.digest == x509.SubjectKeyIdentifier.from_public_key(key).digest
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    issuer_ski = INTERMEDIATE.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.critical is False
    assert aki.value.key_identifier == issuer_ski.value.digest
    assert aki.value.key_identifier != ski.value.digest


def test_leaf_carries_exactly_the_profile_extensions(leaf_and_key: Any) -> None:
    leaf, _ = leaf_and_key
    kinds = {type(ext.value) for ext in leaf.extensions}
    assert kinds == {x509.BasicConstraints, x509.KeyUsage, x509.ExtendedKeyUsage,
                     x509.SubjectAlternativeName, x509.SubjectKeyIdentifier,
                     x509.AuthorityKeyIdentifier}
    assert len(leaf.extensions) == 6


def test_leaves_of_one_issuer_share_only_the_issuer_parts() -> None:
    # The issuer's part of the template is built once and reused: nothing of one leaf may
    # reach the next, and the extensions keep the profile's order.
    first_key, second_key = ec_key().public_key(), rsa_key(2048).public_key()
    other = SpiffeId.for_service_account("cluster.local", "default", "db")
    first = _leaf(first_key, serial=1)
    second = _leaf(second_key, serial=2, spiffe_id=other)
    again = _leaf(first_key, serial=3)
    for leaf, key, identity in ((first, first_key, CALLER), (second, second_key, other),
                                (again, first_key, CALLER)):
        assert [type(e.value) for e in leaf.extensions] == [
            x509.BasicConstraints, x509.KeyUsage, x509.ExtendedKeyUsage,
            x509.SubjectAlternativeName, x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [identity.uri]
        ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert ski == x509.SubjectKeyIdentifier.from_public_key(key)
    usage = [leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
             for leaf in (first, second, again)]
    assert usage == [False, True, False]  # the RSA leaf's base is its own
    assert [leaf.serial_number for leaf in (first, second, again)] == [1, 2, 3]


def test_leaf_validity_and_public_key_are_the_ones_given() -> None:
    key = ec_key().public_key()
    leaf = _leaf(key)
    assert leaf.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=24)
    assert leaf.public_key() == key
    assert leaf.version is x509.Version.v3


@pytest.mark.parametrize("serial", [1, 0x1234, 2**127 + 5, 2**159 - 1])
def test_serial_is_kept_and_fits_in_twenty_octets(serial: int) -> None:
    leaf = _leaf(ec_key().public_key(), serial=serial)
    assert leaf.serial_number == serial
    assert leaf.serial_number > 0
    # DER INTEGER content: a positive value needs bit_length // 8 + 1 octets (sign bit).
    assert leaf.serial_number.bit_length() // 8 + 1 <= 20


@pytest.mark.parametrize("serial", [0, -1, 2**159])
def test_serial_that_is_not_positive_or_too_long_cannot_be_built(serial: int) -> None:
    with pytest.raises(ValueError, match="serial number"):
        templates.leaf_svid(
            public_key=ec_key().public_key(), spiffe_id=CALLER, issuer=INTERMEDIATE,
            serial=serial, not_before=NOW, not_after=NOW + timedelta(hours=1),
        )


def test_random_serials_are_positive_distinct_and_at_most_twenty_octets() -> None:
    serials = [x509.random_serial_number() for _ in range(200)]
    assert len(set(serials)) == 200
    assert all(0 < s < 2**159 for s in serials)
    assert any(s.bit_length() > 128 for s in serials)  # well over 128 random bits in play


def test_leaf_issuer_without_ski_cannot_be_used() -> None:
    bare = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no ski")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no ski")]))
        .public_key(ROOT_KEY.public_key()).serial_number(9)
        .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1))
        .sign(ROOT_KEY, hashes.SHA256())
    )
    with pytest.raises(x509.ExtensionNotFound):
        templates.leaf_svid(public_key=ec_key().public_key(), spiffe_id=CALLER, issuer=bare,
                            serial=1, not_before=NOW, not_after=NOW + timedelta(hours=1))


# ---- CA profiles ----------------------------------------------------------------------------

@pytest.mark.parametrize(("cert", "path_length"), [(ROOT, None), (INTERMEDIATE, 0)],
                         ids=["root", "intermediate"])
def test_ca_is_a_critical_ca_with_cert_sign(cert: x509.Certificate, path_length: int | None) -> None:
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical is True
    assert bc.value.ca is True
    assert bc.value.path_length == path_length
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical is True
    assert usage.value.key_cert_sign is True
    assert usage.value.crl_sign is True
    assert usage.value.key_encipherment is False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local"]
    assert san.critical is False  # the subject is not empty
    assert len(cert.subject) == 3


def test_root_is_self_signed_without_an_authority_key_id() -> None:
    assert ROOT.issuer == ROOT.subject
    ROOT.verify_directly_issued_by(ROOT)
    with pytest.raises(x509.ExtensionNotFound):
        ROOT.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    ski = ROOT.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(ROOT_KEY.public_key()).digest


def test_intermediate_points_at_its_root() -> None:
    assert INTERMEDIATE.issuer == ROOT.subject
    INTERMEDIATE.verify_directly_issued_by(ROOT)
    aki = INTERMEDIATE.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = ROOT.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest


def test_ca_subject_names_organization_kind_generation_and_serial() -> None:
    subject = templates.ca_subject("Acme", "intermediate", 3, 0xBEEF)
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Acme"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "meshca intermediate g3"
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "beef"


def test_every_ca_generation_gets_a_distinct_subject() -> None:
    subjects = {
        templates.ca_subject("Acme", kind, generation, serial)
        for kind in ("root", "intermediate")
        for generation in (1, 2, 3)
        for serial in (1, 2)
    }
    assert len(subjects) == 12
    # Even a repeated generation number is told apart by the serial.
    assert templates.ca_subject("Acme", "root", 1, 1) != templates.ca_subject("Acme", "root", 1, 2)
    first = make_root(ROOT_KEY, generation=1, serial=0x11)
    second = make_root(ROOT_KEY, generation=2, serial=0x22)
    assert first.subject != second.subject


# ---- meshca's own serving certificate -------------------------------------------------------

def test_server_certificate_names_dns_ip_and_spiffe_id() -> None:
    key = ec_key().public_key()
    sid = SpiffeId.for_service_account("cluster.local", "istio-system", "meshca")
    cert = templates.server_tls(
        public_key=key, dns_names=["meshca.istio-system.svc", "localhost"],
        ip_addresses=[ipaddress.ip_address("127.0.0.1")], spiffe_id=sid, issuer=INTERMEDIATE,
        serial=5, not_before=NOW, not_after=NOW + timedelta(days=1),
    ).sign(INTERMEDIATE_KEY, hashes.SHA256())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["meshca.istio-system.svc", "localhost"]
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [sid.uri]
    assert san.critical is False
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "meshca.istio-system.svc"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_server_certificate_without_dns_names_has_empty_subject_and_critical_san() -> None:
    cert = templates.server_tls(
        public_key=ec_key().public_key(), dns_names=[],
        ip_addresses=[ipaddress.ip_address("::1")], spiffe_id=CALLER, issuer=INTERMEDIATE,
        serial=6, not_before=NOW, not_after=NOW + timedelta(days=1),
    ).sign(INTERMEDIATE_KEY, hashes.SHA256())
    assert len(cert.subject) == 0
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical is True
