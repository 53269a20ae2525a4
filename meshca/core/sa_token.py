"""What makes a Kubernetes projected service-account token acceptable (docs/contracts.md §2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from meshca.core.kube_names import check_service_account_ref
from meshca.errors import AuthenticationError

LEGACY_ISSUER = "kubernetes/serviceaccount"
_SUBJECT_PREFIX = "system:serviceaccount:"
_MAX_NUMERIC_DATE = 2**53  # seconds; far beyond any real date, still exact as a float


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """The workload a token speaks for."""

    namespace: str
    name: str
    pod_name: str | None = None
    pod_uid: str | None = None
    node_name: str | None = None
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class TokenRules:
    issuer: str
    audiences: frozenset[str]
    skew_seconds: int = 60


def parse_subject(sub: object) -> tuple[str, str]:
    """`system:serviceaccount:<ns>:<sa>` → (ns, sa)."""
    if not isinstance(sub, str) or not sub.startswith(_SUBJECT_PREFIX):
        raise AuthenticationError("token subject is not a Kubernetes service account", reason="subject")
    parts = sub[len(_SUBJECT_PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        raise AuthenticationError("token subject is not a Kubernetes service account", reason="subject")
    try:
        check_service_account_ref(parts[0], parts[1])
    except ValueError as exc:
        # Signed, but no real service account is named so: nothing may be issued for it.
        raise AuthenticationError(f"token service account name or namespace cannot form a "
                                  f"SPIFFE ID: {exc}", reason="subject") from None
    return parts[0], parts[1]


def check_claims(claims: dict[str, Any], rules: TokenRules, now: float) -> ServiceAccount:
    """Check issuer, audience, times, subject and the `kubernetes.io` claim; return who it is."""
    iss = claims.get("iss")
    if iss == LEGACY_ISSUER:
        raise AuthenticationError(
            "legacy secret-based service-account tokens are not accepted", reason="legacy"
        )
    if iss != rules.issuer:
        raise AuthenticationError("token issuer is not the configured issuer", reason="issuer")
    if not _audience_matches(claims.get("aud"), rules.audiences):
        raise AuthenticationError("token audience does not include an accepted audience", reason="audience")
    _check_times(claims, rules.skew_seconds, now)
    namespace, name = parse_subject(claims.get("sub"))
    k8s = claims.get("kubernetes.io")
    if not isinstance(k8s, dict):
        raise AuthenticationError(
            "token lacks the kubernetes.io claim of a projected token", reason="subject"
        )
    sa = k8s.get("serviceaccount")
    if k8s.get("namespace") != namespace or not isinstance(sa, dict) or sa.get("name") != name:
        raise AuthenticationError("token subject and kubernetes.io claim disagree", reason="subject")
    pod = _object_or_empty(k8s.get("pod"))
    node = _object_or_empty(k8s.get("node"))
    return ServiceAccount(
        namespace=namespace,
        name=name,
        pod_name=_str_or_none(pod.get("name")),
        pod_uid=_str_or_none(pod.get("uid")),
        node_name=_str_or_none(node.get("name")),
        expires_at=int(claims["exp"]),
    )


def _audience_matches(aud: object, accepted: frozenset[str]) -> bool:
    if isinstance(aud, str):
        return aud in accepted
    if isinstance(aud, list):
        return any(isinstance(a, str) and a in accepted for a in aud)
    return False


def _check_times(claims: dict[str, Any], skew: int, now: float) -> None:
    exp = claims.get("exp")
    if exp is None:
        raise AuthenticationError("token never expires (no exp claim)", reason="legacy")
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AuthenticationError(f"token {name} claim is not a number", reason="malformed")
        # JSON allows NaN, Infinity and integers too large for a float: none is a NumericDate.
        finite = isinstance(value, int) or math.isfinite(value)
        if not finite or abs(value) > _MAX_NUMERIC_DATE:
            raise AuthenticationError(
                f"token {name} claim is not a finite number of seconds", reason="malformed"
            )
    if now > float(exp) + skew:
        raise AuthenticationError("token has expired", reason="expired")
    nbf = claims.get("nbf")
    if nbf is not None and now + skew < float(nbf):
        raise AuthenticationError("token is not valid yet (nbf)", reason="not_yet_valid")
    iat = claims.get("iat")
    if iat is not None and now + skew < float(iat):
        raise AuthenticationError("token was issued in the future (iat)", reason="not_yet_valid")


def _object_or_empty(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
