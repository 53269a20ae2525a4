"""What can go wrong talking to Vault, translated once from hvac and requests.

    VaultError
    ├── VaultUnavailable   retry later: unreachable, TLS failure, sealed/standby (503), 429, 5xx
    ├── VaultDenied        403/401: the token lacks a policy, or was revoked or expired
    ├── VaultNotFound      404: no such mount, key or secret
    ├── VaultRejected      400: Vault refused the request as malformed or invalid
    │   └── VaultConflict  400 on a stale check-and-set: another writer got there first
    └── VaultBadResponse   Vault answered 2xx with something meshca cannot use

Messages name the operation, the HTTP status and Vault's own error text, with anything
token-shaped removed; they never carry request bodies (key material, tokens, JWTs).
"""

from __future__ import annotations

import re

import hvac.exceptions

from meshca.core.remote_signing import SignerUnavailable
from meshca.errors import DependencyError

_TOKENISH = re.compile(r"\b(?:hv[sbr]\.[A-Za-z0-9_.-]+|s\.[A-Za-z0-9]{20,}|eyJ[A-Za-z0-9_.-]+)")
_MAX_DETAIL = 300


class VaultError(DependencyError):
    """Base of every Vault failure; `status` is the HTTP status when Vault answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class VaultUnavailable(VaultError, SignerUnavailable):
    """Transient: retry with backoff. Also a core `SignerUnavailable`, for the service layer."""


class VaultDenied(VaultError):
    pass


class VaultNotFound(VaultError):
    pass


class VaultRejected(VaultError):
    pass


class VaultConflict(VaultRejected):
    pass


class VaultBadResponse(VaultError):
    pass


def scrub(text: str) -> str:
    """Vault's error text, shortened, with anything shaped like a token or JWT removed."""
    cleaned = _TOKENISH.sub("[redacted]", " ".join(text.split()))
    return cleaned[:_MAX_DETAIL]


def translate(exc: BaseException, operation: str) -> VaultError:
    """One meshca error for an hvac or transport exception raised during `operation`."""
    if isinstance(exc, VaultError):
        return exc
    if isinstance(exc, hvac.exceptions.VaultError):
        return _from_status(exc, operation)
    if isinstance(exc, OSError):  # requests' ConnectionError, Timeout, SSLError are OSErrors
        kind = "TLS handshake with Vault failed (check --vault-ca-cert)" if "SSL" in type(exc).__name__ \
            else "cannot reach Vault"
        return VaultUnavailable(f"{operation}: {kind} ({type(exc).__name__})")
    return VaultBadResponse(f"{operation}: unexpected {type(exc).__name__} from the Vault client")


def _from_status(exc: hvac.exceptions.VaultError, operation: str) -> VaultError:
    errors = exc.errors if isinstance(exc.errors, list) else []
    detail = scrub("; ".join(str(e) for e in errors)) or "no detail"
    status = _STATUS.get(type(exc).__name__)
    message = f"{operation}: Vault answered HTTP {status if status else '?'}: {detail}"
    match type(exc).__name__:
        case "InvalidRequest":
            if "check-and-set" in detail:
                return VaultConflict(message, 400)
            return VaultRejected(message, 400)
        case "Unauthorized" | "Forbidden":
            return VaultDenied(message + " (does the token's policy grant this path?)", status)
        case "InvalidPath":
            return VaultNotFound(message, 404)
        case "RateLimitExceeded" | "VaultDown" | "InternalServerError" | "BadGateway":
            return VaultUnavailable(message, status)
        case "VaultNotInitialized":
            return VaultUnavailable(message + " (Vault is not initialized)", 501)
        case _:
            return VaultUnavailable(message, status)


_STATUS = {"InvalidRequest": 400, "Unauthorized": 401, "Forbidden": 403, "InvalidPath": 404,
           "RateLimitExceeded": 429, "InternalServerError": 500, "VaultNotInitialized": 501,
           "BadGateway": 502, "VaultDown": 503}
