"""Key types meshca generates for its CAs and accepts from workloads."""

from __future__ import annotations

import enum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class KeyType(enum.StrEnum):
    """CA key types, named as on the command line (`--ca-key-type`)."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    def generate(self) -> SigningKey:
        match self:
            case KeyType.EC_P256:
                return ec.generate_private_key(ec.SECP256R1())
            case KeyType.EC_P384:
                return ec.generate_private_key(ec.SECP384R1())
            case _:
                bits = int(self.value.split("-")[1])
                return rsa.generate_private_key(public_exponent=65537, key_size=bits)

    @classmethod
    def of(cls, key: SigningKey) -> KeyType:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return {256: cls.EC_P256, 384: cls.EC_P384}[key.curve.key_size]
        return cls(f"rsa-{key.key_size}")


def signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | hashes.SHA384 | None:
    """The hash a CA key signs with: SHA-384 for P-384, none for Ed25519, else SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def describe_public_key(key: CertificatePublicKeyTypes) -> str:
    """A short human name for a public key, for error messages and records."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__
