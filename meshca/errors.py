"""The exceptions meshca raises, in one tree.

MeshcaError
├── AuthenticationError   the caller could not be authenticated (gRPC UNAUTHENTICATED)
├── PermissionDenied      authenticated, but not allowed (PERMISSION_DENIED)
├── InvalidRequest        the request itself is wrong: bad CSR, lifetime, metadata (INVALID_ARGUMENT)
├── RateLimited           too many requests from one source or for one identity (RESOURCE_EXHAUSTED)
└── CaUnavailable         the CA cannot sign right now (UNAVAILABLE)

Transports map these to status codes in one table each; anything else escaping a handler
is a bug in meshca, not in the caller. Messages never carry secrets or token material.
"""


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


class CaUnavailable(MeshcaError):
    """The CA cannot sign or record right now; the caller may retry."""


class RateLimited(MeshcaError):
    """Over an issuance rate limit; the caller may retry after `retry_after` seconds.

    `limit` names the limit for metrics: "source" or "identity".
    """

    def __init__(self, message: str, *, retry_after: float, limit: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit
