"""A meshca server as the agent sees it, in-process: `meshca.v1.SvidService` (MintJWTSVID,
GetBundles) and Istio's CreateCertificate on one TLS gRPC port, until the real SvidService
lands and beside it afterwards (tests drive failures a real server will not make on demand).

- Tokens are real ES256 JWT-SVIDs (header `alg`, `kid`, `typ: JWT`; claims `sub`, `aud`,
  `exp`, `iat`) signed with the current JWT key; `rotate_jwt_key()` makes a new one, both
  published (the old one until `drop_old_jwt_keys()`).
- GetBundles answers real SPIFFE bundle JSON: the test authority's root as `x509-svid`, the JWT
  keys as `jwt-svid`, `spiffe_sequence` and `spiffe_refresh_hint`; `federate()` adds a foreign
  trust domain's bundle, `federated_raw` puts any bytes there.
- Every call must carry `authorization: Bearer <token>` with `token`; otherwise UNAUTHENTICATED.
  `fail_with` makes every call fail with that status; `unimplemented` makes SvidService answer
  UNIMPLEMENTED (an older server); `sub_override` mints for another subject (a bad server).
  `mints`, `bundle_calls` and `signs` count calls.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import threading
import time
from collections.abc import Mapping
from concurrent import futures
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from meshca.core import jwt as core_jwt
from meshca.core import templates
from meshca.core.authority import SigningAuthority, sign_leaf
from meshca.core.jwks import key_id
from meshca.core.jwt_svid import JwtPublicKey, jwk_of
from meshca.core.spiffe import SpiffeId
from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from meshca.gen.meshca.v1 import svid_pb2, svid_pb2_grpc
from tests.fakes.agent_server import fake_authority
from tests.unit.pki import TRUST_DOMAIN

TOKEN = "agent-token"


def spiffe_bundle(roots: tuple[x509.Certificate, ...], jwt_keys: Mapping[str, JwtPublicKey], *,
                  sequence: int = 1, refresh_hint: int = 300) -> bytes:
    """A SPIFFE bundle document: x509-svid roots and jwt-svid keys."""
    keys: list[dict[str, Any]] = [
        {**{k: v for k, v in jwk_of(_jwt_key(root), "").items() if k != "kid"},
         "use": "x509-svid", "x5c": [base64.b64encode(root.public_bytes(Encoding.DER)).decode()]}
        for root in roots]
    keys += [{**jwk_of(key, kid), "use": "jwt-svid"} for kid, key in jwt_keys.items()]
    return json.dumps({"keys": keys, "spiffe_sequence": sequence,
                       "spiffe_refresh_hint": refresh_hint}).encode()


def _jwt_key(root: x509.Certificate) -> JwtPublicKey:
    key = root.public_key()
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key


def sign_jwt(claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey, kid: str,
             **header: Any) -> str:
    """An ES256 compact JWS with `typ: JWT` (and any other header given)."""
    head = {"alg": "ES256", "kid": kid, "typ": "JWT", **header}
    body = core_jwt.b64url_encode(json.dumps(dict(claims)).encode())
    first = core_jwt.b64url_encode(json.dumps(head).encode())
    signing_input = f"{first}.{body}".encode()
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return f"{first}.{body}.{core_jwt.b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class FakeSvidServer(svid_pb2_grpc.SvidServiceServicer,
                     ca_pb2_grpc.IstioCertificateServiceServicer):
    def __init__(self, authority: SigningAuthority | None = None, *,
                 trust_domain: str = TRUST_DOMAIN, jwt_ttl: timedelta = timedelta(minutes=5),
                 refresh_hint: int = 300) -> None:
        self.authority = authority or fake_authority(5)
        self.trust_domain = trust_domain
        self.jwt_ttl = jwt_ttl
        self.refresh_hint = refresh_hint
        self.jwt_keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.kid = ""
        self.rotate_jwt_key()
        self.federated: dict[str, bytes] = {}
        self.sequence = 1
        self.fail_with: grpc.StatusCode | None = None
        self.unimplemented = False
        self.sub_override: str | None = None  # mint for this subject instead (a bad server)
        self.mints = self.bundle_calls = self.signs = 0
        self.minted: list[tuple[str, tuple[str, ...], int]] = []  # (spiffe_id, aud, ttl)
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.port = 0

    # ---- controls ------------------------------------------------------------------------

    @property
    def root(self) -> x509.Certificate:
        return self.authority.chain[-1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        return self.root.public_bytes(Encoding.PEM)

    def rotate_jwt_key(self) -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        self.kid = key_id(key.public_key())
        self.jwt_keys[self.kid] = key
        self._changed()
        return self.kid

    def drop_old_jwt_keys(self) -> None:
        self.jwt_keys = {self.kid: self.jwt_keys[self.kid]}
        self._changed()

    def federate(self, trust_domain: str, roots: tuple[x509.Certificate, ...],
                 jwt_keys: Mapping[str, JwtPublicKey] | None = None) -> None:
        self.federated[trust_domain] = spiffe_bundle(roots, jwt_keys or {})
        self._changed()

    def public_jwt_keys(self) -> dict[str, JwtPublicKey]:
        return {kid: key.public_key() for kid, key in self.jwt_keys.items()}

    def bundle_document(self) -> bytes:
        return spiffe_bundle((self.root,), self.public_jwt_keys(), sequence=self.sequence,
                             refresh_hint=self.refresh_hint)

    def mint(self, spiffe_id: str, audience: list[str], ttl: timedelta | None = None,
             **extra: Any) -> str:
        now = int(time.time())
        claims = {"sub": spiffe_id, "aud": audience,
                  "exp": now + int((ttl or self.jwt_ttl).total_seconds()), "iat": now, **extra}
        return sign_jwt(claims, self.jwt_keys[self.kid], self.kid)

    def _changed(self) -> None:
        self.sequence = getattr(self, "sequence", 0) + 1

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeSvidServer:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = templates.server_tls(
            public_key=key.public_key(), dns_names=["localhost"],
            ip_addresses=[ipaddress.IPv4Address("127.0.0.1")],
            spiffe_id=SpiffeId.parse(f"spiffe://{self.trust_domain}/meshca/server"),
            issuer=self.authority.certificate, serial=x509.random_serial_number(),
            not_before=now - timedelta(minutes=1), not_after=now + timedelta(hours=2),
        ).sign(self.authority.private_key, hashes.SHA256())  # type: ignore[arg-type]
        chain = cert.public_bytes(Encoding.PEM) + \
            self.authority.certificate.public_bytes(Encoding.PEM)
        pem_key = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        svid_pb2_grpc.add_SvidServiceServicer_to_server(self, server)
        ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(self, server)
        self.port = server.add_secure_port(
            "127.0.0.1:0", grpc.ssl_server_credentials([(pem_key, chain)]))
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    # ---- the services --------------------------------------------------------------------

    def _check(self, context: grpc.ServicerContext, svid_service: bool = True) -> None:
        if self.fail_with is not None:
            context.abort(self.fail_with, "told to fail")
        if svid_service and self.unimplemented:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Bearer {TOKEN}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")

    def MintJWTSVID(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._check(context)
        with self._lock:
            self.mints += 1
            self.minted.append((request.spiffe_id, tuple(request.audience),
                                request.ttl_seconds))
        if not request.audience or not all(request.audience):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience is required")
        if not request.spiffe_id.startswith(f"spiffe://{self.trust_domain}/"):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "not a workload of this domain")
        ttl = timedelta(seconds=request.ttl_seconds) if request.ttl_seconds else None
        token = self.mint(self.sub_override or request.spiffe_id, list(request.audience), ttl)
        claims = json.loads(core_jwt.b64url_decode(token.split(".")[1]))
        return svid_pb2.MintJWTSVIDResponse(token=token, spiffe_id=request.spiffe_id,
                                            expires_at=claims["exp"])

    def GetBundles(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._check(context)
        with self._lock:
            self.bundle_calls += 1
        return svid_pb2.GetBundlesResponse(bundle=self.bundle_document(),
                                           federated_bundles=dict(self.federated))

    def CreateCertificate(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._check(context, svid_service=False)
        with self._lock:
            self.signs += 1
        spiffe_id = SpiffeId.parse(request.metadata.fields["ImpersonatedIdentity"].string_value)
        csr = x509.load_pem_x509_csr(request.csr.encode())
        now = datetime.now(UTC)
        builder = templates.leaf_svid(
            public_key=csr.public_key(), spiffe_id=spiffe_id,
            issuer=self.authority.certificate, serial=x509.random_serial_number(),
            not_before=now - timedelta(seconds=30), not_after=now + timedelta(hours=1))
        leaf = sign_leaf(self.authority, builder, spiffe_id)
        return ca_pb2.IstioCertificateResponse(cert_chain=[
            leaf.public_bytes(Encoding.PEM).decode(),
            self.authority.certificate.public_bytes(Encoding.PEM).decode(),
            self.root.public_bytes(Encoding.PEM).decode()])

