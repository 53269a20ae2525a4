"""Workload keys, made on the node, and the checks on what the server signs for them.

Each SVID gets a fresh key pair; only its CSR (the SPIFFE ID as the one URI SAN, empty
subject) leaves the node. RSA generation takes a noticeable fraction of a second, so it runs
off the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from meshca.core.spiffe import SpiffeId
from meshca.errors import PermissionDenied

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048")

WorkloadPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class WorkloadKey:
    spiffe_id: SpiffeId
    csr_pem: str
    pkcs8_der: bytes = field(repr=False)  # unencrypted; never logged, never sent
    public_key: PublicKeyTypes = field(repr=False)


def generate_private_key(key_type: str) -> WorkloadPrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {key_type!r}; one of {', '.join(KEY_TYPES)}")


def make_key(key_type: str, spiffe_id: SpiffeId) -> WorkloadKey:
    key = generate_private_key(key_type)
    # An empty subject makes the SAN the certificate's only name: critical (RFC 5280 4.2.1.6).
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName(
               [x509.UniformResourceIdentifier(spiffe_id.uri)]), critical=True)
           .sign(key, hashes.SHA384() if key_type == "ec-p384" else hashes.SHA256()))
    return WorkloadKey(
        spiffe_id=spiffe_id,
        csr_pem=csr.public_bytes(Encoding.PEM).decode("ascii"),
        pkcs8_der=key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()),
        public_key=key.public_key(),
    )


async def new_key(key_type: str, spiffe_id: SpiffeId) -> WorkloadKey:
    """`make_key`, in a worker thread when the key is RSA."""
    if key_type.startswith("rsa"):
        return await asyncio.to_thread(make_key, key_type, spiffe_id)
    return make_key(key_type, spiffe_id)


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def check_leaf(chain: tuple[x509.Certificate, ...], spiffe_id: SpiffeId,
               public_key: PublicKeyTypes) -> None:
    """Fail closed unless the chain's leaf names exactly `spiffe_id` and certifies
    `public_key`: an agent must never hand a workload someone else's certificate."""
    if not chain:
        raise PermissionDenied("server answered with an empty certificate chain")
    leaf = chain[0]
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except (x509.ExtensionNotFound, ValueError):
        uris = []
    if uris != [spiffe_id.uri]:
        raise PermissionDenied(f"server answered with a certificate for another identity "
                               f"(asked for {spiffe_id}, got {uris or 'no URI SAN'})")
    if _spki(leaf.public_key()) != _spki(public_key):
        raise PermissionDenied(f"server answered for {spiffe_id} with a certificate for "
                               f"another key")


def is_self_signed(cert: x509.Certificate) -> bool:
    """A root: its issuer is itself (checked by signature, not just by name)."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
