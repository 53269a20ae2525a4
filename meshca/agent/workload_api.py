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

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.agent.callers import attest_caller, refuse
from meshca.agent.metrics import AgentMetrics
from meshca.agent.ports import Identity, WorkloadIdentities, X509State, X509Svid, X509Svids
from meshca.agent.unix_front import DEFAULT_LIMITS, PeerRegistry, UnixGrpcServer
from meshca.core.connection_limits import ConnectionLimits
from meshca.errors import PermissionDenied, Unavailable
from meshca.gen.spiffe.workload import workload_pb2 as pb
from meshca.gen.spiffe.workload import workload_pb2_grpc as pb_grpc

SECURITY_HEADER = "workload.spiffe.io"
__all__ = ["DEFAULT_LIMITS", "WorkloadApi", "WorkloadApiServer", "x509_bundles_response",
           "x509_svid_response"]


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
                 svids: X509Svids, *, metrics: AgentMetrics | None = None) -> None:
        self._peers = peers
        self._identities = identities
        self._svids = svids
        self._metrics = metrics

    async def _caller(self, context: grpc.aio.ServicerContext) -> Identity:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get(SECURITY_HEADER) != "true":
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"security header missing: send metadata '{SECURITY_HEADER}: true'")
        return await attest_caller(self._peers, self._identities, context)

    async def _states(self, identity: Identity,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[X509State]:
        try:
            async for state in self._svids.watch(identity):
                if not state.svids:
                    await refuse(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
                yield state
        except Unavailable as exc:
            await refuse(context, grpc.StatusCode.UNAVAILABLE, f"no SVID to serve: {exc}")
        except PermissionDenied as exc:  # the server refused to sign for this identity
            await refuse(context, grpc.StatusCode.PERMISSION_DENIED, f"no SVID issued: {exc}")

    @contextmanager
    def _stream(self, api: str) -> Iterator[None]:
        if self._metrics is not None:
            self._metrics.streams.labels(api).inc()
        try:
            yield
        finally:
            if self._metrics is not None:
                self._metrics.streams.labels(api).dec()

    def _served(self, api: str) -> None:
        if self._metrics is not None:
            self._metrics.svids_served.labels(api).inc()

    async def FetchX509SVID(self, request: Any, context: grpc.aio.ServicerContext,  # noqa: N802
                            ) -> AsyncIterator[Any]:
        identity = await self._caller(context)
        with self._stream("workload_x509_svid"):
            async for state in self._states(identity, context):
                yield x509_svid_response(state)
                self._served("workload_x509_svid")

    async def FetchX509Bundles(self, request: Any, context: grpc.aio.ServicerContext,  # noqa: N802
                               ) -> AsyncIterator[Any]:
        identity = await self._caller(context)
        with self._stream("workload_x509_bundles"):
            async for state in self._states(identity, context):
                yield x509_bundles_response(state)
                self._served("workload_x509_bundles")

    async def FetchJWTSVID(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await self._caller(context)
        await refuse(context, grpc.StatusCode.UNIMPLEMENTED, "JWT-SVIDs are not served yet")

    async def FetchJWTBundles(self, request: Any, context: grpc.aio.ServicerContext,  # noqa: N802
                              ) -> AsyncIterator[Any]:
        await self._caller(context)
        await refuse(context, grpc.StatusCode.UNIMPLEMENTED, "JWT bundles are not served yet")
        yield  # pragma: no cover - makes this a (server-streaming) generator

    async def ValidateJWTSVID(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await self._caller(context)
        await refuse(context, grpc.StatusCode.UNIMPLEMENTED, "JWT-SVIDs are not validated yet")


class WorkloadApiServer(UnixGrpcServer):
    """The Workload API on the public Unix socket `socket_path`, relayed to a gRPC server on a
    private one."""

    def __init__(self, socket_path: str, identities: WorkloadIdentities, svids: X509Svids,
                 limits: ConnectionLimits = DEFAULT_LIMITS, *,
                 metrics: AgentMetrics | None = None) -> None:
        def register(server: grpc.aio.Server, peers: PeerRegistry) -> None:
            pb_grpc.add_SpiffeWorkloadAPIServicer_to_server(
                WorkloadApi(peers, identities, svids, metrics=metrics), server)

        super().__init__("workload-api", socket_path, register, limits)
