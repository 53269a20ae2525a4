"""The one reader of `Authorization: Bearer <token>`, for gRPC metadata and the admin API.

RFC 7235 makes the scheme case-insensitive, and the admin API (HTTP) follows it. The Istio CA
gRPC contract is stricter: exactly one `authorization` value with the prefix `Bearer ` as
Istio's agent sends it (docs/contracts: a lower-case `bearer` is refused there), so the gRPC
side asks for the exact scheme.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshca.errors import AuthenticationError

SCHEME = "Bearer"


def bearer_token(values: Sequence[str], *, exact_scheme: bool = False,
                 where: str = "authorization metadata") -> str:
    """The token of exactly one `Bearer <token>` value; AuthenticationError (reason `missing`
    or `malformed`) naming `where` otherwise."""
    if not values:
        raise AuthenticationError(f"no {where}; expected 'Bearer <token>'", reason="missing")
    if len(values) > 1:
        raise AuthenticationError("more than one authorization value", reason="malformed")
    scheme, space, credential = values[0].partition(" ")
    if not space or (scheme != SCHEME if exact_scheme else scheme.lower() != SCHEME.lower()):
        raise AuthenticationError(f"{where} must start with 'Bearer '", reason="malformed")
    token = credential.strip()
    if not token:
        raise AuthenticationError(f"{where} carries an empty bearer token", reason="missing")
    return token
