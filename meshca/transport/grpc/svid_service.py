"""`meshca.v1.SvidService` (api/meshca/v1/svid.proto) over grpc.aio: JWT-SVIDs and bundles,
on the same server and with the same authentication as CreateCertificate."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc

from meshca.errors import AuthenticationError, RateLimited
from meshca.gen.meshca.v1 import svid_pb2, svid_pb2_grpc
from meshca.service.jwt_minting import JwtRequest, SvidCall, SvidService
from meshca.transport.grpc.status import public_message, status_for, trailers_for
from meshca.transport.metrics import CaMetrics
from meshca.transport.tls_front import PeerCertificates

log = logging.getLogger(__name__)
T = TypeVar("T")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class SvidServicer(svid_pb2_grpc.SvidServiceServicer):
    def __init__(self, service: SvidService, metrics: CaMetrics, peers: PeerCertificates) -> None:
        self._service = service
        self._metrics = metrics
        self._peers = peers

    async def MintJWTSVID(  # noqa: N802 - the RPC's name on the wire
        self, request: svid_pb2.MintJWTSVIDRequest, context: Context,
    ) -> svid_pb2.MintJWTSVIDResponse:
        minted = await self._answer("MintJWTSVID", context, lambda call: self._service.mint(
            call, JwtRequest(list(request.audience), request.ttl_seconds, request.spiffe_id)))
        self._metrics.jwt_minted()
        return svid_pb2.MintJWTSVIDResponse(token=minted.token, spiffe_id=minted.spiffe_id,
                                            expires_at=minted.expires_at_unix)

    async def GetBundles(  # noqa: N802 - the RPC's name on the wire
        self, request: svid_pb2.GetBundlesRequest, context: Context,
    ) -> svid_pb2.GetBundlesResponse:
        bundles = await self._answer("GetBundles", context, self._service.bundles)
        return svid_pb2.GetBundlesResponse(bundle=bundles.own,
                                           federated_bundles=dict(bundles.federated))

    async def _answer(self, rpc: str, context: Context,
                      run: Callable[[SvidCall], Awaitable[T]]) -> T:
        invocation = context.invocation_metadata() or ()
        cluster = [str(v) for k, v in invocation if k == "clusterid"]
        call = SvidCall(authorization=[str(v) for k, v in invocation if k == "authorization"],
                        cluster_id=cluster[0] if cluster else None,
                        peer=self._peers.client_address(context.peer()))
        try:
            return await run(call)
        except Exception as exc:  # every failure is mapped through one table
            code = status_for(exc)
            if isinstance(exc, AuthenticationError):
                self._metrics.authentication_failed(exc.reason)
            if rpc == "MintJWTSVID":
                self._metrics.jwt_refused(code)
            if isinstance(exc, RateLimited):
                self._metrics.rate_limited(exc.limit)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed inside meshca", rpc)
            elif isinstance(exc, RateLimited):
                log.debug("%s refused: %s: %s", rpc, code.name, exc)
            else:
                log.info("%s refused: %s: %s", rpc, code.name, exc)
            await context.abort(code, public_message(exc), trailing_metadata=trailers_for(exc))
            raise  # unreachable: abort raises
