"""JWT-SVID minting (core/jwt_signing.py): header and claims, exp bounded by the key, audience and
lifetime rules, and a signer that answers as X.509 wants (DER) turned into a valid JWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from meshca.core import jwt_signing
from meshca.core.jwt_signing import JwtKey, JwtSigningKey
from meshca.core.keys import KeyType
from meshca.core.remote_signing import LocalSigner, SignatureRejected, SigningPublicKey, hash_for
from meshca.errors import InvalidRequest
from tests.jwt_validation import validate

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SUB = "spiffe://cluster.local/ns/shop/sa/web"


class RemoteLike:
    """Signs like a Vault Transit key: DER ECDSA / PKCS#1 v1.5, and is not a LocalSigner."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, *,
                 wrong: bool = False) -> None:
        self._key = key
        self._wrong = wrong

    @property
    def public_key(self) -> SigningPublicKey:
        return self._key.public_key()

    def sign(self, tbs: bytes) -> bytes:
        data = tbs + b"x" if self._wrong else tbs
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(data, ec.ECDSA(hash_for(self.public_key)))
        return self._key.sign(data, padding.PKCS1v15(), hash_for(self.public_key))


def signing_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, *, remote: bool = False,
                not_after: datetime = NOW + timedelta(days=7)) -> JwtSigningKey:
    signer = RemoteLike(key) if remote else LocalSigner(key)
    return JwtSigningKey(JwtKey(7, jwt_signing.new_kid(), key.public_key(), not_after), signer)


@pytest.mark.parametrize("alg", ["ES256", "ES384", "RS256"])
@pytest.mark.parametrize("remote", [False, True])
def test_minted_tokens_validate_with_the_bundle_key(alg: str, remote: bool) -> None:
    key = signing_key(jwt_signing.KEY_TYPES[alg].generate(), remote=remote)
    minted = jwt_signing.mint(key, SUB, ["a", "b"], timedelta(minutes=5), NOW)
    header = jwt.get_unverified_header(minted.token)
    assert header == {"alg": alg, "kid": key.key.kid, "typ": "JWT"}
    claims = validate(minted.token, {"keys": [key.key.jwk()]}, "b", now=NOW.timestamp())
    assert claims == {"sub": SUB, "aud": ["a", "b"], "iat": int(NOW.timestamp()),
                      "exp": int(NOW.timestamp()) + 300}
    assert minted.expires_at == NOW + timedelta(minutes=5)


def test_exp_never_passes_the_key_not_after() -> None:
    end = NOW + timedelta(seconds=90, microseconds=500)
    key = signing_key(KeyType.EC_P256.generate(), not_after=end)
    minted = jwt_signing.mint(key, SUB, ["a"], timedelta(hours=1), NOW)
    assert minted.expires_at == NOW + timedelta(seconds=90)
    with pytest.raises(ValueError, match="expired"):
        jwt_signing.mint(key, SUB, ["a"], timedelta(minutes=1), end)


def test_a_remote_signature_that_does_not_verify_is_never_used() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    key = JwtSigningKey(JwtKey(1, "k", private.public_key(), NOW + timedelta(days=1)),
                        RemoteLike(private, wrong=True))
    with pytest.raises(SignatureRejected):
        jwt_signing.mint(key, SUB, ["a"], timedelta(minutes=1), NOW)


def test_jwks_of_each_key_type() -> None:
    ec_key = ec.generate_private_key(ec.SECP384R1()).public_key()
    jwk = jwt_signing.public_jwk(ec_key)
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-384" and len(jwt.utils.base64url_decode(jwk["x"])) == 48
    rsa_key = rsa.generate_private_key(65537, 2048).public_key()
    assert jwt_signing.public_jwk(rsa_key)["e"] == "AQAB"
    assert len(jwt_signing.new_kid()) == 22 and jwt_signing.new_kid() != jwt_signing.new_kid()


@pytest.mark.parametrize(("audience", "words"), [
    ([], "at least one"), ([""], "empty"), (["  "], "empty"), (["a\nb"], "control"),
    (["x" * 513], "512"), ([str(i) for i in range(17)], "16"),
])
def test_bad_audiences(audience: list[str], words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        jwt_signing.check_audience(audience)


def test_audience_duplicates_collapse() -> None:
    assert jwt_signing.check_audience(["a", "b", "a"]) == ("a", "b")


def test_lifetimes() -> None:
    five, hour = timedelta(minutes=5), timedelta(hours=1)
    assert jwt_signing.token_lifetime(timedelta(0), five, hour) == five
    assert jwt_signing.token_lifetime(hour, five, hour) == hour
    with pytest.raises(InvalidRequest, match="exceeds"):
        jwt_signing.token_lifetime(hour + timedelta(seconds=1), five, hour)
    with pytest.raises(InvalidRequest, match="negative"):
        jwt_signing.token_lifetime(timedelta(seconds=-1), five, hour)
