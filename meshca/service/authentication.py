"""Who is calling: bearer-token extraction and local verification of Kubernetes tokens."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from meshca.core import jwt
from meshca.core.clock import Clock
from meshca.core.jwt import VerificationKey
from meshca.core.sa_token import ServiceAccount, TokenRules, check_claims
from meshca.errors import AuthenticationError

_BEARER = "Bearer "


def bearer_token(values: Sequence[str]) -> str:
    """Exactly one `authorization` value, `Bearer <token>`, as Istio's agent sends it."""
    if not values:
        raise AuthenticationError("no authorization metadata; expected 'Bearer <token>'")
    if len(values) > 1:
        raise AuthenticationError("more than one authorization value")
    value = values[0]
    if not value.startswith(_BEARER):
        raise AuthenticationError("authorization metadata must start with 'Bearer '")
    token = value[len(_BEARER):].strip()
    if not token:
        raise AuthenticationError("authorization metadata carries an empty bearer token")
    return token


class JwksTokenAuthenticator:
    """Verifies projected tokens locally against the issuer's public keys."""

    def __init__(
        self,
        rules: TokenRules,
        keys: Callable[[], Mapping[str, VerificationKey]],
        clock: Clock,
    ) -> None:
        self._rules = rules
        self._keys = keys
        self._clock = clock

    def authenticate(self, token: str) -> ServiceAccount:
        jws = jwt.decode(token)
        keys = self._keys()
        kid = jws.kid
        if kid is not None:
            key = keys.get(kid)
            if key is None:
                raise AuthenticationError("token key id is not among the issuer's keys")
            jwt.verify(jws, key)
        elif len(keys) == 1:
            jwt.verify(jws, next(iter(keys.values())))
        elif not keys:
            raise AuthenticationError("no keys of the token issuer are available")
        else:
            raise AuthenticationError("token has no key id and the issuer has several keys")
        return check_claims(jws.claims, self._rules, self._clock.now().timestamp())
