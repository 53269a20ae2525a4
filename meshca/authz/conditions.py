"""The `when` keys Istio knows, and what each one needs from a request."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class ValueKind(Enum):
    STRING = "string"  # exact, prefix*, *suffix, * = present
    IP = "ip"  # an address or a CIDR
    PORT = "port"
    SERVICE_ACCOUNT = "serviceAccount"  # `sa` or `ns/sa`


@dataclass(frozen=True, slots=True)
class KeySpec:
    kind: ValueKind
    http_only: bool  # unavailable over TCP


_FIXED = {
    "source.ip": KeySpec(ValueKind.IP, False),
    "remote.ip": KeySpec(ValueKind.IP, False),
    "source.namespace": KeySpec(ValueKind.STRING, False),
    "source.principal": KeySpec(ValueKind.STRING, False),
    "source.serviceAccount": KeySpec(ValueKind.SERVICE_ACCOUNT, False),
    "request.auth.principal": KeySpec(ValueKind.STRING, True),
    "request.auth.audiences": KeySpec(ValueKind.STRING, True),
    "request.auth.presenter": KeySpec(ValueKind.STRING, True),
    "destination.ip": KeySpec(ValueKind.IP, False),
    "destination.port": KeySpec(ValueKind.PORT, False),
    "connection.sni": KeySpec(ValueKind.STRING, False),
}
# `request.headers[name]`, `request.auth.claims[a][b]…`: the part in brackets must be non-empty.
_HEADER = re.compile(r"request\.headers\[([^\[\]]+)\]")
_CLAIMS = re.compile(r"request\.auth\.claims((?:\[[^\[\]]+\])+)")
_REPLACED = {
    "destination.namespace": "is replaced by the policy's metadata.namespace",
    "destination.name": "is deprecated (only supported in v1alpha1)",
    "destination.user": "is deprecated (only supported in v1alpha1)",
}


def key_spec(key: str) -> KeySpec:
    """How to read `key`; ValueError saying why when Istio (or meshca) does not accept it."""
    if key in _FIXED:
        return _FIXED[key]
    if _HEADER.fullmatch(key) or _CLAIMS.fullmatch(key):
        return KeySpec(ValueKind.STRING, True)
    if key.startswith(("request.headers", "request.auth.claims")):
        raise ValueError(f"bad key {key!r}: should have the form a[b]")
    if key in _REPLACED:
        raise ValueError(f"attribute {key} {_REPLACED[key]}")
    if key.startswith("destination.labels"):
        raise ValueError(f"attribute {key} is replaced by the workload selector")
    if key.startswith("experimental.envoy.filters."):
        raise ValueError(f"attribute {key} reads Envoy filter metadata, which meshca cannot see")
    raise ValueError(f"unknown attribute: {key}")


def header_name(key: str) -> str | None:
    match = _HEADER.fullmatch(key)
    return match.group(1).lower() if match else None


def claim_path(key: str) -> tuple[str, ...] | None:
    match = _CLAIMS.fullmatch(key)
    return tuple(re.findall(r"\[([^\[\]]+)\]", match.group(1))) if match else None
