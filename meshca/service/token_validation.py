"""Validating a Kubernetes service-account token, three ways (`--token-validation`).

- jwks: locally, against the issuer's public keys (no API call at all);
- tokenreview: by asking the API server (catches deleted service accounts and pods);
- both: locally first, so forgeries never reach the API server, then one TokenReview.
All three return the same ServiceAccount; all refuse legacy secret tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from meshca.core import jwt
from meshca.core.sa_token import LEGACY_ISSUER, ServiceAccount, TokenRules, check_claims, parse_subject
from meshca.errors import AuthenticationError
from meshca.service.key_sources import KeySource
from meshca.service.kube_calls import KubeCalls
from meshca.service.ports import KubeApiError

_SA_GROUP = "system:serviceaccounts"
_POD_NAME = "authentication.kubernetes.io/pod-name"
_POD_UID = "authentication.kubernetes.io/pod-uid"
_NODE_NAME = "authentication.kubernetes.io/node-name"


class TokenValidator(Protocol):
    async def validate(self, token: str) -> ServiceAccount: ...


class JwksValidator:
    def __init__(self, source: KeySource, audiences: frozenset[str], skew_seconds: int,
                 now: Callable[[], float] = time.time) -> None:
        self._source = source
        self._audiences = audiences
        self._skew = skew_seconds
        self._now = now

    async def validate(self, token: str) -> ServiceAccount:
        jws = jwt.decode(token)
        issuer = self._source.issuer()
        if issuer is None:
            await self._source.refresh()  # or waits for one under way
            issuer = self._source.issuer()
        if issuer is None:
            raise AuthenticationError("the token issuer's keys are not available yet",
                                      reason="unknown_key", cacheable=False)
        jwt.verify(jws, await self._key(jws))
        return check_claims(jws.claims, TokenRules(issuer, self._audiences, self._skew), self._now())

    async def _key(self, jws: jwt.Jws) -> jwt.VerificationKey:
        for attempt in range(2):
            keys = self._source.keys()
            if jws.kid is not None and jws.kid in keys:
                return keys[jws.kid]
            if jws.kid is None and len(keys) == 1:
                return next(iter(keys.values()))
            if attempt == 0:
                await self._source.refresh()  # keys rotate; a concurrent fetch counts too
        if jws.kid is None and len(self._source.keys()) > 1:
            raise AuthenticationError("token has no key id and the issuer has several keys",
                                      reason="unknown_key")
        raise AuthenticationError("token key id is not among the issuer's keys",
                                  reason="unknown_key", cacheable=False)


class TokenReviewValidator:
    def __init__(self, calls: KubeCalls, audiences: list[str]) -> None:
        self._calls = calls
        self._audiences = audiences

    async def validate(self, token: str) -> ServiceAccount:
        # Junk and legacy tokens are refused here, without spending an API call on them.
        claims = jwt.decode(token).claims
        if claims.get("iss") == LEGACY_ISSUER or "exp" not in claims:
            raise AuthenticationError("legacy secret-based service-account tokens are not accepted",
                                      reason="legacy")
        try:
            result = await self._calls.call(
                "tokenreview", lambda: self._calls.api.token_review(token, self._audiences))
        except KubeApiError as exc:
            raise AuthenticationError(
                f"cannot confirm the token with the Kubernetes API server ({exc})",
                reason="api_unavailable", cacheable=False) from None
        if not result.authenticated or result.error:
            raise AuthenticationError("the Kubernetes API server did not authenticate the token",
                                      reason="tokenreview")
        if _SA_GROUP not in result.groups:
            raise AuthenticationError("token does not belong to a service account", reason="subject")
        if result.audiences and not set(result.audiences) & set(self._audiences):
            raise AuthenticationError("token audience does not include an accepted audience",
                                      reason="audience")
        namespace, name = parse_subject(result.username)
        exp = claims.get("exp")
        return ServiceAccount(
            namespace=namespace, name=name,
            pod_name=_first(result.extra.get(_POD_NAME)),
            pod_uid=_first(result.extra.get(_POD_UID)),
            node_name=_first(result.extra.get(_NODE_NAME)),
            expires_at=int(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
        )


class BothValidator:
    """Local verification first, then the API server's word; both must name one account."""

    def __init__(self, local: JwksValidator, remote: TokenReviewValidator) -> None:
        self._local = local
        self._remote = remote

    async def validate(self, token: str) -> ServiceAccount:
        local = await self._local.validate(token)
        remote = await self._remote.validate(token)
        if (local.namespace, local.name) != (remote.namespace, remote.name):
            raise AuthenticationError("token claims and TokenReview disagree", reason="subject")
        return ServiceAccount(
            namespace=local.namespace, name=local.name,
            pod_name=remote.pod_name or local.pod_name, pod_uid=remote.pod_uid or local.pod_uid,
            node_name=remote.node_name or local.node_name, expires_at=local.expires_at,
        )


def _first(values: tuple[str, ...] | None) -> str | None:
    return values[0] if values else None
