"""`WorkloadSigner` over the meshca server's Istio CA API (CreateCertificate), as a node agent.

The agent authenticates with its own projected service-account token (re-read from its file
on every call: the kubelet rotates it) and names the workload in the request's metadata
Struct under `ImpersonatedIdentity`, as Istio's node agent does; the server lets only its
`--trusted-node-account`s do that. The server's roots are re-read on every call too (the
ConfigMap they come from is rewritten on rotation); a channel is rebuilt when they change and
after the server could not be reached, so a restarted server is dialled again at the agent's
own back-off rather than at gRPC's reconnect timer.

Failures map onto the two errors the cache acts on: worth retrying (`Unavailable`) or a
refusal (`PermissionDenied`). Messages name the gRPC code and the server's detail, never the
token.
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
from meshca.agent.settings import AgentSettings
from meshca.core.spiffe import SpiffeId
from meshca.errors import PermissionDenied, Unavailable
from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc

log = logging.getLogger(__name__)

IMPERSONATED_IDENTITY = "ImpersonatedIdentity"
# The server refuses the agent or the workload: asking again soon changes nothing.
REFUSALS = frozenset({
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
})
# Any other code (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNKNOWN, INTERNAL,
# ABORTED, CANCELLED...) is worth retrying with back-off.
# Channel failures after which the next call dials afresh.
_REDIAL = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_MAX_MESSAGE = 4 * 1024 * 1024


class GrpcSigner:
    """Signs workload CSRs through `target` (HOST:PORT), whose certificate must verify under
    the PEM roots in `server_ca` for the DNS name `server_name`."""

    def __init__(self, target: str, *, server_ca: str | Path, server_name: str,
                 token_file: str | Path, cluster_id: str | None = None,
                 timeout: timedelta = timedelta(seconds=10),
                 metrics: AgentMetrics | None = None) -> None:
        if timeout <= timedelta(0):
            raise ValueError("the server timeout must be positive")
        self._target = target
        self._server_ca = Path(server_ca)
        self._server_name = server_name
        self._token_file = Path(token_file)
        self._cluster_id = cluster_id
        self._timeout = timeout.total_seconds()
        self._metrics = metrics
        self._channel: grpc.aio.Channel | None = None
        self._channel_roots: bytes | None = None
        self.calls = 0  # CreateCertificate calls made (tests, debugging)

    @classmethod
    def from_settings(cls, settings: AgentSettings,
                      metrics: AgentMetrics | None = None) -> GrpcSigner:
        return cls(settings.server, server_ca=settings.server_ca,
                   server_name=settings.verified_server_name, token_file=settings.token_file,
                   cluster_id=settings.cluster_id, timeout=settings.server_timeout,
                   metrics=metrics)

    async def sign(self, spiffe_id: SpiffeId, csr_pem: str,
                   ttl: timedelta | None = None) -> tuple[x509.Certificate, ...]:
        token = self._read("token", self._token_file, "the agent's token file").decode().strip()
        if not token:
            self._fail("token")
            raise Unavailable(f"the agent's token file {self._token_file} is empty")
        channel = await self._channel_for(self._read("server_ca", self._server_ca,
                                                     "the server's CA file (--server-ca)"))
        metadata = struct_pb2.Struct()
        metadata.update({IMPERSONATED_IDENTITY: spiffe_id.uri})
        request = ca_pb2.IstioCertificateRequest(
            csr=csr_pem, metadata=metadata,
            validity_duration=int(ttl.total_seconds()) if ttl is not None else 0)
        call_metadata = [("authorization", f"Bearer {token}")]
        if self._cluster_id:
            call_metadata.append(("clusterid", self._cluster_id))
        self.calls += 1
        try:
            response = await ca_pb2_grpc.IstioCertificateServiceStub(channel).CreateCertificate(
                request, metadata=call_metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._rpc_error(spiffe_id, exc.code(), exc.details() or "") from None
        except OSError as exc:
            await self._drop_channel()
            self._fail("connection")
            raise Unavailable(f"meshca server at {self._target} cannot be reached: "
                              f"{type(exc).__name__}: {exc}") from None
        try:
            chain = parse_cert_chain(list(response.cert_chain))
            csr = x509.load_pem_x509_csr(csr_pem.encode())
            check_leaf(chain, spiffe_id, csr.public_key())
        except PermissionDenied:
            self._fail("bad_chain")
            raise
        return chain

    async def close(self) -> None:
        await self._drop_channel()

    def _read(self, what: str, path: Path, description: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            self._fail(what)
            raise Unavailable(f"cannot read {description} {path}: {exc.strerror}") from None

    async def _channel_for(self, roots: bytes) -> grpc.aio.Channel:
        if self._channel is not None and roots == self._channel_roots:
            return self._channel
        await self._drop_channel()
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        self._channel = grpc.aio.secure_channel(self._target, credentials, options=[
            ("grpc.ssl_target_name_override", self._server_name),
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
        ])
        self._channel_roots = roots
        return self._channel

    async def _drop_channel(self) -> None:
        channel, self._channel, self._channel_roots = self._channel, None, None
        if channel is not None:
            await channel.close()

    def _rpc_error(self, spiffe_id: SpiffeId, code: grpc.StatusCode,
                   details: str) -> Exception:
        self._fail(code.name.lower())
        if code in REFUSALS:
            return PermissionDenied(f"meshca server refused to sign for {spiffe_id}: "
                                    f"{code.name}: {details}")
        if code in _REDIAL:
            # The next call dials afresh (close() is awaited there, not here).
            self._channel_roots = None
        return Unavailable(f"meshca server at {self._target} cannot sign now: "
                           f"{code.name}: {details}")

    def _fail(self, code: str) -> None:
        if self._metrics is not None:
            self._metrics.server_errors.labels("sign", code).inc()


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
