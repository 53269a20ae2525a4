"""Who is calling the admin API, and with which role. Deny by default.

Credentials, in this order of precedence:
- `Authorization: Bearer mca_…`: an admin token created by meshca (only its digest is stored);
- `Authorization: Bearer <JWT>`: a Kubernetes service-account token, verified like a sidecar's
  (with the admin audiences) and mapped through `--admin-service-account ns/sa=ROLE`;
- no Authorization header but a client certificate that the TLS layer verified against the
  bundle, whose SPIFFE ID is mapped through `--admin-spiffe-id ID=ROLE`, on record and not
  revoked. With federation, the TLS layer also trusts federated roots: a certificate of a
  federated trust domain is accepted when the root that vouched for it is one of THAT trust
  domain's roots and an `--admin-spiffe-id` names its exact SPIFFE ID (it cannot be on this
  server's record); a federated root never vouches for an ID of another trust domain, the
  local one included.
Bad or missing credentials are AuthenticationError (401); a valid identity with no role is
PermissionDenied (403).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.core.bearer import bearer_token
from meshca.core.certificates import format_serial, spiffe_id_of
from meshca.core.roles import Role
from meshca.errors import AuthenticationError, PermissionDenied
from meshca.service.federation_ports import FederatedBundle
from meshca.service.ports import TokenAuthenticator

ADMIN_TOKEN_PREFIX = "mca_"  # marks meshca admin tokens apart from JWTs


@dataclass(frozen=True, slots=True)
class Principal:
    actor: str  # "token:<name>", "sa:<ns>/<sa>" or the SPIFFE ID
    role: Role


class AdminTokenLookup(Protocol):
    def role_for(self, token: str) -> tuple[str, Role] | None: ...


class AdminAuthenticator:
    def __init__(
        self,
        *,
        tokens: AdminTokenLookup,
        service_account_tokens: TokenAuthenticator,
        service_accounts: Mapping[str, Role],
        spiffe_ids: Mapping[str, Role],
        certificate_usable: Callable[[str], bool],
        own_trust_domain: str | None = None,
        local_roots: Callable[[], Sequence[x509.Certificate]] | None = None,
        federated: Callable[[], Mapping[str, FederatedBundle]] | None = None,
    ) -> None:
        """With `own_trust_domain`, client certificates are checked against the roots of their
        own trust domain: `local_roots` for it, `federated` bundles for the others."""
        self._tokens = tokens
        self._sa_tokens = service_account_tokens
        self._service_accounts = dict(service_accounts)
        self._spiffe_ids = dict(spiffe_ids)
        self._certificate_usable = certificate_usable
        self._own = own_trust_domain
        self._local_roots = local_roots
        self._federated = federated

    async def authenticate(self, authorization: str | None, client_certificate: bytes | None,
                           anchor: bytes | None = None) -> Principal:
        """`anchor`: DER of the root the TLS layer verified the certificate up to, if known."""
        if authorization is not None:
            return await self._bearer(bearer_token([authorization], where="Authorization"))
        if client_certificate is not None:
            return await asyncio.to_thread(self._certificate, client_certificate, anchor)
        raise AuthenticationError("credentials are required")

    async def _bearer(self, token: str) -> Principal:
        if token.startswith(ADMIN_TOKEN_PREFIX):
            found = await asyncio.to_thread(self._tokens.role_for, token)
            if found is None:
                raise AuthenticationError("admin token is unknown or revoked")
            name, token_role = found
            return Principal(f"token:{name}", token_role)
        account = await self._sa_tokens.authenticate(token)
        key = f"{account.namespace}/{account.name}"
        role = self._service_accounts.get(key)
        if role is None:
            raise PermissionDenied(f"service account {key} has no admin role")
        return Principal(f"sa:{key}", role)

    def _certificate(self, der: bytes, anchor: bytes | None) -> Principal:
        cert = x509.load_der_x509_certificate(der)
        found = spiffe_id_of(cert)
        if found is None:
            raise AuthenticationError("client certificate carries no single SPIFFE ID")
        spiffe_id = str(found)
        if self._own is not None and found.trust_domain != self._own:
            return self._federated_certificate(spiffe_id, found.trust_domain, anchor)
        if self._own is not None and self._local_roots is not None and (
                not _among(anchor, self._local_roots()) if anchor is not None
                # The vouching root unknown: only safe while no other trust domain's root is
                # trusted by the listener.
                else bool(self._federated and self._federated())):
            raise AuthenticationError(f"{spiffe_id}: the client certificate does not chain to "
                                      f"a root of {self._own}")
        role = self._spiffe_ids.get(spiffe_id)
        if role is None:
            raise PermissionDenied(f"{spiffe_id} has no admin role")
        if not self._certificate_usable(format_serial(cert.serial_number)):
            raise AuthenticationError("client certificate is revoked or not on record")
        return Principal(spiffe_id, role)

    def _federated_certificate(self, spiffe_id: str, trust_domain: str,
                               anchor: bytes | None) -> Principal:
        bundle = (self._federated() if self._federated is not None else {}).get(trust_domain)
        if bundle is None:
            raise AuthenticationError(f"{spiffe_id}: trust domain {trust_domain} is not "
                                      "federated with this one")
        if not _among(anchor, bundle.x509_roots):
            raise AuthenticationError(f"{spiffe_id}: the client certificate does not chain to "
                                      f"a root of {trust_domain}")
        role = self._spiffe_ids.get(spiffe_id)
        if role is None:
            raise PermissionDenied(f"{spiffe_id} has no admin role")
        return Principal(spiffe_id, role)


def _among(anchor: bytes | None, roots: Sequence[x509.Certificate]) -> bool:
    if anchor is None:
        return False
    return any(root.public_bytes(Encoding.DER) == anchor for root in roots)
