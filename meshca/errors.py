"""The exceptions meshca raises, in one tree.

MeshcaError
├── AuthenticationError   the caller could not be authenticated      UNAUTHENTICATED  401
├── PermissionDenied      authenticated, but not allowed             PERMISSION_DENIED 403
├── InvalidRequest        the request itself is wrong                INVALID_ARGUMENT 422
├── NotFound              no such resource                           NOT_FOUND        404
├── Conflict              the resource's state does not allow this   FAILED_PRECONDITION 409
│   └── LostLease         another replica holds the lease now
├── RateLimited           over a rate limit; retry after a while     RESOURCE_EXHAUSTED 429
├── Unavailable           a dependency or the CA cannot answer now   UNAVAILABLE      503
│   ├── CaUnavailable     no signer, or the record cannot be written
│   ├── StoreUnavailable  the database cannot be reached
│   └── DependencyError   Vault or a Kubernetes API server failed (infra subclasses it)
├── ConfigurationError    a setting or file meshca starts from is unusable (start-up: one
│                         line and exit 2; at run time UNAVAILABLE/503)
└── InternalError         meshca broke its own invariant             INTERNAL         500

Each transport maps these in ONE table (transport/grpc/status.py, transport/rest/problems.py,
transport/ext_authz/responses.py) by the nearest class in the error's MRO; an error no table
names is INTERNAL/500 (DENY for ext_authz) and is logged once with its traceback. Third-party
errors (SQLAlchemy, hvac, kubernetes, OSError) are translated where they happen, in infra, with
`raise MeshcaSubclass(...) from exc`. Messages never carry secrets or token material.
"""

from __future__ import annotations


class MeshcaError(Exception):
    """Base of every error meshca raises on purpose."""


class AuthenticationError(MeshcaError):
    """The caller's credentials are missing, malformed or not acceptable.

    `reason` is a short fixed code for metrics (e.g. "expired", "audience"); `cacheable` is
    False when the refusal says nothing about the token itself (an API server was down), so
    caches must not remember it.
    """

    def __init__(self, message: str, *, reason: str = "invalid", cacheable: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.cacheable = cacheable


class PermissionDenied(MeshcaError):
    """The caller is known but may not do this."""


class InvalidRequest(MeshcaError):
    """The request is malformed or asks for something meshca will not grant."""


class NotFound(MeshcaError):
    """No such resource; the message names what was looked for."""


class Conflict(MeshcaError):
    """The resource exists but its state does not allow this; the message says what to do."""


class LostLease(Conflict):
    """The lease this process held was taken over: it must stop writing."""


class RateLimited(MeshcaError):
    """Over a rate limit; the caller may retry after `retry_after` seconds.

    `limit` names the limit for metrics: "source" or "identity".
    """

    def __init__(self, message: str, *, retry_after: float, limit: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit


class Unavailable(MeshcaError):
    """Something meshca needs cannot answer right now; the caller may retry."""


class CaUnavailable(Unavailable):
    """The CA cannot sign or record right now; the caller may retry."""


class StoreUnavailable(Unavailable):
    """The database cannot be reached or refused the statement."""


class DependencyError(Unavailable):
    """An outside service (Vault, a Kubernetes API server) failed or refused."""


class ConfigurationError(MeshcaError, ValueError):
    """A setting, or a file meshca starts from, cannot be used; the message names it and the
    fix. (A ValueError too, so that start-up's one-line refusal catches it.)"""


class InternalError(MeshcaError):
    """meshca broke one of its own invariants (e.g. a signature that does not verify)."""
