"""SPIFFE federation between two real `meshca serve` processes (a.test, b.test) on loopback,
one relationship per profile, and a scripted foreign endpoint (c.test) that goes down, slow,
serves garbage, another trust domain's bundle or an older sequence: the last good bundle is
kept and the metrics say what happened."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.federation_support import Ca, ForeignEndpoint, bundle_document, issue, make_ca
from tests.support import AdminClient, MeshcaProcess, admin_token, csr_pem, ec_key, start_meshca, uri

T = TypeVar("T")
SOME_ROOT = make_ca("some root").pem
FAST = ("--federation-refresh-min", "1s", "--federation-refresh-max", "2s",
        "--federation-fetch-timeout", "2s", "--ca-reload-interval", "1s")


@dataclass
class Pair:
    a: MeshcaProcess
    b: MeshcaProcess
    a_admin: AdminClient
    b_admin: AdminClient
    a_token: str
    b_token: str
    web_ca: Ca
    tmp: Path


def _endpoint(server: MeshcaProcess) -> str:
    info = json.loads((server.data_dir / "endpoints.json").read_text())
    return str(info["federation"])


def eventually(check: Callable[[], T | None], what: str, timeout: float = 40.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("federation")
    web_ca = make_ca("test web CA")
    cert, key = issue(web_ca, dns=("localhost",), ips=("127.0.0.1",))
    (tmp / "web.pem").write_text(cert)
    (tmp / "web.key").write_text(key)
    (tmp / "web.key").chmod(0o600)
    (tmp / "web-ca.pem").write_text(web_ca.pem)
    # b.test serves its bundle with a Web-PKI certificate (https_web) ...
    b = start_meshca(tmp / "b", "--trust-domain", "b.test", "--federation-addr", "127.0.0.1:0",
                     "--federation-profile", "https_web", "--federation-cert", str(tmp / "web.pem"),
                     "--federation-key", str(tmp / "web.key"), *FAST)
    # ... and a.test trusts it through the flag (https_web, the test CA in place of the system's),
    # serves its own with its SVID (https_spiffe), and lets one b.test identity in as a viewer.
    a = start_meshca(tmp / "a", "--trust-domain", "a.test", "--federation-addr", "127.0.0.1:0",
                     "--federate-with",
                     f"b.test=https://{_endpoint(b)}/,profile=https_web,ca={tmp / 'web-ca.pem'}",
                     "--istio-include-federated",
                     "--admin-spiffe-id", "spiffe://b.test/ns/ops/sa/viewer=viewer",
                     "--admin-spiffe-id", "spiffe://a.test/ns/ops/sa/viewer=viewer", *FAST)
    try:
        yield Pair(a, b, AdminClient(a), AdminClient(b), admin_token(a), admin_token(b), web_ca,
                   tmp)
    finally:
        a.stop()
        b.stop()


def _roots(pem: bytes) -> set[bytes]:
    return {c.fingerprint(hashes.SHA256()) for c in x509.load_pem_x509_certificates(pem)}


def _bundle_of(admin: AdminClient, token: str, td: str) -> dict[str, Any] | None:
    response = admin.get(f"/v1/federation/{td}", token=token)
    if response.status != 200:
        return None
    body: dict[str, Any] = response.json()
    return body if body["bundle"] is not None else None


def _metric(server: MeshcaProcess, name: str, **labels: str) -> float | None:
    host, _, port = server.metrics_addr.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return None


def test_the_endpoint_serves_the_bundle_with_the_profile_s_certificate(pair: Pair) -> None:
    # https_spiffe: a.test's SVID for spiffe://a.test/meshca/federation, under a.test's roots.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=pair.a.bundle_pem.decode())
    host, _, port = _endpoint(pair.a).rpartition(":")
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    connection.request("GET", "/")
    response = connection.getresponse()
    body = response.read()
    assert isinstance(connection.sock, ssl.SSLSocket)
    peer = connection.sock.getpeercert(binary_form=True)
    assert peer is not None
    connection.close()
    assert response.status == 200
    assert response.getheader("content-type") == "application/json"
    assert response.getheader("cache-control") == "no-cache"
    leaf = x509.load_der_x509_certificate(peer)
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == ["spiffe://a.test/meshca/federation"]
    document = json.loads(body)
    assert document == pair.a_admin.get("/v1/bundle").json()
    # Only GET/HEAD on /.
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    connection.request("POST", "/", body=b"{}")
    assert connection.getresponse().status == 405
    connection.close()
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    connection.request("GET", "/other")
    assert connection.getresponse().status == 404
    connection.close()


def test_both_directions_federate_one_per_profile(pair: Pair) -> None:
    # a.test -> b.test came from the flag (https_web).
    record = eventually(lambda: _bundle_of(pair.a_admin, pair.a_token, "b.test"),
                        "a.test to fetch b.test's bundle")
    assert record["profile"] == "https_web" and record["from_flags"] is True
    assert record["last_outcome"] == "ok"
    # b.test -> a.test through the admin API (https_spiffe, bootstrapped with a's root file).
    response = pair.b_admin.post("/v1/federation", {
        "trust_domain": "a.test", "url": f"https://{_endpoint(pair.a)}/",
        "profile": "https_spiffe", "endpoint_spiffe_id": "spiffe://a.test/meshca/federation",
        "bootstrap_bundle": pair.a.bundle_pem.decode()}, token=pair.b_token)
    assert response.status == 201, response.body
    record = eventually(lambda: _bundle_of(pair.b_admin, pair.b_token, "a.test"),
                        "b.test to fetch a.test's bundle")
    assert record["bundle"]["x509_roots"] == len(_roots(pair.a.bundle_pem))
    audit = pair.b_admin.get("/v1/audit?limit=500", token=pair.b_token).json()
    puts = [e for e in audit["items"] if e["action"] == "federation.put"]
    assert puts and puts[-1]["target"] == "a.test" and puts[-1]["actor"].startswith("token:")
    # The flag's relationship is not the API's to change.
    refused = pair.a_admin.request("DELETE", "/v1/federation/b.test", token=pair.a_token)
    assert refused.status == 409
    # Istio's bundle element carries b.test's roots after a.test's own.
    # (Within the reload interval: every process re-reads the stored bundles.)
    csr = csr_pem(ec_key(), sans=[uri("spiffe://a.test/ns/default/sa/web")])
    wanted = _roots(pair.a.bundle_pem) | _roots(pair.b.bundle_pem)

    def bundle_element() -> str | None:
        last = pair.a.create_certificate(csr, token=pair.a.token())[-1]
        return last if _roots(last.encode()) == wanted else None
    last = eventually(bundle_element, "b.test's roots in the chain")
    assert last.startswith(pair.a.bundle_pem.decode())
    # Every process of a.test holds it: the metrics read the stored state.
    assert _metric(pair.a, "meshca_federation_bundle_present", trust_domain="b.test") == 1.0
    assert (_metric(pair.a, "meshca_federation_fetches_total", trust_domain="b.test",
                    outcome="ok") or 0) >= 1


@pytest.mark.parametrize("body, field", [
    ({"trust_domain": "c.test", "url": "https://x.test/", "profile": "ftp"}, "body.profile"),
    ({"trust_domain": "c.test", "url": "http://x.test/"}, "body.url"),
    ({"trust_domain": "a.test", "url": "https://x.test/"}, "body.trust_domain"),
    ({"trust_domain": "c.test", "url": "https://x.test/", "profile": "https_spiffe",
      "endpoint_spiffe_id": "spiffe://c.test/e"}, "body.bootstrap_bundle"),
    ({"trust_domain": "c.test", "url": "https://x.test/", "profile": "https_spiffe",
      "bootstrap_bundle": SOME_ROOT}, "body.endpoint_spiffe_id"),
    ({"trust_domain": "c.test", "url": "https://x.test/", "profile": "https_spiffe",
      "endpoint_spiffe_id": "spiffe://c.test/e", "bootstrap_bundle": "not a bundle"},
     "body.bootstrap_bundle"),
    ({"trust_domain": "c.test", "url": "https://x.test/", "profile": "https_spiffe",
      "bootstrap_bundle": SOME_ROOT},
     "body.endpoint_spiffe_id"),
    ({"trust_domain": "C!", "url": "https://x.test/"}, "body.trust_domain"),
])
def test_bad_relationships_are_problems(pair: Pair, body: dict[str, Any], field: str) -> None:
    response = pair.a_admin.post("/v1/federation", body, token=pair.a_token)
    assert response.status == 422, response.body
    assert response.content_type == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]
    assert pair.a_admin.get("/v1/federation/c.test", token=pair.a_token).status == 404


def test_duplicate_and_roles(pair: Pair) -> None:
    body = {"trust_domain": "d.test", "url": "https://127.0.0.1:9/", "profile": "https_web"}
    assert pair.a_admin.post("/v1/federation", body, token=pair.a_token).status == 201
    assert pair.a_admin.post("/v1/federation", body, token=pair.a_token).status == 409
    replaced = pair.a_admin.request("PUT", "/v1/federation/d.test", token=pair.a_token,
                                    json_body={**body, "url": "https://127.0.0.1:10/"})
    assert replaced.status == 200 and replaced.json()["url"] == "https://127.0.0.1:10/"
    listed = pair.a_admin.get("/v1/federation", token=pair.a_token).json()["items"]
    assert {"b.test", "d.test"} <= {item["trust_domain"] for item in listed}
    # Unreachable: no bundle, reported by /readyz without making the server unready.
    def warned() -> dict[str, Any] | None:
        response = pair.a_admin.get("/readyz")
        assert response.status == 200  # reported, never unready for it
        body: dict[str, Any] = response.json()
        return body if any("d.test" in w for w in body["warnings"]) else None
    assert eventually(warned, "a /readyz warning for d.test")["status"] == "ready"
    assert pair.a_admin.request("DELETE", "/v1/federation/d.test",
                                token=pair.a_token).status == 200
    assert pair.a_admin.request("DELETE", "/v1/federation/d.test",
                                token=pair.a_token).status == 404
    audit = pair.a_admin.get("/v1/audit?limit=500", token=pair.a_token).json()["items"]
    assert [e["action"] for e in audit if e["target"] == "d.test"][-3:] == [
        "federation.put", "federation.put", "federation.delete"]


def test_a_failing_foreign_endpoint_keeps_the_last_good_bundle(pair: Pair) -> None:
    c_root = make_ca("c.test root", spiffe_trust_domain="c.test")
    endpoint = ForeignEndpoint(pair.web_ca, pair.tmp)
    try:
        endpoint.body = bundle_document(c_root.cert, sequence=5)
        created = pair.a_admin.post("/v1/federation", {
            "trust_domain": "c.test", "url": endpoint.url, "profile": "https_web",
            "web_ca": pair.web_ca.pem}, token=pair.a_token)
        assert created.status == 201, created.body
        good = eventually(lambda: _bundle_of(pair.a_admin, pair.a_token, "c.test"),
                          "c.test's first bundle")
        assert good["bundle"]["sequence"] == 5
        other_root = make_ca("x.test root", spiffe_trust_domain="x.test")
        for mode, body, outcome in [
            ("down", b"", "unreachable"),
            ("slow", b"", "timeout"),
            ("garbage", b"", "invalid"),
            ("good", bundle_document(other_root.cert, sequence=6), "wrong_trust_domain"),
            ("good", bundle_document(c_root.cert, sequence=4), "stale_sequence"),
        ]:
            before = _metric(pair.a, "meshca_federation_fetches_total", trust_domain="c.test",
                             outcome=outcome) or 0
            endpoint.mode, endpoint.body = mode, body or endpoint.body
            eventually(lambda o=outcome, b=before: (_metric(  # type: ignore[misc]
                pair.a, "meshca_federation_fetches_total", trust_domain="c.test",
                outcome=o) or 0) > b, f"a fetch ending {outcome}")
            record = pair.a_admin.get("/v1/federation/c.test", token=pair.a_token).json()
            assert record["bundle"]["sequence"] == 5, mode  # the last good one
            assert record["last_outcome"] == outcome and record["last_error"]
            eventually(lambda: _metric(pair.a, "meshca_federation_fetch_failing",
                                       trust_domain="c.test") == 1.0, "the failing gauge")
        assert pair.a_admin.get("/healthz").status == 200
        # c.test's roots are in Istio's bundle element while the relationship lasts ...
        csr = csr_pem(ec_key(), sans=[uri("spiffe://a.test/ns/default/sa/web")])
        chain = pair.a.create_certificate(csr, token=pair.a.token())
        assert _roots(c_root.pem.encode()) <= _roots(chain[-1].encode())
        _admin_mtls_checks(pair, c_root)
        # ... and leave every process once it is deleted.
        assert pair.a_admin.request("DELETE", "/v1/federation/c.test",
                                    token=pair.a_token).status == 200

        def gone() -> bool:
            last = pair.a.create_certificate(csr, token=pair.a.token())[-1]
            return not (_roots(c_root.pem.encode()) & _roots(last.encode()))
        eventually(gone, "c.test's roots to leave the bundle element")
    finally:
        endpoint.close()


def _client(server: MeshcaProcess, cert_pem: str, key_pem: str) -> AdminClient:
    return AdminClient(server, cert_pem.encode(), key_pem.encode())


def _admin_mtls_checks(pair: Pair, c_root: Ca) -> None:
    """a.test's admin API trusts b.test's and c.test's roots for TLS; only b.test's roots
    vouch for b.test IDs, and only a mapped ID gets a role."""
    key = ec_key()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    b_chain = pair.b.create_certificate(
        csr_pem(key, sans=[uri("spiffe://b.test/ns/ops/sa/viewer")]),
        token=pair.b.token("ops", "viewer"))
    client_chain = "".join(b_chain[:-1])  # leaf and intermediates, not the bundle
    assert _client(pair.a, client_chain, key_pem).get("/v1/ca").status == 200
    other_key = ec_key()
    other_pem = other_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    unmapped = pair.b.create_certificate(
        csr_pem(other_key, sans=[uri("spiffe://b.test/ns/ops/sa/other")]),
        token=pair.b.token("ops", "other"))
    assert _client(pair.a, "".join(unmapped[:-1]), other_pem).get("/v1/ca").status == 403
    # c.test's root is trusted for TLS, but never vouches for b.test's or a.test's IDs.
    for forged in ("spiffe://b.test/ns/ops/sa/viewer", "spiffe://a.test/ns/ops/sa/viewer"):
        cert, forged_key = issue(c_root, uri=forged)
        assert _client(pair.a, cert, forged_key).get("/v1/ca").status == 401, forged
