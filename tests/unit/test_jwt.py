"""Compact JWS decoding and RS256/ES256 verification (RFC 7515/7518)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from meshca.core import jwt
from meshca.errors import AuthenticationError
from tests.unit.pki import ec_key, rsa_key

RSA = rsa_key(2048)
RSA_OTHER = rsa_key(2048, 1)
P256 = ec_key("secp256r1")
P256_OTHER = ec_key("secp256r1", 1)
P384 = ec_key("secp384r1")
CLAIMS = {"iss": "https://issuer.example", "sub": "system:serviceaccount:default:web", "exp": 1}


def _b64json(value: Any) -> str:
    return jwt.b64url_encode(json.dumps(value).encode())


def _signed(header: dict[str, Any], claims: Any, key: Any) -> str:
    """A token with any header, signed properly for RSA (PKCS#1 v1.5) or EC (raw r||s)."""
    head, body = _b64json(header), _b64json(claims)
    signing_input = f"{head}.{body}".encode()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{head}.{body}.{jwt.b64url_encode(signature)}"


def _refused(token: str, message: str) -> None:
    with pytest.raises(AuthenticationError, match=re.escape(message)):
        jwt.decode(token)


# ---- sign / decode / verify round trips -----------------------------------------------------

@pytest.mark.parametrize(("key", "alg"), [(RSA, "RS256"), (P256, "ES256")])
def test_sign_decode_verify_round_trip(key: Any, alg: str) -> None:
    token = jwt.sign(CLAIMS, key, "kid-1")
    assert token.count(".") == 2
    jws = jwt.decode(token)
    assert jws.header == {"alg": alg, "kid": "kid-1"}
    assert jws.alg == alg
    assert jws.kid == "kid-1"
    assert jws.claims == CLAIMS
    assert jws.signing_input == token.rsplit(".", 1)[0].encode()
    jwt.verify(jws, key.public_key())


def test_es256_signature_is_64_raw_bytes() -> None:
    jws = jwt.decode(jwt.sign(CLAIMS, P256, "k"))
    assert len(jws.signature) == 64


def test_rs256_signature_is_the_modulus_length() -> None:
    jws = jwt.decode(jwt.sign(CLAIMS, RSA, "k"))
    assert len(jws.signature) == 256


def test_unicode_claims_survive() -> None:
    claims = {"name": "caf\u00e9 \u2603", "n": [1, 2.5, None, True]}
    jws = jwt.decode(jwt.sign(claims, P256, "k"))
    assert jws.claims == claims


@pytest.mark.parametrize(("key", "alg"), [(RSA, "RS256"), (P256, "ES256")])
def test_tokens_built_independently_verify(key: Any, alg: str) -> None:
    token = _signed({"alg": alg, "typ": "JWT", "kid": "x"}, CLAIMS, key)
    jwt.verify(jwt.decode(token), key.public_key())


@pytest.mark.parametrize("data", [b"", b"f", b"fo", b"foo", b"foob", b"\xff\xfe\xfd", bytes(range(256))])
def test_base64url_round_trip_without_padding(data: bytes) -> None:
    encoded = jwt.b64url_encode(data)
    assert "=" not in encoded and "+" not in encoded and "/" not in encoded
    if data:
        assert jwt.b64url_decode(encoded) == data


@pytest.mark.parametrize("text", ["", "QQ==", "QQ=", "a+b/", "ab cd", "ab\ncd", "ab!c", "ab*cd", "ab.c",
                                  "\u00e9abc", "a"])
def test_base64url_decode_refuses_anything_but_the_url_alphabet(text: str) -> None:
    with pytest.raises(ValueError):  # binascii.Error is a ValueError too
        jwt.b64url_decode(text)


# ---- decode refusals ------------------------------------------------------------------------

GOOD = jwt.sign(CLAIMS, P256, "k")
HEAD, BODY, SIG = GOOD.split(".")
UNTERMINATED = jwt.b64url_encode(b'{"alg": "ES256"')
NOT_UTF8 = jwt.b64url_encode(b"\xff\xfe")


@pytest.mark.parametrize("token", ["", "abc", "a.b", f"{HEAD}.{BODY}", f"{GOOD}.x", f"{GOOD}.", "....."])
def test_token_must_have_three_parts(token: str) -> None:
    _refused(token, "token is not a compact JWS (three dot-separated parts)")


def test_token_longer_than_the_limit_is_refused_before_parsing() -> None:
    _refused("a" * (jwt.MAX_TOKEN_BYTES + 1), f"token is longer than {jwt.MAX_TOKEN_BYTES} bytes")
    padded = GOOD + "A" * (jwt.MAX_TOKEN_BYTES + 1 - len(GOOD))
    _refused(padded, "token is longer than")


@pytest.mark.parametrize(
    "token",
    [
        f".{BODY}.{SIG}",
        f"{HEAD}..{SIG}",
        f"{HEAD}=.{BODY}.{SIG}",
        f"{HEAD}.{BODY}==.{SIG}",
        f"{HEAD} .{BODY}.{SIG}",
        f"{HEAD}.{BODY}\n.{SIG}",
        f"{HEAD.replace('_', '/').replace('-', '+')}+.{BODY}.{SIG}",
        f"{HEAD}.{BODY}!!!!.{SIG}",
        f"{_b64json({'alg': 'ES256'})[:-1]}.{BODY}.{SIG}",
        f"{jwt.b64url_encode(b'not json')}.{BODY}.{SIG}",
        f"{UNTERMINATED}.{BODY}.{SIG}",
        f"{NOT_UTF8}.{BODY}.{SIG}",
        f"{HEAD}.{jwt.b64url_encode(b'[' * 5000)}.{SIG}",
    ],
    ids=["empty-header", "empty-claims", "padded-header", "padded-claims", "space", "newline",
         "standard-alphabet", "junk-characters", "truncated", "not-json", "unterminated-json",
         "not-utf8", "deeply-nested"],
)
def test_header_and_claims_must_be_base64url_json(token: str) -> None:
    _refused(token, "token is not valid base64url-encoded JSON")


@pytest.mark.parametrize(
    "signature",
    ["", f"{SIG}=", f"{SIG}==", SIG.replace("-", "+").replace("_", "/") + "+/", f"{SIG[:4]}!*!*{SIG[4:]}",
     f"{SIG[:10]} {SIG[10:]}", SIG[:-1] + "\u00e9"],
    ids=["empty", "padded-1", "padded-2", "standard-alphabet", "junk-inside", "space", "non-ascii"],
)
def test_signature_must_be_strict_base64url(signature: str) -> None:
    # Junk skipped by a lenient decoder would let a token be re-spelled and still verify.
    with pytest.raises(AuthenticationError, match="not valid base64url"):
        jwt.verify(jwt.decode(f"{HEAD}.{BODY}.{signature}"), P256.public_key())


@pytest.mark.parametrize(
    ("header", "claims"),
    [([{"alg": "ES256"}], CLAIMS), ("ES256", CLAIMS), (None, CLAIMS), (1, CLAIMS),
     ({"alg": "ES256"}, ["claims"]), ({"alg": "ES256"}, "claims"), ({"alg": "ES256"}, 42),
     ({"alg": "ES256"}, None)],
)
def test_header_and_claims_must_be_objects(header: Any, claims: Any) -> None:
    _refused(f"{_b64json(header)}.{_b64json(claims)}.{SIG}", "token header and claims must be JSON objects")


@pytest.mark.parametrize(
    "alg",
    ["none", "None", "NONE", "HS256", "HS384", "HS512", "RS384", "RS512", "PS256", "ES384", "ES512",
     "EdDSA", "rs256", "es256", "", " RS256", None, 256, ["RS256"], {"RS256": 1}, True],
)
def test_only_rs256_and_es256_are_accepted(alg: Any) -> None:
    token = f"{_b64json({'alg': alg})}.{BODY}.{SIG}"
    _refused(token, "token algorithm is not accepted; RS256 or ES256 required")


def test_missing_alg_is_refused() -> None:
    _refused(f"{_b64json({'kid': 'k'})}.{BODY}.{SIG}", "token algorithm is not accepted")


def test_alg_none_with_an_empty_signature_is_named_as_such() -> None:
    _refused(f"{_b64json({'alg': 'none'})}.{BODY}.", "token algorithm is not accepted")


@pytest.mark.parametrize("crit", [["exp"], [], ["b64"], "b64"])
def test_critical_header_parameters_are_refused(crit: Any) -> None:
    token = _signed({"alg": "ES256", "crit": crit, "exp": 1, "b64": False}, CLAIMS, P256)
    _refused(token, "token carries critical header parameters meshca does not know")


def test_errors_never_echo_token_material() -> None:
    secret = "sEcReTmArKeR"
    tokens = [
        f"{_b64json({'alg': 'HS256', 'x': secret})}.{BODY}.{SIG}",
        f"{_b64json({'alg': 'ES256', 'crit': [secret]})}.{BODY}.{SIG}",
        f"{secret}.{secret}.{secret}",
        f"{secret}!.{BODY}.{SIG}",
    ]
    for token in tokens:
        with pytest.raises(AuthenticationError) as info:
            jwt.decode(token)
        assert secret not in str(info.value)
        assert secret.lower() not in str(info.value).lower()


def test_kid_must_be_a_string_to_count() -> None:
    assert jwt.decode(_signed({"alg": "ES256", "kid": 7}, CLAIMS, P256)).kid is None
    assert jwt.decode(_signed({"alg": "ES256"}, CLAIMS, P256)).kid is None
    assert jwt.decode(_signed({"alg": "ES256", "kid": ""}, CLAIMS, P256)).kid == ""


# ---- verification ---------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "other"), [(RSA, RSA_OTHER), (P256, P256_OTHER)], ids=["RS256", "ES256"])
def test_signature_from_another_key_does_not_verify(key: Any, other: Any) -> None:
    jws = jwt.decode(jwt.sign(CLAIMS, key, "k"))
    with pytest.raises(AuthenticationError, match="token signature does not verify"):
        jwt.verify(jws, other.public_key())


@pytest.mark.parametrize("key", [RSA, P256], ids=["RS256", "ES256"])
def test_changed_claims_do_not_verify(key: Any) -> None:
    head, _, sig = jwt.sign(CLAIMS, key, "k").split(".")
    forged = f"{head}.{_b64json({**CLAIMS, 'sub': 'system:serviceaccount:kube-system:admin'})}.{sig}"
    with pytest.raises(AuthenticationError, match="token signature does not verify"):
        jwt.verify(jwt.decode(forged), key.public_key())


@pytest.mark.parametrize("key", [RSA, P256], ids=["RS256", "ES256"])
def test_changed_header_does_not_verify(key: Any) -> None:
    token = jwt.sign(CLAIMS, key, "k")
    _, body, sig = token.split(".")
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    forged = f"{_b64json({'alg': alg, 'kid': 'other'})}.{body}.{sig}"
    with pytest.raises(AuthenticationError, match="token signature does not verify"):
        jwt.verify(jwt.decode(forged), key.public_key())


@pytest.mark.parametrize(
    ("token_key", "alg", "verify_key"),
    [(RSA, "RS256", P256.public_key()), (P256, "ES256", RSA.public_key()),
     (P256, "ES256", P384.public_key())],
    ids=["RS256-with-EC-key", "ES256-with-RSA-key", "ES256-with-P384-key"],
)
def test_key_type_must_match_the_algorithm(token_key: Any, alg: str, verify_key: Any) -> None:
    jws = jwt.decode(_signed({"alg": alg}, CLAIMS, token_key))
    with pytest.raises(AuthenticationError, match="token algorithm does not match the issuer key type"):
        jwt.verify(jws, verify_key)


def test_algorithm_confusion_rs256_header_on_an_ec_signature() -> None:
    # An ES256 signature relabelled RS256 must not be checked with the EC key.
    es = jwt.sign(CLAIMS, P256, "k")
    _, body, sig = es.split(".")
    relabelled = f"{_b64json({'alg': 'RS256', 'kid': 'k'})}.{body}.{sig}"
    with pytest.raises(AuthenticationError, match="does not match the issuer key type"):
        jwt.verify(jwt.decode(relabelled), P256.public_key())


@pytest.mark.parametrize("length", [1, 32, 63, 65, 72, 128])
def test_es256_signature_of_the_wrong_length_is_refused(length: int) -> None:
    head, body, sig = jwt.sign(CLAIMS, P256, "k").split(".")
    wrong = (jwt.b64url_decode(sig) * 3)[:length]
    jws = jwt.decode(f"{head}.{body}.{jwt.b64url_encode(wrong)}")
    with pytest.raises(AuthenticationError, match="token signature has the wrong length for ES256"):
        jwt.verify(jws, P256.public_key())


def test_es256_der_encoded_signature_is_refused() -> None:
    head, body, _ = jwt.sign(CLAIMS, P256, "k").split(".")
    der_signature = P256.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    jws = jwt.decode(f"{head}.{body}.{jwt.b64url_encode(der_signature)}")
    with pytest.raises(AuthenticationError, match="wrong length for ES256"):
        jwt.verify(jws, P256.public_key())


def test_es256_zero_signature_does_not_verify() -> None:
    head, body, _ = jwt.sign(CLAIMS, P256, "k").split(".")
    jws = jwt.decode(f"{head}.{body}.{jwt.b64url_encode(bytes(64))}")
    with pytest.raises(AuthenticationError, match="token signature does not verify"):
        jwt.verify(jws, P256.public_key())


@pytest.mark.parametrize("cut", [1, 128, 255])
def test_rs256_truncated_signature_does_not_verify(cut: int) -> None:
    head, body, sig = jwt.sign(CLAIMS, RSA, "k").split(".")
    short = jwt.b64url_decode(sig)[:-cut]
    jws = jwt.decode(f"{head}.{body}.{jwt.b64url_encode(short)}")
    with pytest.raises(AuthenticationError, match="token signature does not verify"):
        jwt.verify(jws, RSA.public_key())
