"""Who is calling one of the agent's gRPC fronts: the caller's connection credentials (recorded
by the Unix front) turned into an identity, or the call refused with the status both fronts
use (PERMISSION_DENIED for no identity, UNAVAILABLE when attestation cannot answer now)."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from meshca.agent.ports import Identity, WorkloadIdentities
from meshca.agent.unix_front import PeerRegistry
from meshca.errors import PermissionDenied, Unavailable

log = logging.getLogger(__name__)


async def refuse(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("context.abort returned")


async def attest_caller(peers: PeerRegistry, identities: WorkloadIdentities,
                        context: grpc.aio.ServicerContext) -> Identity:
    """The identity of the process behind this call's connection; aborts the call otherwise."""
    peer = peers.get(context.peer())
    if peer is None:  # not a connection the agent accepted: fail closed
        await refuse(context, grpc.StatusCode.PERMISSION_DENIED, "caller not attested")
    try:
        identity = await identities.attest(peer)
    except PermissionDenied as exc:
        log.info("attestation of pid %d refused: %s", peer.pid, exc)
        identity = None
    except Unavailable as exc:
        await refuse(context, grpc.StatusCode.UNAVAILABLE, f"cannot attest now: {exc}")
    if identity is None:
        await refuse(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
    return identity
