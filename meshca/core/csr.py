"""Checks on a workload's certificate signing request, before anything is signed.

A sidecar may ask for its own identity only: the CSR carries no SAN (meshca stamps the
caller's SPIFFE ID) or exactly the caller's SPIFFE ID as its one SAN. Everything that
could widen what the certificate proves is refused with a message naming the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtensionOID

from meshca.core.keys import describe_public_key
from meshca.core.spiffe import SpiffeId
from meshca.errors import InvalidRequest

MAX_CSR_BYTES = 64 * 1024
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
_RSA_MIN_BITS = 2048
_RSA_MAX_BITS = 8192
_PEM_HEADER = "-----BEGIN CERTIFICATE REQUEST-----"


@dataclass(frozen=True, slots=True)
class CheckedCsr:
    """A CSR whose signature verified and whose content passed policy."""

    public_key: CertificatePublicKeyTypes
    key_description: str


def check_csr(pem: str, identity: SpiffeId) -> CheckedCsr:
    """Parse and police a PEM PKCS#10 request for `identity`; raise InvalidRequest if it is wrong."""
    if not pem:
        raise InvalidRequest("csr is empty")
    raw = pem.encode("utf-8", errors="replace")
    if len(raw) > MAX_CSR_BYTES:
        raise InvalidRequest(f"csr is {len(raw)} bytes; at most {MAX_CSR_BYTES} are accepted")
    if _PEM_HEADER not in pem:
        raise InvalidRequest("csr is not a PEM 'CERTIFICATE REQUEST' block")
    try:
        csr = x509.load_pem_x509_csr(raw)
    except ValueError:
        raise InvalidRequest("csr could not be parsed as PEM PKCS#10") from None
    try:
        signature_ok = csr.is_signature_valid
    except Exception:  # noqa: BLE001 - an unsupported signature algorithm is the caller's problem
        signature_ok = False
    if not signature_ok:
        raise InvalidRequest("csr signature does not verify")
    try:
        public_key = csr.public_key()
    except Exception:  # noqa: BLE001 - an unsupported key algorithm
        raise InvalidRequest("csr public key type is not supported") from None
    _check_key(public_key)
    _check_extensions(csr, identity)
    return CheckedCsr(public_key, describe_public_key(public_key))


def _check_key(key: CertificatePublicKeyTypes) -> None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _ALLOWED_CURVES):
            raise InvalidRequest(f"csr key curve {key.curve.name} is not allowed; use P-256 or P-384")
        return
    if isinstance(key, rsa.RSAPublicKey):
        if not _RSA_MIN_BITS <= key.key_size <= _RSA_MAX_BITS:
            raise InvalidRequest(
                f"csr RSA key is {key.key_size} bits; {_RSA_MIN_BITS} to {_RSA_MAX_BITS} are allowed"
            )
        return
    if isinstance(key, ed25519.Ed25519PublicKey):
        return
    raise InvalidRequest(f"csr key type {describe_public_key(key)} is not allowed")


def _check_extensions(csr: x509.CertificateSigningRequest, identity: SpiffeId) -> None:
    try:
        extensions = csr.extensions
    except Exception:  # noqa: BLE001 - malformed or duplicate extensions
        raise InvalidRequest("csr extensions could not be parsed") from None
    for ext in extensions:
        value = ext.value
        if ext.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            assert isinstance(value, x509.SubjectAlternativeName)
            _check_sans(value, identity)
        elif ext.oid == ExtensionOID.BASIC_CONSTRAINTS:
            assert isinstance(value, x509.BasicConstraints)
            if value.ca:
                raise InvalidRequest("csr asks for a CA certificate (basicConstraints CA:true)")
        elif ext.oid == ExtensionOID.KEY_USAGE:
            assert isinstance(value, x509.KeyUsage)
            if value.key_cert_sign or value.crl_sign:
                raise InvalidRequest("csr asks for keyCertSign or cRLSign key usage")


def _check_sans(sans: x509.SubjectAlternativeName, identity: SpiffeId) -> None:
    names = list(sans)
    if not names:
        return
    others = [n for n in names if not isinstance(n, x509.UniformResourceIdentifier)]
    if others:
        kinds = sorted({type(n).__name__ for n in others})
        raise InvalidRequest(f"csr carries SANs that are not allowed: {', '.join(kinds)}")
    uris = [n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)]
    if len(uris) != 1:
        raise InvalidRequest(f"csr carries {len(uris)} URI SANs; at most one, the caller's SPIFFE ID")
    if uris[0] != identity.uri:
        raise InvalidRequest("csr asks for an identity other than the caller's")
