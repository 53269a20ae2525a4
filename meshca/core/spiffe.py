"""SPIFFE IDs, validated as the SPIFFE ID specification requires."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_MAX_TRUST_DOMAIN = 255
_MAX_URI = 2048
_SCHEME = "spiffe://"


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """`spiffe://<trust_domain><path>`; path is empty or starts with '/'."""

    trust_domain: str
    path: str

    def __post_init__(self) -> None:
        # However it was built: no ID over the spec's limits may reach a certificate.
        if len(self.trust_domain.encode()) > _MAX_TRUST_DOMAIN:
            raise ValueError("trust domain is longer than 255 bytes")
        if len(_SCHEME) + len(self.trust_domain.encode()) + len(self.path.encode()) > _MAX_URI:
            raise ValueError("SPIFFE ID is longer than 2048 bytes")

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        if not isinstance(uri, str):
            raise TypeError("SPIFFE ID must be a string")
        if len(uri.encode()) > _MAX_URI:
            raise ValueError("SPIFFE ID is longer than 2048 bytes")
        if not uri.startswith(_SCHEME):
            raise ValueError("SPIFFE ID must start with 'spiffe://' (lower case)")
        rest = uri[len(_SCHEME):]
        trust_domain, slash, path = rest.partition("/")
        _check_trust_domain(trust_domain)
        if slash:
            path = "/" + path
            _check_path(path)
        return cls(trust_domain, path)

    @classmethod
    def for_service_account(cls, trust_domain: str, namespace: str, account: str) -> SpiffeId:
        """Istio's convention: `spiffe://<td>/ns/<namespace>/sa/<service-account>`."""
        _check_trust_domain(trust_domain)
        if "/" in namespace or "/" in account:
            # Otherwise ("a/sa/b", "c") and ("a", "b/sa/c") would name the same identity.
            raise ValueError("namespace and service account must each be one path segment")
        path = f"/ns/{namespace}/sa/{account}"
        _check_path(path)
        return cls(trust_domain, path)

    @classmethod
    def for_trust_domain(cls, trust_domain: str) -> SpiffeId:
        _check_trust_domain(trust_domain)
        return cls(trust_domain, "")

    def __str__(self) -> str:
        return f"{_SCHEME}{self.trust_domain}{self.path}"

    def workload_parts(self) -> tuple[str, str] | None:
        """(namespace, service account) of an Istio workload ID, `/ns/<ns>/sa/<sa>`; None for
        any other path. The names are SPIFFE path segments, not yet checked as Kubernetes names."""
        segments = self.path.split("/")
        if len(segments) != 5 or segments[1] != "ns" or segments[3] != "sa":
            return None
        return segments[2], segments[4]

    @property
    def uri(self) -> str:
        return str(self)


def _check_trust_domain(td: str) -> None:
    if not td:
        raise ValueError("SPIFFE ID has an empty trust domain")
    if len(td.encode()) > _MAX_TRUST_DOMAIN:
        raise ValueError("trust domain is longer than 255 bytes")
    if "@" in td or ":" in td:
        raise ValueError("SPIFFE ID must not carry user info or a port")
    if not _TRUST_DOMAIN.fullmatch(td):
        raise ValueError("trust domain may only hold lower-case letters, digits, '.', '-', '_'")


def _check_path(path: str) -> None:
    if "?" in path or "#" in path:
        raise ValueError("SPIFFE ID must not carry a query or fragment")
    if path.endswith("/"):
        raise ValueError("SPIFFE ID path must not end with '/'")
    for segment in path[1:].split("/"):
        if segment == "":
            raise ValueError("SPIFFE ID path has an empty segment")
        if segment in (".", ".."):
            raise ValueError("SPIFFE ID path must not hold '.' or '..' segments")
        if not _SEGMENT.fullmatch(segment):
            raise ValueError("SPIFFE ID path segments may only hold letters, digits, '.', '-', '_'")
