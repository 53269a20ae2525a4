"""An identity's X.509 state as the Envoy secrets Istio's node agent serves, by resource name.

`default` is the workload's certificate (`tls_certificate`: the PEM leaf and intermediates, and
its PKCS#8 PEM key); `ROOTCA` is what it trusts (`validation_context.trusted_ca`: the PEM roots
of its own trust domain). Envoy's Istio-style bootstrap names exactly these two.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_der_private_key,
)
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from meshca.agent.ports import Identity, X509State, X509Svid

WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def _pem(certificates: tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certificates)


def _own_svid(identity: Identity, state: X509State) -> X509Svid:
    """The SVID for the caller's own identity (the first one, as in the Workload API, when
    the state names it under no SVID)."""
    for svid in state.svids:
        if svid.spiffe_id == identity.spiffe_id:
            return svid
    return state.svids[0]


def _inline(data: bytes) -> Any:
    return base_pb2.DataSource(inline_bytes=data)


def workload_secret(svid: X509Svid) -> Any:
    key = load_der_private_key(svid.private_key, password=None)
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return secret_pb2.Secret(name=WORKLOAD_SECRET, tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=_inline(_pem(svid.chain)), private_key=_inline(key_pem)))


def root_secret(roots: tuple[x509.Certificate, ...]) -> Any:
    return secret_pb2.Secret(name=ROOT_SECRET, validation_context=(
        common_pb2.CertificateValidationContext(trusted_ca=_inline(_pem(roots)))))


def secrets_for(identity: Identity, state: X509State) -> Mapping[str, Any]:
    """The secrets the caller may be served now, by resource name; a state without SVIDs has
    none. `ROOTCA` is left out while the trust domain has no roots: a validation context
    that trusts nothing is of no use, and a secret not yet served only keeps Envoy waiting."""
    if not state.svids:
        return {}
    svid = _own_svid(identity, state)
    secrets = {WORKLOAD_SECRET: workload_secret(svid)}
    roots = state.bundles.get(svid.spiffe_id.trust_domain, ())
    if roots:
        secrets[ROOT_SECRET] = root_secret(roots)
    return secrets
