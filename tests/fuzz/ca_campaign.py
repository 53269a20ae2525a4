"""CreateCertificate over real gRPC+TLS against a real server, judged one input at a time.

The oracle: a refusal is one of the codes docs/contracts.md §1 documents, never INTERNAL or
UNKNOWN; a success names exactly the identity the token's claims name (one URI SAN, no DNS, IP or
e-mail name), binds the CSR's own key, is a leaf, and chains to the server's bundle."""

from __future__ import annotations

from collections import deque
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf import struct_pb2

from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from tests.fuzz.ca_inputs import CaInput, TokenSigner, ca_inputs, identity_inputs
from tests.fuzz.campaign import Tally, run_strategy
from tests.support import MeshcaProcess

# docs/contracts.md §1: what a caller may be told. RESOURCE_EXHAUSTED covers a message past the
# server's limit; UNAVAILABLE only the CA's own trouble (counted, and a healthy run shows none).
DOCUMENTED = {"UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED",
              "UNAVAILABLE"}
WINDOW = 8  # calls in flight: the server, not the client's one thread, is what is measured
# The server for a campaign: the rate limits would turn most of 100,000 calls from one identity
# into RESOURCE_EXHAUSTED, which tests the limiter (tests/security) rather than the parser.
SERVER_FLAGS = ("--issuance-rate-per-identity", "off", "--issuance-rate-per-source", "off")


def signer_for(server: MeshcaProcess) -> TokenSigner:
    issuer = server.issuer
    return TokenSigner(issuer._key, issuer.kid)


def problem_with_success(given: CaInput, chain: list[str], roots: list[x509.Certificate]) -> str | None:
    if given.identity is None:
        return "issued although the claims name no identity"
    try:
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
    except (ValueError, IndexError):
        return "answer holds no certificate"
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "issued without a SAN"
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    if uris != [given.identity] or len(list(sans)) != 1:
        return f"names {[str(n.value) for n in sans]}, not only {given.identity}"
    if leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
        return "issued a CA certificate"
    if given.public_key_der is not None and leaf.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo) != given.public_key_der:
        return "certificate is not for the CSR's key"
    issuer = x509.load_pem_x509_certificate(chain[1].encode()) if len(chain) > 1 else None
    if issuer is None or not any(r.subject == issuer.issuer or r.subject == issuer.subject for r in roots):
        return "chain does not lead to the bundle"
    try:
        leaf.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, x509.InvalidSignature):  # type: ignore[attr-defined]
        return "leaf not signed by the chain's issuer"
    return None


def _request(given: CaInput) -> Any:
    request = ca_pb2.IstioCertificateRequest(csr=given.csr, validity_duration=given.validity)
    if given.struct is not None:
        struct = struct_pb2.Struct()
        struct.update(given.struct)
        request.metadata.CopyFrom(struct)
    return request


def fuzz_create_certificate(server: MeshcaProcess, examples: int, *, seed_value: int = 17,
                            seconds: float | None = None, tally: Tally | None = None,
                            focus: str = "all") -> Tally:
    """`focus` "all": every part mutated (ca_inputs); "identity": valid tokens and structurally
    varied CSRs (identity_inputs), so that most calls succeed and are checked."""
    tally = tally or Tally(f"CreateCertificate (gRPC over TLS, {focus})")
    roots = x509.load_pem_x509_certificates(server.bundle_pem)
    stub = ca_pb2_grpc.IstioCertificateServiceStub(server.channel())
    in_flight: deque[tuple[CaInput, Any]] = deque()

    def settle(given: CaInput, future: Any) -> None:
        try:
            chain = list(future.result().cert_chain)
        except grpc.RpcError as exc:
            code = exc.code().name
            tally.record(code, None if code in DOCUMENTED else f"undocumented {code}: {exc.details()}",
                         given)
            return
        tally.record("OK", problem_with_success(given, chain, roots), given)

    def each(given: CaInput) -> None:
        try:
            request = _request(given)
        except (ValueError, RecursionError) as exc:  # protobuf would not encode it: never sent
            tally.record(f"not sendable ({type(exc).__name__})")
            return
        in_flight.append((given, stub.CreateCertificate.future(
            request, metadata=list(given.metadata), timeout=60)))
        while len(in_flight) >= WINDOW:
            settle(*in_flight.popleft())

    strategy = (identity_inputs if focus == "identity" else ca_inputs)(signer_for(server))
    run_strategy(strategy, examples, each, seed_value=seed_value, seconds=seconds)
    while in_flight:
        settle(*in_flight.popleft())
    return tally.done()
