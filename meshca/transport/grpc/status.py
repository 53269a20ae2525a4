"""The one table from meshca's errors to gRPC status codes (docs/contracts.md §1), and the trailing
metadata some of them carry."""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from meshca.errors import (
    AuthenticationError,
    ConfigurationError,
    Conflict,
    InternalError,
    InvalidRequest,
    MeshcaError,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)

# By the nearest class in the error's MRO; anything else is INTERNAL (status_for).
STATUS_FOR: dict[type[Exception], grpc.StatusCode] = {
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    ConfigurationError: grpc.StatusCode.UNAVAILABLE,  # a server-side setting: not the caller's fault
    InternalError: grpc.StatusCode.INTERNAL,
}
# Where gRPC's richer error model travels: a serialized google.rpc.Status.
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def status_for(exc: Exception) -> grpc.StatusCode:
    for kind in type(exc).__mro__:
        if kind in STATUS_FOR:
            return STATUS_FOR[kind]
    return grpc.StatusCode.INTERNAL


def public_message(exc: Exception) -> str:
    """The caller's own mistakes are explained; what went wrong inside meshca is hidden (the
    log has it)."""
    if isinstance(exc, MeshcaError) and status_for(exc) is not grpc.StatusCode.INTERNAL:
        return str(exc)
    if isinstance(exc, InternalError):
        return f"internal error ({type(exc).__name__}); see the meshca log"
    return "internal error; see the meshca log"


def trailers_for(exc: Exception) -> tuple[tuple[str, str | bytes], ...]:
    """A rate-limited caller learns when to come back twice over: `retry-after` (whole
    seconds, as in HTTP) for simple clients, and a google.rpc.RetryInfo in the status details
    for clients that read gRPC's richer error model."""
    if not isinstance(exc, RateLimited):
        return ()
    delay = max(0.0, exc.retry_after)
    seconds = math.floor(delay)
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
        seconds=seconds, nanos=int((delay - seconds) * 1e9)))
    detail = any_pb2.Any()
    detail.Pack(retry)
    status = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                               message=public_message(exc), details=[detail])
    return (("retry-after", str(max(1, math.ceil(delay)))),
            (STATUS_DETAILS_KEY, status.SerializeToString()))
