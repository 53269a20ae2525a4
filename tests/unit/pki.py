"""Keys and small CAs for the unit tests: built in memory, cached, with a fixed clock."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.core import templates
from meshca.core.authority import SigningAuthority
from meshca.core.bundle import TrustBundle
from meshca.core.keys import SigningKey
from meshca.core.spiffe import SpiffeId

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TRUST_DOMAIN = "cluster.local"
CALLER = SpiffeId.for_service_account(TRUST_DOMAIN, "default", "web")


@functools.cache
def rsa_key(bits: int = 2048, n: int = 0) -> rsa.RSAPrivateKey:
    """RSA generation is slow: one key per (size, index) for the whole run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(curve_name: str = "secp256r1", n: int = 0) -> ec.EllipticCurvePrivateKey:
    curves: dict[str, type[ec.EllipticCurve]] = {
        "secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1,
        "secp521r1": ec.SECP521R1, "secp256k1": ec.SECP256K1}
    curve = curves[curve_name]()
    return ec.generate_private_key(curve)


@functools.cache
def ed25519_key(n: int = 0) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@functools.cache
def ed448_key(n: int = 0) -> ed448.Ed448PrivateKey:
    return ed448.Ed448PrivateKey.generate()


def make_root(key: SigningKey, *, generation: int = 1, serial: int = 0x1001,
              not_before: datetime = NOW - timedelta(days=1),
              not_after: datetime = NOW + timedelta(days=3650)) -> x509.Certificate:
    builder = templates.ca_certificate(
        public_key=key.public_key(),
        subject=templates.ca_subject("meshca tests", "root", generation, serial),
        trust_domain=SpiffeId.for_trust_domain(TRUST_DOMAIN),
        issuer=None, serial=serial, not_before=not_before, not_after=not_after,
        path_length=None,
    )
    return builder.sign(key, _hash_for(key))


def make_intermediate(key: SigningKey, root: x509.Certificate, root_key: SigningKey, *,
                      generation: int = 1, serial: int = 0x2001,
                      not_after: datetime = NOW + timedelta(days=365)) -> x509.Certificate:
    builder = templates.ca_certificate(
        public_key=key.public_key(),
        subject=templates.ca_subject("meshca tests", "intermediate", generation, serial),
        trust_domain=SpiffeId.for_trust_domain(TRUST_DOMAIN),
        issuer=root, serial=serial, not_before=NOW - timedelta(hours=1), not_after=not_after,
        path_length=0,
    )
    return builder.sign(root_key, _hash_for(root_key))


def make_authority(key: SigningKey | None = None, *,
                   not_after: datetime = NOW + timedelta(days=365)) -> SigningAuthority:
    root_key = ec_key("secp256r1", 100)
    root = make_root(root_key)
    key = key or ec_key("secp256r1", 101)
    intermediate = make_intermediate(key, root, root_key, not_after=not_after)
    return SigningAuthority(
        generation_id=7, certificate=intermediate, private_key=key, chain=(root,),
        bundle=TrustBundle((root,)),
    )


def _hash_for(key: object) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def csr_pem(key: object, *, sans: Sequence[x509.GeneralName] = (),
            extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
            subject: x509.Name | None = None) -> str:
    """A PKCS#10 request signed by `key`, with the given SANs and extra extensions."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject or x509.Name([]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    edwards = isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    algorithm = None if edwards else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(Encoding.PEM).decode()  # type: ignore[arg-type]


# ---- a few DER bytes by hand, for requests no builder will produce --------------------------

def der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def seq(*items: bytes) -> bytes:
    return der(0x30, b"".join(items))
