"""Bad CreateCertificate requests, over real gRPC+TLS against the real server.

Each case is one way a caller can get it wrong. The server must answer with exactly the
status code Istio's agent expects (docs/contracts.md §1), record nothing, say in the details what
was wrong, and never echo token material back. After all of them it must still issue, and
its log must hold no stack trace.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ObjectIdentifier

from meshca.core import jwt
from meshca.core.sa_token import LEGACY_ISSUER
from tests.support import (
    MeshcaProcess,
    csr_pem,
    ec_key,
    projected_claims,
    rsa_key,
    signed_token,
    uri,
)

OWN_ID = "spiffe://cluster.local/ns/default/sa/web"  # what `meshca.token()` authenticates as
OTHER_ID = "spiffe://cluster.local/ns/kube-system/sa/admin"
MAX_TTL_SECONDS = 28 * 3600  # `meshca serve`'s default --max-ttl (1/6 of the 7-day intermediate)
SERVER_MAX_MESSAGE = 256 * 1024

Metadata = list[tuple[str, str]]

# Token pieces sent by the cases, so that the log check can look for them too.
_SENT_TOKEN_PIECES: set[str] = set()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One CreateCertificate call: the request and the caller's gRPC metadata."""

    csr: str
    metadata: Metadata
    validity: int = 0
    struct: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class BadInput:
    id: str
    code: grpc.StatusCode
    message: str  # must appear in the status details
    build: Callable[[MeshcaProcess], Attempt]


# ---- building blocks ----------------------------------------------------------------------

def bearer(token: str) -> Metadata:
    return [("authorization", f"Bearer {token}")]


def with_token(token: Callable[[MeshcaProcess], str]) -> Callable[[MeshcaProcess], Attempt]:
    """A good CSR, sent with the token `token(server)` makes: the token is what is wrong."""
    return lambda server: Attempt(csr_pem(), bearer(token(server)))


def with_claims(edit: Callable[[dict[str, Any]], object]) -> Callable[[MeshcaProcess], Attempt]:
    """A token signed by the server's own issuer key whose claims `edit` spoiled in place."""

    def token(server: MeshcaProcess) -> str:
        claims = projected_claims()
        edit(claims)
        return signed_token(server, claims)

    return with_token(token)


def with_csr(csr: Callable[[], str]) -> Callable[[MeshcaProcess], Attempt]:
    """A good token for default/web, sent with the CSR `csr()` makes: the CSR is what is wrong."""
    return lambda server: Attempt(csr(), bearer(server.token()))


def b64json(value: object) -> str:
    return jwt.b64url_encode(json.dumps(value).encode())


def replace_segment(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


def alg_none_token(server: MeshcaProcess) -> str:
    header = b64json({"alg": "none", "typ": "JWT"})
    return f"{header}.{b64json(projected_claims())}."


def hs256_token(server: MeshcaProcess) -> str:
    """HMAC over the token, keyed with the issuer's public key: the classic confusion attack."""
    secret = server.issuer.public_keys()[server.issuer.kid].public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    head = b64json({"alg": "HS256", "typ": "JWT", "kid": server.issuer.kid})
    body = b64json(projected_claims())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{jwt.b64url_encode(mac)}"


def foreign_key_token(server: MeshcaProcess) -> str:
    """Well-formed ES256 under the issuer's kid, but signed by somebody else's key."""
    return jwt.sign(projected_claims(), ec_key(), server.issuer.kid)


def tampered_token(server: MeshcaProcess) -> str:
    """A genuine token for default/web whose claims were swapped for kube-system/admin."""
    genuine = server.token()
    return replace_segment(genuine, 1, b64json(projected_claims("kube-system", "admin")))


def oversized_token(server: MeshcaProcess) -> str:
    claims = projected_claims()
    claims["padding"] = "p" * (jwt.MAX_TOKEN_BYTES + 1024)
    token = signed_token(server, claims)
    assert jwt.MAX_TOKEN_BYTES < len(token) < 32 * 1024
    return token


def deeply_nested_header_token(server: MeshcaProcess) -> str:
    nested = ("[" * 3000 + "]" * 3000).encode()
    return replace_segment(server.token(), 0, jwt.b64url_encode(nested))


def pem_csr(der: bytes) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"


def csr_with_bad_signature() -> str:
    der = bytearray(x509.load_pem_x509_csr(csr_pem().encode()).public_bytes(Encoding.DER))
    der[-1] ^= 0x5A  # the last byte of ECDSA's `s`: still DER, no longer a valid signature
    return pem_csr(bytes(der))


def csr_over_64k() -> str:
    filler = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"f" * 60_000)
    request = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(filler, critical=False).sign(ec_key(), hashes.SHA256()))
    pem = request.public_bytes(Encoding.PEM).decode()
    assert 64 * 1024 < len(pem) < SERVER_MAX_MESSAGE
    return pem


