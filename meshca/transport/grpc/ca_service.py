"""`istio.v1.auth.IstioCertificateService/CreateCertificate` over grpc.aio."""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from meshca.errors import AuthenticationError, RateLimited
from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from meshca.service.issuance import CertificateRequest, IssuanceService
from meshca.transport.grpc.issuance_log import IssuanceLog
from meshca.transport.grpc.status import public_message, status_for, trailers_for
from meshca.transport.metrics import CaMetrics
from meshca.transport.tls_front import PeerCertificates

log = logging.getLogger(__name__)


class IstioCertificateServicer(ca_pb2_grpc.IstioCertificateServiceServicer):
    def __init__(
        self, issuance: IssuanceService, metrics: CaMetrics, peers: PeerCertificates,
        issued_log: IssuanceLog | None = None,
    ) -> None:
        self._issuance = issuance
        self._metrics = metrics
        self._peers = peers
        self._issued_log = issued_log  # None: --log-issuances off, nothing to do per issuance

    async def CreateCertificate(  # noqa: N802 - the RPC's name on the wire
        self, request: ca_pb2.IstioCertificateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ca_pb2.IstioCertificateResponse:
        started = time.perf_counter()
        self._metrics.csr_received()
        invocation = context.invocation_metadata() or ()
        authorization = [str(v) for k, v in invocation if k == "authorization"]
        cluster = [str(v) for k, v in invocation if k == "clusterid"]
        metadata = MessageToDict(request.metadata) if request.HasField("metadata") else {}
        try:
            issued = await self._issuance.create_certificate(
                CertificateRequest(
                    csr_pem=request.csr,
                    validity_seconds=request.validity_duration,
                    metadata=metadata,
                    authorization=authorization,
                    cluster_id=cluster[0] if cluster else None,
                    peer_certificate=self._peers.lookup(context.peer()),
                    peer=self._peers.client_address(context.peer()),
                )
            )
        except Exception as exc:  # every failure is mapped through one table
            code = status_for(exc)
            if isinstance(exc, AuthenticationError):
                self._metrics.authentication_failed(exc.reason)
            else:
                self._metrics.sign_error(code)
            if isinstance(exc, RateLimited):
                self._metrics.rate_limited(exc.limit)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("CreateCertificate failed inside meshca")
            elif isinstance(exc, RateLimited):  # a flood must not become a flood of log lines
                log.debug("CreateCertificate refused: %s: %s", code.name, exc)
            else:
                log.info("CreateCertificate refused: %s: %s", code.name, exc)
            await context.abort(code, public_message(exc), trailing_metadata=trailers_for(exc))
            raise  # unreachable: abort raises
        elapsed = time.perf_counter() - started
        self._metrics.issued(elapsed)
        if self._issued_log is not None:
            self._issued_log(issued, elapsed)
        return ca_pb2.IstioCertificateResponse(cert_chain=list(issued.cert_chain))
