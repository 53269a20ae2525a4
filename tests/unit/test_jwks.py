"""JSON Web Key Sets: the issuer's public keys, by kid (RFC 7517/7518, RFC 7638 key ids)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshca.core.jwks import key_id, parse_jwks, to_jwk
from meshca.core.jwt import b64url_decode, b64url_encode
from tests.unit.pki import ec_key, rsa_key

RSA_PUB = rsa_key(2048).public_key()
EC_PUB = ec_key("secp256r1").public_key()

# RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPeb"
    "WKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQ"
    "MicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2N"
    "cRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def _rsa_entry(key: rsa.RSAPublicKey = RSA_PUB, **extra: Any) -> dict[str, Any]:
    numbers = key.public_numbers()
    entry = {"kty": "RSA", "n": b64url_encode(numbers.n.to_bytes(256, "big")), "e": "AQAB"}
    return {**entry, **extra}


def _ec_entry(key: ec.EllipticCurvePublicKey = EC_PUB, **extra: Any) -> dict[str, Any]:
    numbers = key.public_numbers()
    entry = {"kty": "EC", "crv": "P-256", "x": b64url_encode(numbers.x.to_bytes(32, "big")),
             "y": b64url_encode(numbers.y.to_bytes(32, "big"))}
    return {**entry, **extra}


# ---- parsing --------------------------------------------------------------------------------

def test_parses_rsa_and_ec_keys_by_kid() -> None:
    keys = parse_jwks({"keys": [_rsa_entry(kid="r1", alg="RS256", use="sig"),
                                _ec_entry(kid="e1", alg="ES256")]})
    assert set(keys) == {"r1", "e1"}
    assert isinstance(keys["r1"], rsa.RSAPublicKey)
    assert keys["r1"] == RSA_PUB
    assert isinstance(keys["e1"], ec.EllipticCurvePublicKey)
    assert isinstance(keys["e1"].curve, ec.SECP256R1)
    assert keys["e1"] == EC_PUB


def test_parses_the_rfc_7638_example_key() -> None:
    keys = parse_jwks({"keys": [{"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "kid": "2011-04-29"}]})
    key = keys["2011-04-29"]
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.public_numbers().e == 65537
    assert key.key_size == 2048


@pytest.mark.parametrize(
    "entry",
    [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "x"},
        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "x"},
        {**_ec_entry(), "crv": "P-384", "kid": "x"},
        {**_ec_entry(), "crv": "P-521", "kid": "x"},
        {**_ec_entry(), "crv": "secp256k1", "kid": "x"},
        {**_ec_entry(), "crv": None, "kid": "x"},
        {**_rsa_entry(), "kty": "rsa", "kid": "x"},
        {"kid": "x"},
        _rsa_entry(kid="x", use="enc"),
        _ec_entry(kid="x", use="enc"),
        _rsa_entry(kid="x", use=""),
        _rsa_entry(kid="x", use=None),
    ],
    ids=["oct", "okp", "p384", "p521", "secp256k1", "no-crv", "lower-kty", "no-kty", "rsa-enc",
         "ec-enc", "use-empty", "use-null"],
)
def test_unknown_or_non_signing_entries_are_skipped(entry: dict[str, Any]) -> None:
    keys = parse_jwks({"keys": [entry, _ec_entry(kid="good")]})
    assert list(keys) == ["good"]


@pytest.mark.parametrize(
    "entry",
    [
        {"kty": "RSA", "e": "AQAB", "kid": "x"},  # no n
        {"kty": "RSA", "n": "AQAB", "kid": "x"},  # no e
        {**_rsa_entry(), "n": "not base64url!", "kid": "x"},
        {**_rsa_entry(), "n": 12345, "kid": "x"},
        {**_rsa_entry(), "e": "", "kid": "x"},
        {**_ec_entry(), "x": None, "kid": "x"},
        {**_ec_entry(), "y": b64url_encode(b"\x01" * 32), "kid": "x"},  # not on the curve
        {"kty": "EC", "crv": "P-256", "kid": "x"},
        "a string",
        ["a", "list"],
        None,
    ],
    ids=["rsa-no-n", "rsa-no-e", "rsa-bad-n", "rsa-n-number", "rsa-empty-e", "ec-x-null",
         "ec-off-curve", "ec-no-point", "string", "list", "null"],
)
def test_malformed_entries_are_skipped_not_fatal(entry: Any) -> None:
    keys = parse_jwks({"keys": [entry, _rsa_entry(kid="good")]})
    assert list(keys) == ["good"]


@pytest.mark.parametrize("use", [None, "sig"], ids=["use-absent", "use-sig"])
def test_use_absent_or_sig_is_a_signing_key(use: str | None) -> None:
    entry = _ec_entry(kid="k") if use is None else _ec_entry(kid="k", use=use)
    assert list(parse_jwks({"keys": [entry]})) == ["k"]


@pytest.mark.parametrize("kid", [None, 7, ["k"], {"k": 1}], ids=["absent", "number", "list", "object"])
def test_kid_falls_back_to_the_key_thumbprint(kid: Any) -> None:
    entry = _rsa_entry() if kid is None else _rsa_entry(kid=kid)
    keys = parse_jwks({"keys": [entry, _ec_entry()]})
    assert set(keys) == {key_id(RSA_PUB), key_id(EC_PUB)}
    assert keys[key_id(RSA_PUB)] == RSA_PUB


def test_later_entry_with_the_same_kid_wins() -> None:
    other = ec_key("secp256r1", 1).public_key()
    keys = parse_jwks({"keys": [_ec_entry(kid="k"), _ec_entry(other, kid="k")]})
    assert keys == {"k": other}


@pytest.mark.parametrize(
    "document",
    [{}, {"keys": None}, {"keys": {"kid": "x"}}, {"keys": "[]"}, {"Keys": []}],
)
def test_document_without_a_keys_list_is_an_error(document: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="no 'keys' list"):
        parse_jwks(document)


def test_empty_keys_list_gives_no_keys() -> None:
    assert parse_jwks({"keys": []}) == {}


# ---- producing JWKs -------------------------------------------------------------------------

def test_rsa_to_jwk() -> None:
    jwk = to_jwk(RSA_PUB, "r1")
    assert {k: jwk[k] for k in ("use", "kty", "kid", "alg", "e")} == {
        "use": "sig", "kty": "RSA", "kid": "r1", "alg": "RS256", "e": "AQAB"}
    assert int.from_bytes(b64url_decode(jwk["n"]), "big") == RSA_PUB.public_numbers().n
    assert len(b64url_decode(jwk["n"])) == 256
    assert set(jwk) == {"use", "kty", "kid", "alg", "n", "e"}


def test_ec_to_jwk() -> None:
    jwk = to_jwk(EC_PUB, "e1")
    assert {k: jwk[k] for k in ("use", "kty", "kid", "alg", "crv")} == {
        "use": "sig", "kty": "EC", "kid": "e1", "alg": "ES256", "crv": "P-256"}
    assert len(b64url_decode(jwk["x"])) == 32
    assert len(b64url_decode(jwk["y"])) == 32
    assert set(jwk) == {"use", "kty", "kid", "alg", "crv", "x", "y"}


def test_ec_coordinates_keep_their_leading_zero_bytes() -> None:
    # About one key in 256 has an x below 2**248; find one and check it is still 32 bytes.
    for _ in range(4000):
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        if key.public_numbers().x < 2**248:
            break
    else:  # pragma: no cover - odds of this are about e**-15
        pytest.skip("no short coordinate found")
    jwk = to_jwk(key, "short")
    assert len(b64url_decode(jwk["x"])) == 32
    assert parse_jwks({"keys": [jwk]})["short"] == key


@pytest.mark.parametrize("key", [RSA_PUB, EC_PUB, rsa_key(4096).public_key()], ids=["rsa", "ec", "rsa4096"])
def test_to_jwk_round_trips_through_parse(key: Any) -> None:
    assert parse_jwks({"keys": [to_jwk(key, "k")]}) == {"k": key}


# ---- key ids --------------------------------------------------------------------------------

def test_key_id_is_the_rfc_7638_thumbprint() -> None:
    key = parse_jwks({"keys": [{"kty": "RSA", "n": RFC7638_N, "e": "AQAB"}]})
    assert list(key) == [RFC7638_THUMBPRINT]
    assert key_id(key[RFC7638_THUMBPRINT]) == RFC7638_THUMBPRINT


def test_key_id_is_stable_and_distinct_per_key() -> None:
    assert key_id(EC_PUB) == key_id(EC_PUB)
    assert key_id(RSA_PUB) == key_id(rsa_key(2048).public_key())
    assert key_id(EC_PUB) != key_id(ec_key("secp256r1", 1).public_key())
    assert key_id(RSA_PUB) != key_id(EC_PUB)
    assert len(key_id(EC_PUB)) == 43 and "=" not in key_id(EC_PUB)
