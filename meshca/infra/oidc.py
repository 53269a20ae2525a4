"""Fetching a service-account issuer's OIDC discovery document and its JWKS."""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from meshca.service.key_sources import Discovery
from meshca.service.ports import KubeApiPort

_MAX_BYTES = 1024 * 1024
_TIMEOUT = 10.0


def https_discovery(issuer: str, ca_file: str | None) -> Discovery:
    """`<issuer>/.well-known/openid-configuration`, then its `jwks_uri` (same scheme required)."""
    context = ssl.create_default_context(cafile=ca_file)
    config = _get_json(issuer.rstrip("/") + "/.well-known/openid-configuration", context)
    jwks_uri = config.get("jwks_uri")
    if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme != urlsplit(issuer).scheme:
        raise ValueError("discovery document has no usable jwks_uri")
    return Discovery(str(config.get("issuer", "")), _get_json(jwks_uri, context))


def kube_discovery(api: KubeApiPort) -> Discovery:
    """The same documents, asked of the API server through its client (its own credentials)."""
    config = api.get_json("/.well-known/openid-configuration")
    path = urlsplit(str(config.get("jwks_uri", ""))).path or "/openid/v1/jwks"
    return Discovery(str(config.get("issuer", "")), api.get_json(path))


def _get_json(url: str, context: ssl.SSLContext) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=_TIMEOUT, context=context) as response:  # noqa: S310
        body = response.read(_MAX_BYTES + 1)
    if len(body) > _MAX_BYTES:
        raise ValueError(f"{url} returned more than 1 MiB")
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not return a JSON object")
    return document
