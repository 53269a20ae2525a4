"""CA key types, their signature hashes and their human names."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

from meshca.core.keys import KeyType, describe_public_key, signature_hash
from tests.unit.pki import ec_key, ed448_key, ed25519_key, rsa_key


def test_key_type_names_are_the_command_line_values() -> None:
    assert [k.value for k in KeyType] == ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"]
    assert KeyType("ec-p384") is KeyType.EC_P384
    assert str(KeyType.RSA_2048) == "rsa-2048"
    with pytest.raises(ValueError):  # not a key type meshca knows
        KeyType("ec-p521")


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        (KeyType.EC_P256, lambda k: isinstance(k, ec.EllipticCurvePrivateKey)
         and isinstance(k.curve, ec.SECP256R1)),
        (KeyType.EC_P384, lambda k: isinstance(k, ec.EllipticCurvePrivateKey)
         and isinstance(k.curve, ec.SECP384R1)),
        (KeyType.RSA_2048, lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 2048),
        (KeyType.RSA_3072, lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 3072),
        (KeyType.RSA_4096, lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 4096),
    ],
    ids=lambda v: v.value if isinstance(v, KeyType) else "",
)
def test_generate_makes_the_named_key_and_of_names_it_back(kind: KeyType, check: Any) -> None:
    key = kind.generate()
    assert check(key)
    assert KeyType.of(key) is kind
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.public_key().public_numbers().e == 65537


def test_generate_makes_a_fresh_key_every_time() -> None:
    assert KeyType.EC_P256.generate().public_key() != KeyType.EC_P256.generate().public_key()


@pytest.mark.parametrize("key", [lambda: ec_key("secp521r1"), lambda: rsa_key(1024)], ids=["p521", "rsa1024"])
def test_of_refuses_keys_meshca_does_not_generate(key: Any) -> None:
    with pytest.raises((KeyError, ValueError)):
        KeyType.of(key())


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (lambda: ec_key("secp256r1"), hashes.SHA256),
        (lambda: ec_key("secp384r1"), hashes.SHA384),
        (lambda: rsa_key(2048), hashes.SHA256),
        (lambda: rsa_key(4096), hashes.SHA256),
        (lambda: ed25519_key(), None),
    ],
    ids=["p256", "p384", "rsa2048", "rsa4096", "ed25519"],
)
def test_signature_hash_matches_the_key(key: Any, expected: type | None) -> None:
    algorithm = signature_hash(key())
    if expected is None:
        assert algorithm is None
    else:
        assert isinstance(algorithm, expected)


@pytest.mark.parametrize(
    ("key", "name"),
    [
        (lambda: ec_key("secp256r1"), "ECDSA secp256r1"),
        (lambda: ec_key("secp384r1"), "ECDSA secp384r1"),
        (lambda: ec_key("secp521r1"), "ECDSA secp521r1"),
        (lambda: rsa_key(2048), "RSA 2048"),
        (lambda: rsa_key(4096), "RSA 4096"),
        (lambda: ed25519_key(), "Ed25519"),
        (lambda: ed448_key(), "Ed448PublicKey"),
        (lambda: x25519.X25519PrivateKey.generate(), "X25519PublicKey"),
    ],
    ids=["p256", "p384", "p521", "rsa2048", "rsa4096", "ed25519", "ed448", "x25519"],
)
def test_describe_public_key(key: Any, name: str) -> None:
    assert describe_public_key(key().public_key()) == name
