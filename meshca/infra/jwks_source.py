"""Loading an issuer's JWKS from a file or an HTTPS URL."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from meshca.core.jwks import parse_jwks
from meshca.core.jwt import VerificationKey

_MAX_JWKS_BYTES = 1024 * 1024


def load_jwks(path_or_url: str, timeout: float = 10.0) -> dict[str, VerificationKey]:
    if path_or_url.startswith("https://") or path_or_url.startswith("http://"):
        with urllib.request.urlopen(path_or_url, timeout=timeout) as response:  # noqa: S310
            body = response.read(_MAX_JWKS_BYTES + 1)
    else:
        body = Path(path_or_url).read_bytes()
    if len(body) > _MAX_JWKS_BYTES:
        raise ValueError(f"JWKS at {path_or_url} is larger than 1 MiB")
    keys = parse_jwks(json.loads(body))
    if not keys:
        raise ValueError(f"JWKS at {path_or_url} holds no usable RS256/ES256 key")
    return keys
