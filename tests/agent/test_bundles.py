"""What the agent accepts from the server, offline: SPIFFE bundle documents (as the server
writes them, and broken ones), the PEM bundle file, and Istio's cert_chain layout."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.agent.bundles import (
    MAX_BUNDLE_BYTES,
    FileBundleSource,
    HttpBundleSource,
    parse_spiffe_bundle,
)
from meshca.agent.keys import make_key
from meshca.agent.server_signer import parse_cert_chain
from meshca.core.bundle import TrustBundle as CoreBundle
from meshca.core.spiffe import SpiffeId
from meshca.core.spiffe_bundle import spiffe_jwks
from meshca.errors import ConfigurationError, PermissionDenied, Unavailable
from tests.fakes.agent_server import FakeSigner, fake_authority
from tests.unit.pki import TRUST_DOMAIN

WEB = SpiffeId.for_service_account(TRUST_DOMAIN, "default", "web")
ROOT_A = fake_authority(1).chain[0]
ROOT_B = fake_authority(2).chain[0]


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


def document(**changes: Any) -> bytes:
    doc = spiffe_jwks(CoreBundle((ROOT_A, ROOT_B)), sequence=4, refresh_hint_seconds=300)
    doc.update(changes)
    return json.dumps(doc).encode()


# ---- SPIFFE bundle documents ---------------------------------------------------------------

def test_the_servers_bundle_document_parses() -> None:
    bundle = parse_spiffe_bundle(document(), TRUST_DOMAIN)
    assert bundle.roots == (ROOT_A, ROOT_B)
    assert bundle.refresh_hint == timedelta(seconds=300)
    assert bundle.sequence == 4
    assert bundle.trust_domain == TRUST_DOMAIN


def test_jwt_keys_are_skipped_and_odd_hints_ignored() -> None:
    jwt_key = {"use": "jwt-svid", "kty": "EC", "kid": "k1", "crv": "P-256", "x": "AA", "y": "AA"}
    doc = json.loads(document())
    doc["keys"].append(jwt_key)
    for hint in ("300", -5, True, None):
        doc["spiffe_refresh_hint"] = hint
        bundle = parse_spiffe_bundle(json.dumps(doc).encode(), TRUST_DOMAIN)
        assert bundle.roots == (ROOT_A, ROOT_B)
        assert bundle.refresh_hint is None
    doc["spiffe_refresh_hint"] = 1e300  # absurd, but no crash
    assert parse_spiffe_bundle(json.dumps(doc).encode(), TRUST_DOMAIN).refresh_hint == \
        timedelta(days=1)


@pytest.mark.parametrize(("body", "message"), [
    (b"<html>", "not JSON"),
    (b"[]", "no 'keys' list"),
    (document(keys=[]), "no X.509 roots"),
    (document(keys=[{"use": "x509-svid", "x5c": []}]), "exactly one x5c"),
    (document(keys=[{"use": "x509-svid", "x5c": ["a", "b"]}]), "exactly one x5c"),
    (document(keys=[{"use": "x509-svid", "x5c": ["not base64!"]}]), "not a DER certificate"),
    (document(keys=[{"use": "x509-svid",
                     "x5c": [base64.b64encode(b"\x30\x03\x02\x01\x00").decode()]}]),
     "not a DER certificate"),
])
def test_broken_documents_are_unavailable(body: bytes, message: str) -> None:
    with pytest.raises(Unavailable, match=message):
        parse_spiffe_bundle(body, TRUST_DOMAIN)


def test_http_source_wants_an_https_url() -> None:
    with pytest.raises(ConfigurationError, match="https://"):
        HttpBundleSource("http://meshca:8443/v1/bundle", "ca.pem", trust_domain=TRUST_DOMAIN)
    with pytest.raises(ConfigurationError, match="positive"):
        HttpBundleSource("https://meshca:8443/v1/bundle", "ca.pem", timedelta(0),
                         trust_domain=TRUST_DOMAIN)


def test_http_source_without_its_ca_file_is_unavailable(tmp_path: Path) -> None:
    source = HttpBundleSource("https://127.0.0.1:1/v1/bundle", tmp_path / "missing.pem",
                              trust_domain=TRUST_DOMAIN)
    with pytest.raises(Unavailable, match="CA file"):
        asyncio.run(source.fetch())


# ---- the PEM file --------------------------------------------------------------------------

def test_file_source_rereads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "root-cert.pem"
    source = FileBundleSource(path, TRUST_DOMAIN)
    with pytest.raises(Unavailable, match="cannot read"):
        asyncio.run(source.fetch())
    path.write_text(pem(ROOT_A))
    first = asyncio.run(source.fetch())
    assert first.roots == (ROOT_A,) and first.refresh_hint is None
    path.write_text(pem(ROOT_A, ROOT_B))  # the kubelet rewrote the ConfigMap
    assert asyncio.run(source.fetch()).roots == (ROOT_A, ROOT_B)
    path.write_text("")  # caught mid-rewrite
    with pytest.raises(Unavailable, match="no PEM certificate"):
        asyncio.run(source.fetch())
    path.write_bytes(b"x" * (MAX_BUNDLE_BYTES + 1))
    with pytest.raises(Unavailable, match="bytes"):
        asyncio.run(source.fetch())


# ---- Istio's cert_chain --------------------------------------------------------------------

def signed_chain(signer: FakeSigner) -> tuple[x509.Certificate, ...]:
    return asyncio.run(signer.sign(WEB, make_key("ec-p256", WEB).csr_pem))


def test_cert_chain_layout_yields_leaf_intermediate_and_its_root() -> None:
    signer = FakeSigner()
    leaf, intermediate, root = signed_chain(signer)
    # The last element holds every root, one string; the issuing one is picked.
    elements = [pem(leaf), pem(intermediate), pem(ROOT_B, root)]
    assert parse_cert_chain(elements) == (leaf, intermediate, root)


@pytest.mark.parametrize("case", ["one element", "garbage", "no issuing root", "out of order",
                                  "foreign intermediate"])
def test_cert_chains_that_do_not_hold_together_are_refused(case: str) -> None:
    signer = FakeSigner()
    leaf, intermediate, root = signed_chain(signer)
    other = fake_authority(5)
    elements = {
        "one element": [pem(leaf)],
        "garbage": [pem(leaf), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                    pem(root)],
        "no issuing root": [pem(leaf), pem(intermediate), pem(ROOT_B)],
        "out of order": [pem(intermediate), pem(leaf), pem(root)],
        "foreign intermediate": [pem(leaf), pem(other.certificate), pem(*other.chain)],
    }[case]
    with pytest.raises(PermissionDenied):
        parse_cert_chain(elements)
