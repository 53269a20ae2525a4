"""`WorkloadSigner` over the meshca server's Istio CA API (CreateCertificate), as a node agent.

The agent authenticates with its own projected service-account token and names the workload
in the request's metadata Struct under `ImpersonatedIdentity`, as Istio's node agent does; the
server lets only its `--trusted-node-account`s do that. The channel, the token and the error
mapping are the `ServerChannel`'s (meshca/agent/server_channel.py), shared with the agent's
other calls to the server.
"""

from __future__ import annotations

import itertools
import logging
from datetime import timedelta
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from google.protobuf import struct_pb2

from meshca.agent.keys import check_leaf, is_self_signed
from meshca.agent.metrics import AgentMetrics
from meshca.agent.server_channel import REFUSALS, ServerChannel
from meshca.agent.settings import AgentSettings
from meshca.core.spiffe import SpiffeId
from meshca.errors import PermissionDenied
from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc

log = logging.getLogger(__name__)

IMPERSONATED_IDENTITY = "ImpersonatedIdentity"
__all__ = ["IMPERSONATED_IDENTITY", "REFUSALS", "GrpcSigner", "parse_cert_chain"]


class GrpcSigner:
    """Signs workload CSRs through `target` (HOST:PORT), whose certificate must verify under
    the PEM roots in `server_ca` for the DNS name `server_name`. `from_channel` signs over a
    `ServerChannel` shared with the agent's other server clients."""

    def __init__(self, target: str, *, server_ca: str | Path, server_name: str,
                 token_file: str | Path, cluster_id: str | None = None,
                 timeout: timedelta = timedelta(seconds=10),
                 metrics: AgentMetrics | None = None) -> None:
        self._server = ServerChannel(target, server_ca=server_ca, server_name=server_name,
                                     token_file=token_file, cluster_id=cluster_id,
                                     timeout=timeout, metrics=metrics)
        self.calls = 0  # CreateCertificate calls made (tests, debugging)

    @classmethod
    def from_channel(cls, server: ServerChannel) -> GrpcSigner:
        signer = cls.__new__(cls)
        signer._server = server
        signer.calls = 0
        return signer

    @classmethod
    def from_settings(cls, settings: AgentSettings,
                      metrics: AgentMetrics | None = None) -> GrpcSigner:
        return cls.from_channel(ServerChannel.from_settings(settings, metrics))

    async def sign(self, spiffe_id: SpiffeId, csr_pem: str,
                   ttl: timedelta | None = None) -> tuple[x509.Certificate, ...]:
        channel, call_metadata = await self._server.open("sign")
        metadata = struct_pb2.Struct()
        metadata.update({IMPERSONATED_IDENTITY: spiffe_id.uri})
        request = ca_pb2.IstioCertificateRequest(
            csr=csr_pem, metadata=metadata,
            validity_duration=int(ttl.total_seconds()) if ttl is not None else 0)
        self.calls += 1
        try:
            response = await ca_pb2_grpc.IstioCertificateServiceStub(channel).CreateCertificate(
                request, metadata=call_metadata, timeout=self._server.timeout)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            raise self._server.rpc_error(
                "sign", code,
                refused=f"meshca server refused to sign for {spiffe_id}: {code.name}: {details}",
                unavailable=f"meshca server at {self._server.target} cannot sign now: "
                            f"{code.name}: {details}") from None
        except OSError as exc:
            raise await self._server.unreachable("sign", exc) from None
        try:
            chain = parse_cert_chain(list(response.cert_chain))
            csr = x509.load_pem_x509_csr(csr_pem.encode())
            check_leaf(chain, spiffe_id, csr.public_key())
        except PermissionDenied:
            self._server.count("sign", "bad_chain")
            raise
        return chain

    async def close(self) -> None:
        await self._server.close()


def parse_cert_chain(elements: list[str]) -> tuple[x509.Certificate, ...]:
    """The leaf, its intermediates and the root that issued them, from Istio's `cert_chain`
    layout: one PEM per element, the last element all the roots concatenated. Every link is
    checked; a chain that does not parse or link up is refused (PermissionDenied: the agent
    serves nothing it cannot vouch for)."""
    if len(elements) < 2:
        raise PermissionDenied(f"server answered with {len(elements)} cert_chain elements; "
                               "at least the leaf and the roots are expected")
    try:
        issued = [x509.load_pem_x509_certificate(e.encode()) for e in elements[:-1]]
        roots = x509.load_pem_x509_certificates(elements[-1].encode())
    except ValueError:
        raise PermissionDenied("server answered with a cert_chain that does not parse") from None
    for cert, issuer in itertools.pairwise(issued):
        _check_link(cert, issuer)
    last = issued[-1]
    for root in roots:
        if root.subject == last.issuer and is_self_signed(root):
            try:
                last.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue  # another root of the same name, e.g. before and after a rotation
            return (*issued, root)
    raise PermissionDenied("server answered with a chain that leads to none of the roots it sent")


def _check_link(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise PermissionDenied("server answered with a cert_chain whose links do not "
                               "verify") from None
