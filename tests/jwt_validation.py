"""An independent JWT-SVID validator for tests: PyJWT with only the keys of a SPIFFE bundle
(GET /v1/bundle's JSON), as a relying party that knows nothing else of meshca would do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt


def validate(token: str, bundle: Mapping[str, Any], audience: str, *,
             now: float | None = None) -> dict[str, Any]:
    """The claims, or jwt.InvalidTokenError: kid must name a `jwt-svid` key of the bundle, and
    the header's alg must be that key's; signature, aud, exp and the required claims checked.
    `now`: a simulated time for the exp check (PyJWT reads the real clock)."""
    header = jwt.get_unverified_header(token)
    keys = {k.get("kid"): k for k in bundle["keys"] if k.get("use") == "jwt-svid"}
    found = keys.get(header.get("kid"))
    if found is None:
        raise jwt.InvalidTokenError("no jwt-svid key with this kid in the bundle")
    key = jwt.PyJWK(dict(found))
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=[key.algorithm_name], audience=audience,
        options={"require": ["sub", "aud", "exp", "iat"], "verify_exp": now is None,
                 "verify_iat": now is None})
    if now is not None and not now < claims["exp"]:
        raise jwt.ExpiredSignatureError("Signature has expired (simulated time)")
    return claims
