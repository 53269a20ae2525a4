"""The SPIFFE Workload API (`SpiffeWorkloadAPI`, api/spiffe/workload/workload.proto) over the
agent's ports, and the server that serves it on a Unix socket.

The spec's rules, in the order they are checked: a call without the metadata
`workload.spiffe.io: true` is INVALID_ARGUMENT; a caller that cannot be attested, or has no
identity (or no SVID), is PERMISSION_DENIED. The X.509 streams send the current state at once
and again on every change, on the same stream; `federated_bundles` and `bundles` carry the
federated trust domains' roots by their own names, never mixed into the own one's.

The JWT profile (`jwt_svids`; without it, UNIMPLEMENTED): FetchJWTSVID needs an audience
(INVALID_ARGUMENT) and, when it names a `spiffe_id`, one of the caller's identities
(PERMISSION_DENIED); FetchJWTBundles streams the JWK Sets of the own and federated trust
domains, again on every change; ValidateJWTSVID checks a token against the bundle of its
subject's trust domain (meshca/core/jwt_svid.py) and answers INVALID_ARGUMENT, with the reason,
for any token it does not accept. Map keys are trust domain SPIFFE IDs ("spiffe://td"), as the
spec says for every bundle map.

Never import this module in a process that also imports the PyPI `spiffe` package: both
register the same unpackaged message names (the spec's proto has no package) in protobuf's
default descriptor pool, and the second import fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf import struct_pb2

from meshca.agent.callers import attest_caller, refuse
from meshca.agent.jwt_svids import check_audience
from meshca.agent.metrics import AgentMetrics
from meshca.agent.ports import (
    Identity,
    JwtBundleSet,
    JwtSvids,
    WorkloadIdentities,
    X509State,
    X509Svid,
    X509Svids,
)
from meshca.agent.unix_front import DEFAULT_LIMITS, PeerRegistry, UnixGrpcServer
from meshca.core import jwt_svid
from meshca.core.connection_limits import ConnectionLimits
from meshca.core.spiffe import SpiffeId
from meshca.errors import PermissionDenied, Unavailable
from meshca.gen.spiffe.workload import workload_pb2 as pb
from meshca.gen.spiffe.workload import workload_pb2_grpc as pb_grpc

SECURITY_HEADER = "workload.spiffe.io"
__all__ = ["DEFAULT_LIMITS", "WorkloadApi", "WorkloadApiServer", "jwt_bundles_response",
           "x509_bundles_response", "x509_svid_response"]


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


def jwt_bundles_response(bundles: JwtBundleSet) -> Any:
    return pb.JWTBundlesResponse(bundles={
        _bundle_key(td): jwt_svid.jwks_document(keys) for td, keys in bundles.keys.items()})


class WorkloadApi(pb_grpc.SpiffeWorkloadAPIServicer):
    def __init__(self, peers: PeerRegistry, identities: WorkloadIdentities,
                 svids: X509Svids, *, jwt_svids: JwtSvids | None = None,
                 metrics: AgentMetrics | None = None) -> None:
        self._peers = peers
        self._identities = identities
        self._svids = svids
        self._jwt = jwt_svids
        self._metrics = metrics

    async def _caller(self, context: grpc.aio.ServicerContext) -> Identity:
        await self._caller_checked(context)
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

    async def _jwt_caller(self, context: grpc.aio.ServicerContext) -> tuple[Identity, JwtSvids]:
        identity = await self._caller(context)
        if self._jwt is None:
            await refuse(context, grpc.StatusCode.UNIMPLEMENTED, "JWT-SVIDs are not served")
        return identity, self._jwt

    async def FetchJWTSVID(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await self._caller_checked(context)
        try:
            audience = check_audience(tuple(request.audience))
            wanted = SpiffeId.parse(request.spiffe_id) if request.spiffe_id else None
        except ValueError as exc:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        identity, jwt = await self._jwt_caller(context)
        if wanted is not None and wanted != identity.spiffe_id:
            await refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"the caller is not entitled to {wanted}")
        try:
            svid = await jwt.fetch(identity, audience)
        except Unavailable as exc:
            await refuse(context, grpc.StatusCode.UNAVAILABLE, f"no JWT-SVID to serve: {exc}")
        except PermissionDenied as exc:
            await refuse(context, grpc.StatusCode.PERMISSION_DENIED, f"no JWT-SVID issued: {exc}")
        self._served("workload_jwt_svid")
        return pb.JWTSVIDResponse(svids=[pb.JWTSVID(
            spiffe_id=svid.spiffe_id.uri, svid=svid.token, hint=svid.hint)])

    async def FetchJWTBundles(self, request: Any, context: grpc.aio.ServicerContext,  # noqa: N802
                              ) -> AsyncIterator[Any]:
        _, jwt = await self._jwt_caller(context)
        with self._stream("workload_jwt_bundles"):
            try:
                async for bundles in jwt.watch_jwt_bundles():
                    yield jwt_bundles_response(bundles)
                    self._served("workload_jwt_bundles")
            except Unavailable as exc:
                await refuse(context, grpc.StatusCode.UNAVAILABLE, f"no JWT bundles: {exc}")

    async def ValidateJWTSVID(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await self._caller_checked(context)
        if not request.audience:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "audience is required")
        if not request.svid:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "svid is required")
        _, jwt = await self._jwt_caller(context)
        keys = jwt.jwt_bundles().keys
        try:
            valid = jwt_svid.validate(request.svid, request.audience, keys.get,
                                      now=datetime.now(UTC))
        except jwt_svid.InvalidJwtSvid as exc:
            self._validated(exc.reason)
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"JWT-SVID not valid: {exc}")
        claims = struct_pb2.Struct()
        try:
            claims.update(valid.claims)
        except (TypeError, ValueError):  # JSON always fits a Struct; be safe anyway
            self._validated("malformed")
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         "JWT-SVID not valid: claims do not fit a Struct")
        self._validated("ok")
        return pb.ValidateJWTSVIDResponse(spiffe_id=valid.spiffe_id.uri, claims=claims)

    async def _caller_checked(self, context: grpc.aio.ServicerContext) -> None:
        """The security header alone, before a request's arguments are looked at."""
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get(SECURITY_HEADER) != "true":
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"security header missing: send metadata '{SECURITY_HEADER}: true'")

    def _validated(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.jwt_validations.labels(outcome).inc()


class WorkloadApiServer(UnixGrpcServer):
    """The Workload API on the public Unix socket `socket_path`, relayed to a gRPC server on a
    private one."""

    def __init__(self, socket_path: str, identities: WorkloadIdentities, svids: X509Svids,
                 limits: ConnectionLimits = DEFAULT_LIMITS, *,
                 jwt_svids: JwtSvids | None = None,
                 metrics: AgentMetrics | None = None) -> None:
        def register(server: grpc.aio.Server, peers: PeerRegistry) -> None:
            pb_grpc.add_SpiffeWorkloadAPIServicer_to_server(
                WorkloadApi(peers, identities, svids, jwt_svids=jwt_svids, metrics=metrics),
                server)

        super().__init__("workload-api", socket_path, register, limits)
