"""Who is calling the admin API, and with which role. Deny by default.

Credentials, in this order of precedence:
- `Authorization: Bearer mca_…`: an admin token created by meshca (only its digest is stored);
- `Authorization: Bearer <JWT>`: a Kubernetes service-account token, verified like a sidecar's
  (with the admin audiences) and mapped through `--admin-service-account ns/sa=ROLE`;
- no Authorization header but a client certificate that the TLS layer verified against the
  bundle, whose SPIFFE ID is mapped through `--admin-spiffe-id ID=ROLE`, on record and not
  revoked.
Bad or missing credentials are AuthenticationError (401); a valid identity with no role is
PermissionDenied (403).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from meshca.core.bearer import bearer_token
from meshca.core.certificates import format_serial, spiffe_id_of
from meshca.core.roles import Role
from meshca.errors import AuthenticationError, PermissionDenied
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
    ) -> None:
        self._tokens = tokens
        self._sa_tokens = service_account_tokens
        self._service_accounts = dict(service_accounts)
        self._spiffe_ids = dict(spiffe_ids)
        self._certificate_usable = certificate_usable

    async def authenticate(self, authorization: str | None,
                           client_certificate: bytes | None) -> Principal:
        if authorization is not None:
            return await self._bearer(bearer_token([authorization], where="Authorization"))
        if client_certificate is not None:
            return await asyncio.to_thread(self._certificate, client_certificate)
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

    def _certificate(self, der: bytes) -> Principal:
        cert = x509.load_der_x509_certificate(der)
        found = spiffe_id_of(cert)
        if found is None:
            raise AuthenticationError("client certificate carries no single SPIFFE ID")
        spiffe_id = str(found)
        role = self._spiffe_ids.get(spiffe_id)
        if role is None:
            raise PermissionDenied(f"{spiffe_id} has no admin role")
        if not self._certificate_usable(format_serial(cert.serial_number)):
            raise AuthenticationError("client certificate is revoked or not on record")
        return Principal(spiffe_id, role)