def key_usage(*, cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def set_claim(name: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda claims: claims.__setitem__(name, value)


def drop_claim(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda claims: claims.pop(name)


def legacy_claims(claims: dict[str, Any]) -> None:
    claims["iss"] = LEGACY_ISSUER
    del claims["exp"]


def mismatched_namespace(claims: dict[str, Any]) -> None:
    claims["kubernetes.io"]["namespace"] = "kube-system"


def mismatched_name(claims: dict[str, Any]) -> None:
    claims["kubernetes.io"]["serviceaccount"]["name"] = "admin"


def named(namespace: str, account: str) -> Callable[[dict[str, Any]], None]:
    """Subject and kubernetes.io claim agree, on names that cannot be SPIFFE path segments."""

    def edit(claims: dict[str, Any]) -> None:
        claims["sub"] = f"system:serviceaccount:{namespace}:{account}"
        claims["kubernetes.io"]["namespace"] = namespace
        claims["kubernetes.io"]["serviceaccount"]["name"] = account

    return edit


def now() -> int:
    return int(time.time())


UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT

# ---- the cases ----------------------------------------------------------------------------

TOKEN_CASES: Sequence[BadInput] = (
    BadInput("token-no-authorization-metadata", UNAUTHENTICATED, "no authorization metadata",
             lambda s: Attempt(csr_pem(), [])),
    BadInput("token-two-authorization-values", UNAUTHENTICATED,
             "more than one authorization value",
             lambda s: Attempt(csr_pem(), bearer(s.token()) + bearer(s.token("default", "db")))),
    BadInput("token-basic-scheme", UNAUTHENTICATED, "must start with 'Bearer '",
             lambda s: Attempt(csr_pem(), [("authorization", "Basic d2ViOnNlY3JldC1wYXNz")])),
    BadInput("token-lowercase-bearer", UNAUTHENTICATED, "must start with 'Bearer '",
             lambda s: Attempt(csr_pem(), [("authorization", f"bearer {s.token()}")])),
    BadInput("token-without-scheme", UNAUTHENTICATED, "must start with 'Bearer '",
             lambda s: Attempt(csr_pem(), [("authorization", s.token())])),
    BadInput("token-empty-bearer", UNAUTHENTICATED, "empty bearer token",
             lambda s: Attempt(csr_pem(), [("authorization", "Bearer ")])),
    BadInput("token-two-parts", UNAUTHENTICATED, "three dot-separated parts",
             with_token(lambda s: s.token().rsplit(".", 1)[0])),
    BadInput("token-four-parts", UNAUTHENTICATED, "three dot-separated parts",
             with_token(lambda s: s.token() + ".AAAA")),
    BadInput("token-bad-base64", UNAUTHENTICATED, "not valid base64url",
             with_token(lambda s: replace_segment(s.token(), 1, "eyJzdWIiOi+/==="))),
    BadInput("token-header-not-json", UNAUTHENTICATED, "not valid base64url-encoded JSON",
             with_token(lambda s: replace_segment(
                 s.token(), 0, jwt.b64url_encode(b"alg=ES256;kid=1")))),
    BadInput("token-header-json-array", UNAUTHENTICATED, "must be JSON objects",
             with_token(lambda s: replace_segment(s.token(), 0, b64json(["ES256"])))),
    BadInput("token-header-nested-too-deep", UNAUTHENTICATED, "not valid base64url-encoded JSON",
             with_token(deeply_nested_header_token)),
    BadInput("token-alg-none", UNAUTHENTICATED, "algorithm is not accepted",
             with_token(alg_none_token)),
    BadInput("token-alg-hs256-with-secret", UNAUTHENTICATED, "algorithm is not accepted",
             with_token(hs256_token)),
    BadInput("token-alg-not-a-string", UNAUTHENTICATED, "algorithm is not accepted",
             with_token(lambda s: signed_token(
                 s, projected_claims(), {"alg": ["ES256"], "kid": s.issuer.kid}))),
    BadInput("token-rs256-header-es256-signature", UNAUTHENTICATED,
             "algorithm does not match the issuer key type",
             with_token(lambda s: signed_token(
                 s, projected_claims(), {"alg": "RS256", "kid": s.issuer.kid}))),
    BadInput("token-unknown-kid", UNAUTHENTICATED, "key id is not among the issuer's keys",
             with_token(lambda s: signed_token(
                 s, projected_claims(), {"alg": "ES256", "kid": "rotated-away-2019"}))),
    BadInput("token-crit-header", UNAUTHENTICATED, "critical header parameters",
             with_token(lambda s: signed_token(
                 s, projected_claims(), {"alg": "ES256", "kid": s.issuer.kid, "crit": ["b64"]}))),
    BadInput("token-signed-by-another-key", UNAUTHENTICATED, "signature does not verify",
             with_token(foreign_key_token)),
    BadInput("token-claims-tampered-after-signing", UNAUTHENTICATED, "signature does not verify",
             with_token(tampered_token)),
    BadInput("token-signature-not-base64url", UNAUTHENTICATED, "signature is not valid base64url",
             with_token(lambda s: replace_segment(s.token(), 2, "c2lnbmF0dXJl=="))),
    BadInput("token-over-16KiB", UNAUTHENTICATED, f"longer than {jwt.MAX_TOKEN_BYTES} bytes",
             with_token(oversized_token)),
    BadInput("token-expired-beyond-skew", UNAUTHENTICATED, "token has expired",
             with_token(lambda s: signed_token(s, projected_claims(now=now() - 720, ttl=600)))),
    BadInput("token-nbf-in-future", UNAUTHENTICATED, "not valid yet (nbf)",
             with_claims(lambda c: c.__setitem__("nbf", now() + 300))),
    BadInput("token-iat-in-future", UNAUTHENTICATED, "issued in the future (iat)",
             with_claims(lambda c: c.__setitem__("iat", now() + 300))),
    BadInput("token-wrong-audience", UNAUTHENTICATED, "audience",
             with_token(lambda s: signed_token(s, projected_claims(audience=["vault", "api"])))),
    BadInput("token-wrong-issuer", UNAUTHENTICATED, "issuer is not the configured issuer",
             with_token(lambda s: signed_token(
                 s, projected_claims(issuer="https://kubernetes.default.svc.other")))),
    BadInput("token-legacy-issuer-without-exp", UNAUTHENTICATED, "legacy",
             with_claims(legacy_claims)),
    BadInput("token-no-exp", UNAUTHENTICATED, "never expires", with_claims(drop_claim("exp"))),
    BadInput("token-exp-is-a-string", UNAUTHENTICATED, "exp claim is not a number",
             with_claims(lambda c: c.__setitem__("exp", str(now() + 600)))),
    BadInput("token-exp-is-nan", UNAUTHENTICATED, "exp claim is not a finite number",
             with_claims(set_claim("exp", float("nan")))),
    BadInput("token-exp-is-infinity", UNAUTHENTICATED, "exp claim is not a finite number",
             with_claims(set_claim("exp", float("inf")))),
    BadInput("token-exp-too-large-for-a-float", UNAUTHENTICATED,
             "exp claim is not a finite number", with_claims(set_claim("exp", 10**400))),
    BadInput("token-sub-not-a-service-account", UNAUTHENTICATED,
             "not a Kubernetes service account",
             with_claims(set_claim("sub", "system:node:worker-1"))),
    BadInput("token-sub-and-claim-disagree-namespace", UNAUTHENTICATED,
             "subject and kubernetes.io claim disagree", with_claims(mismatched_namespace)),
    BadInput("token-sub-and-claim-disagree-name", UNAUTHENTICATED,
             "subject and kubernetes.io claim disagree", with_claims(mismatched_name)),
    BadInput("token-sub-namespace-dot-dot", UNAUTHENTICATED, "cannot form a SPIFFE ID",
             with_claims(named("..", "web"))),
    BadInput("token-sub-namespace-with-slash", UNAUTHENTICATED, "cannot form a SPIFFE ID",
             with_claims(named("default/sa/web", "x"))),
    BadInput("token-sub-account-with-space", UNAUTHENTICATED, "cannot form a SPIFFE ID",
             with_claims(named("default", "web admin"))),
    BadInput("token-missing-kubernetes-io-claim", UNAUTHENTICATED,
             "lacks the kubernetes.io claim", with_claims(drop_claim("kubernetes.io"))),
    BadInput("token-unknown-clusterid", UNAUTHENTICATED, "unknown cluster id",
             lambda s: Attempt(csr_pem(), [*bearer(s.token()), ("clusterid", "Kubernetes-east")])),
    BadInput("token-impersonated-identity", UNAUTHENTICATED, "ImpersonatedIdentity",
             lambda s: Attempt(csr_pem(), bearer(s.token()),
                               struct={"ImpersonatedIdentity": OTHER_ID})),
)

CSR_CASES: Sequence[BadInput] = (
    BadInput("csr-empty", INVALID_ARGUMENT, "csr is empty", with_csr(lambda: "")),
    BadInput("csr-not-pem", INVALID_ARGUMENT, "not a PEM 'CERTIFICATE REQUEST' block",
             with_csr(lambda: "MIIBPzCB5gIBADAAMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")),
    BadInput("csr-is-a-certificate", INVALID_ARGUMENT, "not a PEM 'CERTIFICATE REQUEST' block",
             lambda s: Attempt(s.bundle_pem.decode(), bearer(s.token()))),
    BadInput("csr-pem-garbage-body", INVALID_ARGUMENT, "could not be parsed",
             with_csr(lambda: pem_csr(b"this is not DER, let alone PKCS#10"))),
    BadInput("csr-over-64KiB", INVALID_ARGUMENT, "at most 65536 are accepted",
             with_csr(csr_over_64k)),
    BadInput("csr-bad-signature", INVALID_ARGUMENT, "csr signature does not verify",
             with_csr(csr_with_bad_signature)),
    BadInput("csr-san-someone-elses-spiffe-id", INVALID_ARGUMENT,
             "identity other than the caller's",
             with_csr(lambda: csr_pem(sans=[uri(OTHER_ID)]))),
    BadInput("csr-san-other-trust-domain", INVALID_ARGUMENT, "identity other than the caller's",
             with_csr(lambda: csr_pem(sans=[uri("spiffe://evil.example/ns/default/sa/web")]))),
    BadInput("csr-san-dns-name", INVALID_ARGUMENT, "SANs that are not allowed: DNSName",
             with_csr(lambda: csr_pem(sans=[x509.DNSName("web.default.svc.cluster.local")]))),
    BadInput("csr-san-ip-address", INVALID_ARGUMENT, "SANs that are not allowed: IPAddress",
             with_csr(lambda: csr_pem(sans=[x509.IPAddress(ipaddress.ip_address("10.1.2.3"))]))),
    BadInput("csr-san-email", INVALID_ARGUMENT, "SANs that are not allowed: RFC822Name",
             with_csr(lambda: csr_pem(sans=[x509.RFC822Name("web@cluster.local")]))),
    BadInput("csr-two-uri-sans", INVALID_ARGUMENT, "2 URI SANs",
             with_csr(lambda: csr_pem(sans=[uri(OWN_ID), uri(OTHER_ID)]))),
    BadInput("csr-basic-constraints-ca-true", INVALID_ARGUMENT, "basicConstraints CA:true",
             with_csr(lambda: csr_pem(ca=True))),
    BadInput("csr-key-usage-key-cert-sign", INVALID_ARGUMENT, "keyCertSign",
             with_csr(lambda: csr_pem(key_usage=key_usage(cert_sign=True)))),
    BadInput("csr-key-usage-crl-sign", INVALID_ARGUMENT, "cRLSign",
             with_csr(lambda: csr_pem(key_usage=key_usage(crl_sign=True)))),
    BadInput("csr-rsa-1024-key", INVALID_ARGUMENT, "RSA key is 1024 bits",
             with_csr(lambda: csr_pem(rsa_key(1024)))),
    BadInput("csr-p521-key", INVALID_ARGUMENT, "curve secp521r1 is not allowed",
             with_csr(lambda: csr_pem(ec_key(ec.SECP521R1())))),
    BadInput("csr-secp256k1-key", INVALID_ARGUMENT, "curve secp256k1 is not allowed",
             with_csr(lambda: csr_pem(ec_key(ec.SECP256K1())))),
    BadInput("csr-dsa-key", INVALID_ARGUMENT, "DSAPublicKey is not allowed",
             with_csr(lambda: csr_pem(dsa.generate_private_key(2048)))),
)

REQUEST_CASES: Sequence[BadInput] = (
    BadInput("lifetime-one-second-above-max-ttl", INVALID_ARGUMENT,
             f"exceeds the maximum {MAX_TTL_SECONDS}s",
             lambda s: Attempt(csr_pem(), bearer(s.token()), validity=MAX_TTL_SECONDS + 1)),
    BadInput("lifetime-int64-max", INVALID_ARGUMENT, f"exceeds the maximum {MAX_TTL_SECONDS}s",
             lambda s: Attempt(csr_pem(), bearer(s.token()), validity=2**63 - 1)),
    BadInput("metadata-cert-signer-non-empty", INVALID_ARGUMENT,
             "CertSigner names a signer meshca does not have",
             lambda s: Attempt(csr_pem(), bearer(s.token()),
                               struct={"CertSigner": "kubernetes.io/legacy-unknown"})),
    BadInput("grpc-message-over-256KiB", grpc.StatusCode.RESOURCE_EXHAUSTED,
             "larger than max",
             with_csr(lambda: "C" * (SERVER_MAX_MESSAGE + 4096))),
)

CASES: Sequence[BadInput] = (*TOKEN_CASES, *CSR_CASES, *REQUEST_CASES)


def test_the_cases_are_distinct() -> None:
    assert len({case.id for case in CASES}) == len(CASES)
    assert len(CASES) >= 34


# ---- checks -------------------------------------------------------------------------------

def token_material(metadata: Metadata) -> list[str]:
    """Every part of what the caller sent as credentials that is long enough to be a secret."""
    pieces: list[str] = []
    for key, value in metadata:
        if key != "authorization":
            continue
        _, _, token = value.partition(" ")
        token = token or value
        pieces += [p for p in (token, *token.split(".")) if len(p) >= 8]
    return pieces


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_with_the_right_status(meshca: MeshcaProcess, case: BadInput) -> None:
    attempt = case.build(meshca)
    secrets = token_material(attempt.metadata)
    _SENT_TOKEN_PIECES.update(p for p in secrets if len(p) >= 16)
    before = meshca.issued_count()

    with pytest.raises(grpc.RpcError) as raised:
        meshca.create_certificate(attempt.csr, metadata=attempt.metadata,
                                  validity=attempt.validity, struct=attempt.struct)

    error = raised.value
    assert isinstance(error, grpc.Call)
    details = error.details() or ""
    assert error.code() is case.code, f"{error.code()}: {details}"
    assert case.message in details, details
    for piece in secrets:
        assert piece not in details, "status details echo token material"
    assert "system:serviceaccount:" not in details
    assert "internal error" not in details
    assert meshca.issued_count() == before


# ---- afterwards ---------------------------------------------------------------------------
# Kept below the parametrized test on purpose: pytest runs a module's tests in file order.

def test_server_still_issues_after_the_bad_requests(meshca: MeshcaProcess) -> None:
    before = meshca.issued_count()
    chain = meshca.create_certificate(csr_pem(), token=meshca.token())
    assert len(chain) >= 2
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [OWN_ID]
    assert meshca.issued_count() == before + 1


def test_server_log_has_no_traceback_and_no_tokens(meshca: MeshcaProcess) -> None:
    log = meshca.log_text()
    assert "CreateCertificate refused" in log
    assert "Traceback" not in log
    assert "failed inside meshca" not in log
    leaked = [piece[:12] + "…" for piece in _SENT_TOKEN_PIECES if piece in log]
    assert not leaked, f"token material in the server log: {leaked}"
