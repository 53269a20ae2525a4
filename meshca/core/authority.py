"""A signing CA and the one way a leaf leaves it: template → sign → validate."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshca.core.bundle import TrustBundle, certificate_pem
from meshca.core.keys import SigningKey
from meshca.core.remote_signing import (
    LocalSigner,
    Signer,
    SigningPublicKey,
    sign_certificate,
    sign_crl,
)
from meshca.core.spiffe import SpiffeId
from meshca.errors import InternalError


class SigningFailed(InternalError):
    """A signed certificate failed its own checks: a meshca fault, never the caller's."""


@dataclass(frozen=True, slots=True)
class SigningAuthority:
    """The active intermediate: its key, the chain above it (without roots) and the bundle.

    It signs with a `private_key` in memory or, when the key lives elsewhere (Vault Transit),
    through a remote `signer`; exactly one of the two is given.
    """

    generation_id: int
    certificate: x509.Certificate
    private_key: SigningKey | None
    chain: tuple[x509.Certificate, ...]
    bundle: TrustBundle
    signer: Signer | None = field(default=None, kw_only=True, repr=False)
    chain_pem: tuple[str, ...] = field(init=False)
    _signer: Signer = field(init=False, repr=False, compare=False)
    _issuer_key: SigningPublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.private_key is None) == (self.signer is None):
            raise ValueError("a signing authority needs exactly one of private_key or signer")
        signer = LocalSigner(self.private_key) if self.private_key is not None else self.signer
        assert signer is not None
        issuer_key = self.certificate.public_key()
        if issuer_key != signer.public_key:
            raise ValueError("signing key does not match the signing certificate")
        assert isinstance(issuer_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        pems = tuple(certificate_pem(c) for c in (self.certificate, *self.chain))
        object.__setattr__(self, "chain_pem", pems)
        object.__setattr__(self, "_signer", signer)
        object.__setattr__(self, "_issuer_key", issuer_key)

    @property
    def issuer_key(self) -> SigningPublicKey:
        """The certificate's public key, loaded once: each leaf's signature is checked with it."""
        return self._issuer_key

    @property
    def is_remote(self) -> bool:
        """True when every signature is a network call (run it off the event loop)."""
        return self.private_key is None

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return sign_certificate(builder, self._signer)

    def sign_crl(self, builder: x509.CertificateRevocationListBuilder) -> x509.CertificateRevocationList:
        return sign_crl(builder, self._signer)


def sign_leaf(
    authority: SigningAuthority, builder: x509.CertificateBuilder, expected: SpiffeId
) -> x509.Certificate:
    """Sign, then check the result as a relying party would before it leaves meshca."""
    cert = authority.sign(builder)
    validate_leaf(cert, authority.certificate, expected, issuer_key=authority.issuer_key)
    return cert


def validate_leaf(cert: x509.Certificate, issuer: x509.Certificate, expected: SpiffeId, *,
                  issuer_key: SigningPublicKey | None = None) -> None:
    """`issuer_key`: `issuer`'s public key, already loaded (the authority's), so that each
    leaf does not parse and check the issuer's key again; loaded from `issuer` when None."""
    if cert.issuer != issuer.subject:
        raise SigningFailed("leaf issuer name is not its issuer's subject")
    try:
        _verify_signature(cert, issuer_key or issuer.public_key())
    except Exception as exc:  # any failure here is meshca's own
        raise SigningFailed("leaf signature does not verify under its issuer") from exc
    if cert.not_valid_after_utc > issuer.not_valid_after_utc:
        raise SigningFailed("leaf would outlive its issuer")
    try:
        _check_leaf_extensions(cert, expected)
    except x509.ExtensionNotFound as exc:
        raise SigningFailed(f"leaf lacks a required extension: {exc.oid.dotted_string}") from exc


def _verify_signature(cert: x509.Certificate, key: object) -> None:
    # What verify_directly_issued_by does after its name check, with the key given.
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        raise SigningFailed("leaf signature has no hash algorithm")
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
    elif isinstance(key, rsa.RSAPublicKey):
        parameters = cert.signature_algorithm_parameters
        if not isinstance(parameters, padding.PKCS1v15 | padding.PSS):
            raise SigningFailed("leaf RSA signature has no padding")
        key.verify(cert.signature, cert.tbs_certificate_bytes, parameters, algorithm)
    else:
        raise SigningFailed(f"issuer key type {type(key).__name__} is not supported")


def _check_leaf_extensions(cert: x509.Certificate, expected: SpiffeId) -> None:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    if not san.critical and len(cert.subject) == 0:
        raise SigningFailed("leaf with an empty subject needs a critical SAN")
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    if uris != [expected.uri] or len(list(san.value)) != 1:
        raise SigningFailed("leaf SAN is not exactly the expected SPIFFE ID")
    if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
        raise SigningFailed("leaf is marked as a CA")
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    if not usage.critical or not usage.value.digital_signature or usage.value.key_cert_sign:
        raise SigningFailed("leaf key usage is wrong")
    if usage.value.crl_sign:
        raise SigningFailed("leaf key usage is wrong")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku):
        raise SigningFailed("leaf extended key usage lacks serverAuth or clientAuth")


def is_supported_ca_key(key: object) -> bool:
    return isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
