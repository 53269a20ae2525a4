"""The one table from meshca's errors to gRPC status codes (contracts.md §1), and the trailing
metadata some of them carry."""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from meshca.core.authority import SigningFailed
from meshca.errors import (
    AuthenticationError,
    CaUnavailable,
    InvalidRequest,
    MeshcaError,
    PermissionDenied,
    RateLimited,
)

STATUS_FOR: dict[type[Exception], grpc.StatusCode] = {
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    CaUnavailable: grpc.StatusCode.UNAVAILABLE,
    SigningFailed: grpc.StatusCode.INTERNAL,
}
# Where gRPC's richer error model travels: a serialized google.rpc.Status.
STATUS_DETAILS_KEY = "grpc-status-details-bin"


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
