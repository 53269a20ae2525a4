"""Certificates and CRLs signed by a key meshca cannot see (a Vault Transit key, an HSM).

cryptography signs only with private keys it holds, but it will give us the exact
to-be-signed bytes. So: sign once with a cached stand-in key of the same algorithm, which
yields a TBS already carrying the right signature AlgorithmIdentifier (the TBS has nothing
else from the signing key: issuer name and AKI come from the builder); send those bytes to
the real signer; then re-encode `SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature }`
and verify the result under the signer's public key before anyone sees it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshca.core.keys import SigningKey, signature_hash
from meshca.errors import InternalError, Unavailable

SigningPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
SignatureHash = hashes.SHA256 | hashes.SHA384


class SignatureRejected(InternalError):
    """A remote signature does not verify under the signer's own public key."""


class SignerUnavailable(Unavailable):
    """The remote signer cannot be reached now (Vault sealed, down, rate limiting): retry later.

    Signers raise subclasses of it, so services map it to UNAVAILABLE without knowing Vault.
    """


class Signer(Protocol):
    """Signs to-be-signed bytes with a CA key (ECDSA or RSA PKCS#1 v1.5).

    `sign` returns the value that goes in the signatureValue BIT STRING: DER ECDSA-Sig-Value
    for EC keys, the raw PKCS#1 v1.5 signature for RSA, hashed with `hash_for(public_key)`.
    """

    @property
    def public_key(self) -> SigningPublicKey: ...

    def sign(self, tbs: bytes) -> bytes: ...


def hash_for(public_key: SigningPublicKey) -> SignatureHash:
    """The same rule as keys.signature_hash, from the public half: SHA-384 for P-384+."""
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


class LocalSigner:
    """A Signer over a private key held in memory (file and KV keystores)."""

    def __init__(self, private_key: SigningKey) -> None:
        self.private_key = private_key
        self._public = private_key.public_key()

    @property
    def public_key(self) -> SigningPublicKey:
        return self._public

    def sign(self, tbs: bytes) -> bytes:
        algorithm = hash_for(self._public)
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            return self.private_key.sign(tbs, ec.ECDSA(algorithm))
        return self.private_key.sign(tbs, padding.PKCS1v15(), algorithm)


def sign_certificate(builder: x509.CertificateBuilder, signer: Signer) -> x509.Certificate:
    """The certificate `builder` describes, signed by `signer` and verified before return."""
    return _sign(builder, signer, lambda c: c.tbs_certificate_bytes, x509.load_der_x509_certificate)


def sign_crl(builder: x509.CertificateRevocationListBuilder,
             signer: Signer) -> x509.CertificateRevocationList:
    """The CRL `builder` describes, signed by `signer` and verified before return."""
    return _sign(builder, signer, lambda c: c.tbs_certlist_bytes, x509.load_der_x509_crl)


def sign_csr(builder: x509.CertificateSigningRequestBuilder,
             signer: Signer) -> x509.CertificateSigningRequest:
    """The CSR `builder` describes, for and signed by `signer`'s key, verified before return.

    Unlike a certificate, a CSR's to-be-signed part holds the key it is for: the stand-in's
    SubjectPublicKeyInfo (third element of CertificationRequestInfo) is swapped for the
    signer's before the bytes are signed (an upstream CA checks that signature)."""
    if isinstance(signer, LocalSigner):
        key = signer.private_key
        return builder.sign(key, signature_hash(key))
    public = signer.public_key
    stand_in = builder.sign(_stand_in_key(public), hash_for(public))
    info = _element(stand_in.tbs_certrequest_bytes, 0, _SEQUENCE)[1]
    version_end = _next(info, 0)
    subject_end = _next(info, version_end)
    spki_end = _next(info, subject_end)
    spki = public.public_bytes(_DER, PublicFormat.SubjectPublicKeyInfo)
    content = info[:subject_end] + spki + info[spki_end:]
    tbs = bytes([_SEQUENCE]) + _length(len(content)) + content
    der = _signed_structure(tbs, _algorithm_identifier(stand_in.public_bytes(_DER)), signer.sign(tbs))
    result = x509.load_der_x509_csr(der)
    _verify(public, result.signature, result.tbs_certrequest_bytes)
    if not result.is_signature_valid:
        raise SignatureRejected("the CSR's signature does not verify under its own key")
    return result


