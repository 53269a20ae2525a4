"""What the rest of the server needs from federation: the verified bundles of the trust
domains this one federates with, as an in-memory snapshot (refreshed in the background by the
federation package, read without I/O on any request path)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cryptography import x509


@dataclass(frozen=True, slots=True)
class FederatedBundle:
    trust_domain: str  # "b.test"; never this server's own
    document: bytes  # the SPIFFE bundle JSON as fetched and verified
    x509_roots: tuple[x509.Certificate, ...]
    # jwt-svid keys by kid, each the JWK as the foreign bundle gave it (kty, crv/x/y or n/e...)
    jwt_keys: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    sequence: int | None = None
    fetched_at: datetime | None = None


class FederatedBundles(Protocol):
    def snapshot(self) -> Mapping[str, FederatedBundle]:
        """The last good bundle of every federated trust domain, by name. Never blocks."""
        ...


class NoFederation:
    """No federated trust domains (the default)."""

    def snapshot(self) -> Mapping[str, FederatedBundle]:
        return {}
