"""Parsing the cacerts files' PEM: certificates only where certificates belong, one EC or RSA
key, and no block cut short (a half-written file is refused, never silently shortened).

Messages name the file and the block, never key material, and chain no parser exception.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshca.core.keys import SigningKey
from meshca.infra.cacerts.layout import CA_KEY, PluggedCaError

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL
)
_PEM_BEGIN = re.compile(rb"-----BEGIN ")
_PRIVATE_KEY_LABELS = {b"PRIVATE KEY", b"EC PRIVATE KEY", b"RSA PRIVATE KEY"}


def _pem_blocks(data: bytes, name: str) -> list[tuple[bytes, bytes]]:
    """(label, whole block) pairs; refuse blocks cut short, such as a half-written file's."""
    blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    if len(_PEM_BEGIN.findall(data)) != len(blocks):
        raise PluggedCaError(f"{name} has an unterminated or malformed PEM block (truncated file?)")
    return blocks


def certificates(data: bytes, name: str) -> tuple[x509.Certificate, ...]:
    """The certificates of file `name`, at least one; any other block is refused."""
    blocks = _pem_blocks(data, name)
    if not blocks:
        raise PluggedCaError(f"{name} holds no PEM certificate")
    certs: list[x509.Certificate] = []
    for index, (label, block) in enumerate(blocks, start=1):
        if label != b"CERTIFICATE":
            raise PluggedCaError(
                f"{name} block #{index} is a {label.decode()!r}, expected only CERTIFICATE blocks"
            )
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            raise PluggedCaError(f"{name} certificate #{index} cannot be parsed") from None
    return tuple(certs)


def private_key(data: bytes) -> SigningKey:
    """The one unencrypted EC or RSA key of ca-key.pem (an EC PARAMETERS block may precede it)."""
    blocks = _pem_blocks(data, CA_KEY)
    if any(label == b"ENCRYPTED PRIVATE KEY" for label, _ in blocks):
        raise PluggedCaError(f"{CA_KEY} is encrypted; meshca needs an unencrypted key")
    keys = [block for label, block in blocks if label in _PRIVATE_KEY_LABELS]
    if len(keys) != 1:
        raise PluggedCaError(f"{CA_KEY} must hold exactly one PEM private key, found {len(keys)}")
    try:
        key = serialization.load_pem_private_key(keys[0], password=None)
    except TypeError:
        raise PluggedCaError(f"{CA_KEY} is encrypted; meshca needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise PluggedCaError(f"{CA_KEY} cannot be parsed as a private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PluggedCaError(
            f"{CA_KEY} holds an unsupported key type ({type(key).__name__}); "
            "meshca signs with EC or RSA keys only"
        )
    return key
