"""Certificate templates: the exact extensions of every kind of certificate meshca signs."""

from __future__ import annotations

import functools
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshca.core.certificates import format_serial
from meshca.core.spiffe import SpiffeId

_EKU_MTLS = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])


def _key_usage(*, digital_signature: bool, key_encipherment: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def leaf_svid(
    *,
    public_key: CertificatePublicKeyTypes,
    spiffe_id: SpiffeId,
    issuer: x509.Certificate,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    """An X509-SVID: empty subject, so the one URI SAN is critical; CA:false, mTLS usages."""
    return _end_entity(
        public_key=public_key, subject=x509.Name([]),
        names=[x509.UniformResourceIdentifier(spiffe_id.uri)],
        issuer=issuer, serial=serial, not_before=not_before, not_after=not_after,
    )


def server_tls(
    *,
    public_key: CertificatePublicKeyTypes,
    dns_names: list[str],
    ip_addresses: list[IPv4Address | IPv6Address],
    spiffe_id: SpiffeId,
    issuer: x509.Certificate,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    """meshca's own serving certificate: DNS names for clients, its SPIFFE ID for peers."""
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ip) for ip in ip_addresses]
    names.append(x509.UniformResourceIdentifier(spiffe_id.uri))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])] if dns_names else [])
    return _end_entity(
        public_key=public_key, subject=subject, names=names,
        issuer=issuer, serial=serial, not_before=not_before, not_after=not_after,
    )


def _end_entity(
    *,
    public_key: CertificatePublicKeyTypes,
    subject: x509.Name,
    names: list[x509.GeneralName],
    issuer: x509.Certificate,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    base, authority_key_id = _end_entity_base(issuer, isinstance(public_key, rsa.RSAPublicKey))
    return (
        base
        .subject_name(subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # RFC 5280: with an empty subject the SAN extension must be critical.
        .add_extension(x509.SubjectAlternativeName(names), critical=len(subject) == 0)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_id, critical=False)
    )


@functools.lru_cache(maxsize=32)
def _end_entity_base(issuer: x509.Certificate, rsa_key: bool,
                     ) -> tuple[x509.CertificateBuilder, x509.AuthorityKeyIdentifier]:
    """What every end-entity certificate of `issuer` shares, built once per issuer (a builder
    is immutable, so each leaf extends the same one): half of the template's cost per leaf.
    The extensions keep their order: these first, then SAN, SKI and AKI."""
    base = (
        x509.CertificateBuilder()
        .issuer_name(issuer.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_encipherment=rsa_key, cert_sign=False),
            critical=True,
        )
        .add_extension(_EKU_MTLS, critical=False)
    )
    return base, _authority_key_id(issuer)


def ca_subject(organization: str, kind: str, generation: int, serial: int) -> x509.Name:
    """A distinct subject for every CA generation: clients choke on many CAs sharing one."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, f"meshca {kind} g{generation}"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, format_serial(serial)),
        ]
    )


def ca_certificate(
    *,
    public_key: CertificatePublicKeyTypes,
    subject: x509.Name,
    trust_domain: SpiffeId,
    issuer: x509.Certificate | None,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    path_length: int | None,
) -> x509.CertificateBuilder:
    """A root (issuer None: self-signed) or intermediate signing certificate."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_encipherment=False, cert_sign=True), critical=True
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(trust_domain.uri)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(_authority_key_id(issuer), critical=False)
    return builder


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