Signed = TypeVar("Signed", x509.Certificate, x509.CertificateRevocationList)


def _sign(builder: Any, signer: Signer, tbs_of: Callable[[Signed], bytes],
          load: Callable[[bytes], Signed]) -> Signed:
    if isinstance(signer, LocalSigner):  # cryptography signs in one step
        key = signer.private_key
        signed: Signed = builder.sign(key, signature_hash(key))
        return signed
    # A stand-in key of the same kind gives the to-be-signed bytes with the right algorithm
    # identifier; the real signature replaces its own.
    public = signer.public_key
    stand_in: Signed = builder.sign(_stand_in_key(public), hash_for(public))
    tbs = tbs_of(stand_in)
    der = _signed_structure(tbs, _algorithm_identifier(stand_in.public_bytes(_DER)), signer.sign(tbs))
    result = load(der)
    _verify(public, result.signature, tbs_of(result))
    return result


def _verify(public: SigningPublicKey, signature: bytes, tbs: bytes) -> None:
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, tbs, ec.ECDSA(hash_for(public)))
        else:
            public.verify(signature, tbs, padding.PKCS1v15(), hash_for(public))
    except InvalidSignature:
        raise SignatureRejected("the remote signature does not verify under the signer's public key") \
            from None


@functools.cache
def _stand_in_ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@functools.cache
def _stand_in_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _stand_in_key(public: SigningPublicKey) -> SigningKey:
    """Only the algorithm matters (ecdsa-with-SHAx or shaXWithRSAEncryption), not the size."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _stand_in_ec()
    if isinstance(public, rsa.RSAPublicKey):
        return _stand_in_rsa()
    raise TypeError(f"cannot sign for a {type(public).__name__}")


# --- the little DER this needs: SEQUENCE, BIT STRING, definite lengths ------------------------

_DER = Encoding.DER
_SEQUENCE = 0x30
_BIT_STRING = 0x03


def _algorithm_identifier(signed_der: bytes) -> bytes:
    """The outer signatureAlgorithm TLV of a signed certificate, CRL or CSR."""
    body = _element(signed_der, 0, _SEQUENCE)[1]
    tbs_end = _next(body, 0)
    return body[tbs_end:_next(body, tbs_end)]


def _signed_structure(tbs: bytes, algorithm: bytes, signature: bytes) -> bytes:
    bit_string = bytes([_BIT_STRING]) + _length(len(signature) + 1) + b"\x00" + signature
    content = tbs + algorithm + bit_string
    return bytes([_SEQUENCE]) + _length(len(content)) + content


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _header(data: bytes, offset: int) -> tuple[int, int]:
    """(content start, content length) of the TLV at `offset`."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER")
    first = data[offset + 1]
    if first < 0x80:
        return offset + 2, first
    count = first & 0x7F
    if count == 0 or count > 4 or offset + 2 + count > len(data):
        raise ValueError("unsupported DER length")
    return offset + 2 + count, int.from_bytes(data[offset + 2:offset + 2 + count], "big")


def _next(data: bytes, offset: int) -> int:
    start, length = _header(data, offset)
    if start + length > len(data):
        raise ValueError("truncated DER")
    return start + length


def _element(data: bytes, offset: int, tag: int) -> tuple[int, bytes]:
    if data[offset] != tag:
        raise ValueError(f"expected DER tag {tag:#x}, found {data[offset]:#x}")
    start, length = _header(data, offset)
    return start + length, data[start:start + length]
