"""The SPIFFE Workload API (`SpiffeWorkloadAPI`, api/spiffe/workload/workload.proto) over the
agent's ports, and the server that serves it on a Unix socket.

The spec's rules, in the order they are checked: a call without the metadata
`workload.spiffe.io: true` is INVALID_ARGUMENT; a caller that cannot be attested, or has no
identity (or no SVID), is PERMISSION_DENIED. The X.509 streams send the current state at once
and again on every change, on the same stream. The JWT profile is not served yet.

Never import this module in a process that also imports the PyPI `spiffe` package: both
register the same unpackaged message names (the spec's proto has no package) in protobuf's
default descriptor pool, and the second import fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.agent.ports import Identity, WorkloadIdentities, X509State, X509Svid, X509Svids
from meshca.agent.unix_front import PeerRegistry, UnixRelay, bind_public_socket
from meshca.core.connection_limits import ConnectionLimits
from meshca.errors import PermissionDenied, Unavailable
from meshca.gen.spiffe.workload import workload_pb2 as pb
from meshca.gen.spiffe.workload import workload_pb2_grpc as pb_grpc
from meshca.transport.tls_front import PrivateSocketDir
from meshca.transport.tls_listener import TlsListener

log = logging.getLogger(__name__)

SECURITY_HEADER = "workload.spiffe.io"
# Workload API streams are idle between renewals; the listener must not close them for that.
DEFAULT_LIMITS = ConnectionLimits(idle_timeout=24 * 3600.0, max_connections=4096,
                                  max_connections_per_source=4096)


async def _refuse(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("context.abort returned")


def _der(certificates: tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(c.public_bytes(Encoding.DER) for c in certificates)


def _bundle_key(trust_domain: str) -> str:
    return f"spiffe://{trust_domain}"


def _svid_message(svid: X509Svid, bundles: Mapping[str, tuple[x509.Certificate, ...]]) -> Any:
    return pb.X509SVID(
        spiffe_id=svid.spiffe_id.uri, x509_svid=_der(svid.chain), x509_svid_key=svid.private_key,
        bundle=_der(bundles.get(svid.spiffe_id.trust_domain, ())), hint=svid.hint)


def x509_svid_response(state: X509State) -> Any:
    own = {svid.spiffe_id.trust_domain for svid in state.svids}
    return pb.X509SVIDResponse(
        svids=[_svid_message(svid, state.bundles) for svid in state.svids],
        crl=list(state.crls),
        federated_bundles={_bundle_key(td): _der(roots) for td, roots in state.bundles.items()
                           if td not in own})


def x509_bundles_response(state: X509State) -> Any:
    return pb.X509BundlesResponse(
        crl=list(state.crls),
        bundles={_bundle_key(td): _der(roots) for td, roots in state.bundles.items()})


class WorkloadApi(pb_grpc.SpiffeWorkloadAPIServicer):
    def __init__(self, peers: PeerRegistry, identities: WorkloadIdentities,
                 svids: X509Svids) -> None:
        self._peers = peers
        self._identities = identities
        self._svids = svids

    async def _caller(self, context: grpc.aio.ServicerContext) -> Identity:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get(SECURITY_HEADER) != "true":
            await _refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                          f"security header missing: send metadata '{SECURITY_HEADER}: true'")
        peer = self._peers.get(context.peer())
        if peer is None:  # not a connection the agent accepted: fail closed
            await _refuse(context, grpc.StatusCode.PERMISSION_DENIED, "caller not attested")
        try:
            identity = await self._identities.attest(peer)
        except PermissionDenied as exc:
            log.info("attestation of pid %d refused: %s", peer.pid, exc)
            identity = None
        except Unavailable as exc:
            await _refuse(context, grpc.StatusCode.UNAVAILABLE, f"cannot attest now: {exc}")
        if identity is None:
            await _refuse(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        return identity

    async def _states(self, identity: Identity,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[X509State]:
        try:
            async for state in self._svids.watch(identity):
                if not state.svids:
                    await _refuse(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
                yield state
        except Unavailable as exc:
            await _refuse(context, grpc.StatusCode.UNAVAILABLE, f"no SVID to serve: {exc}")

    async def FetchX509SVID(self, request: Any, context: grpc.aio.ServicerContext,  # noqa: N802
                            ) -> AsyncIterator[Any]:
        identity = await self._caller(context)
        async for state in self._states(identity, context):
            yield x509_svid_response(state)

    async def FetchX509Bundles(self, request: Any, context: grpc.aio.ServicerContext,  # noqa: N802
                               ) -> AsyncIterator[Any]:
        identity = await self._caller(context)
        async for state in self._states(identity, context):
            yield x509_bundles_response(state)

    async def FetchJWTSVID(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await self._caller(context)
        await _refuse(context, grpc.StatusCode.UNIMPLEMENTED, "JWT-SVIDs are not served yet")

    async def FetchJWTBundles(self, request: Any, context: grpc.aio.ServicerContext,  # noqa: N802
                              ) -> AsyncIterator[Any]:
        await self._caller(context)
        await _refuse(context, grpc.StatusCode.UNIMPLEMENTED, "JWT bundles are not served yet")
        yield  # pragma: no cover - makes this a (server-streaming) generator

    async def ValidateJWTSVID(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await self._caller(context)
        await _refuse(context, grpc.StatusCode.UNIMPLEMENTED, "JWT-SVIDs are not validated yet")


class WorkloadApiServer:
    """The Workload API on the public Unix socket `socket_path`, relayed to a gRPC server on a
    private one."""

    def __init__(self, socket_path: str, identities: WorkloadIdentities, svids: X509Svids,
                 limits: ConnectionLimits = DEFAULT_LIMITS) -> None:
        self.socket_path = socket_path
        self.peers = PeerRegistry()
        self._identities = identities
        self._svids = svids
        self._limits = limits
        self._sockets: PrivateSocketDir | None = None
        self._grpc: grpc.aio.Server | None = None
        self._listener: TlsListener | None = None
        self.relay: UnixRelay | None = None

    async def start(self) -> None:
        self._sockets = PrivateSocketDir()
        self._grpc = grpc.aio.server()
        pb_grpc.add_SpiffeWorkloadAPIServicer_to_server(
            WorkloadApi(self.peers, self._identities, self._svids), self._grpc)
        if self._grpc.add_insecure_port(f"unix:{self._sockets.upstream}") == 0:
            raise OSError(f"cannot listen on {self._sockets.upstream}")
        await self._grpc.start()
        self.relay = UnixRelay(self._sockets, self.peers)
        self._listener = TlsListener("workload-api", None, self.relay, self._limits)
        await self._listener.start(bind_public_socket(self.socket_path))

    async def stop(self, grace: float = 1.0) -> None:
        if self._listener is not None:
            await self._listener.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self._sockets is not None:
            self._sockets.remove()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
