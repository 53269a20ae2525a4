"""The one table from meshca's errors to gRPC status codes (contracts.md §1)."""

from __future__ import annotations

import grpc

from meshca.core.authority import SigningFailed
from meshca.errors import (
    AuthenticationError,
    CaUnavailable,
    InvalidRequest,
    MeshcaError,
    PermissionDenied,
)

STATUS_FOR: dict[type[Exception], grpc.StatusCode] = {
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    CaUnavailable: grpc.StatusCode.UNAVAILABLE,
    SigningFailed: grpc.StatusCode.INTERNAL,
}


def status_for(exc: Exception) -> grpc.StatusCode:
    for kind in type(exc).__mro__:
        if kind in STATUS_FOR:
            return STATUS_FOR[kind]
    return grpc.StatusCode.INTERNAL


def public_message(exc: Exception) -> str:
    """Our own errors carry caller-safe messages; anything else is hidden."""
    if isinstance(exc, MeshcaError | SigningFailed):
        return str(exc)
    return "internal error; see the meshca log"
