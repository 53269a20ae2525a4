"""The admin REST API against its own OpenAPI document, by property-based testing.

Schemathesis loads `/openapi.json` from a real `meshca serve` (over HTTPS, verified against the
trust bundle, with the bootstrap admin token: the document itself needs the viewer role), then
for every operation sends generated requests, valid and invalid, a bounded number from a fixed
seed, and checks every answer: never a 5xx; status code, content type, headers and body as
documented; invalid input refused; undocumented methods 405 with a true `Allow`; no operation
that documents authentication answers 2xx without it. Mutating operations run too (revoke,
block, token create and revoke): the server is a throwaway. The same checks then judge
hand-picked requests that random generation rarely reaches: successes on real resources, and
inputs that once made the API answer 500.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
from cryptography import x509
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.support import MeshcaProcess, csr_pem, postgres_url, reset_postgres, start_meshca

MAX_EXAMPLES = 40  # per operation, for the fuzzing phase (the coverage phase adds its own)
SEED = 20240917
FUZZER_TOKEN = "bootstrap-admin"  # the token the run authenticates with; see _spare_own_token
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    unsupported_method,
    allow_header_conformance,
    ignored_auth,
]
PEM = "application/x-pem-file"
PKIX_CRL = "application/pkix-crl"


def _database_url(kind: str) -> str | None:
    """None for the embedded SQLite; the emptied PostgreSQL test database otherwise."""
    if kind == "sqlite":
        return None
    url = postgres_url()  # as the `pg_url` fixture, which is function-scoped
    if not url:
        if os.environ.get("CI"):
            pytest.fail("MESHCA_TEST_POSTGRES_URL is not set in CI")
        pytest.skip("MESHCA_TEST_POSTGRES_URL is not set")
    reset_postgres(url)
    return url


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def admin_server(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    url = _database_url(request.param)
    server = start_meshca(tmp_path_factory.mktemp(f"openapi-{request.param}") / "data", database_url=url)
    try:
        # A few records, so listing, paging, fetching and revoking have something to work on.
        for namespace, account in (("default", "web"), ("shop", "cart"), ("shop", "cart")):
            server.create_certificate(csr_pem(), token=server.token(namespace, account))
        yield server
    finally:
        server.stop()


def _base_url(server: MeshcaProcess) -> str:
    # The serving certificate always names `localhost`; an IP SAN for 127.0.0.1 is not promised.
    return f"https://localhost:{server.admin_addr.rsplit(':', 1)[1]}"


def _auth(server: MeshcaProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {(server.data_dir / 'admin-token').read_text().strip()}"}


def _bundle(server: MeshcaProcess) -> str:
    return str(server.data_dir / "root-cert.pem")


@pytest.fixture(scope="module")
def admin_schema(admin_server: MeshcaProcess) -> Any:
    base_url = _base_url(admin_server)
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": base_url,
        "headers": _auth(admin_server),
        "tls-verify": _bundle(admin_server),
        "request-timeout": 30,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "mode": "all"},
        "checks": {
            # Schema-valid input may still be refused with a documented 400 when only the server
            # can tell (a cursor it never issued, a '.' segment in a SPIFFE ID); a 422 for it
            # would mean the document and the validation disagree, and stays a failure.
            "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "409"]},
        },
        # An AuthorizationPolicy or request body is any JSON object to the schema; Istio's rules
        # (and this request shape's) are checked by the server, which answers 422 with the field
        # paths. Those 422s are the validation working, not the document disagreeing with it.
        # The same for federation relationships: whether a URL is https, a bundle parses or a
        # trust domain is this server's own is the server's to say.
        "operations": [{
            "include-path-regex": "^/v1/(authz|federation)",
            "checks": {"positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "422"]}},
        }],
    })
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config,
                                           headers=_auth(admin_server),
                                           verify=_bundle(admin_server), timeout=30)

    @schema.hook
    def filter_case(context: schemathesis.HookContext, case: schemathesis.Case[Any]) -> bool:
        return _spare_own_token(case)

    return schema


def _spare_own_token(case: schemathesis.Case[Any]) -> bool:
    """Every token may be revoked but the run's own: schemathesis can learn names from responses
    (its CLI, run by hand, revoked this one after GET /v1/admin-tokens listed it), and every
    later answer would then be a 401."""
    return not (case.operation.path == "/v1/admin-tokens/{name}:revoke"
                and (case.path_parameters or {}).get("name") == FUZZER_TOKEN)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32's lazy schema reads and rewrites the private `Item._nodeid`, which
    # pytest 9.2 no longer has (the id lives in `_id`): give it the attribute it expects.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


Call = Callable[..., Any]


@pytest.fixture
def call(admin_server: MeshcaProcess, admin_schema: Any) -> Call:
    """Send one hand-made request of a documented operation, judged by the same checks."""

    def send(method: str, path: str, expected: set[int], **parts: Any) -> Any:
        parts = dict(parts)
        if "path_parameters" in parts:  # generated values arrive encoded; these must be too
            parts["path_parameters"] = {k: quote(v, safe="") for k, v in parts["path_parameters"].items()}
        case = admin_schema[path][method].Case(**parts)
        response = case.call_and_validate(headers=_auth(admin_server), checks=CHECKS)
        assert response.status_code in expected, (method, path, parts, response.status_code, response.text)
        return response

    return send


def test_successes_on_real_resources_conform(admin_server: MeshcaProcess, call: Call) -> None:
    """Generated serials, IDs and names almost never exist; these requests use real ones."""
    chain = admin_server.create_certificate(csr_pem(), token=admin_server.token("pay", "api"))
    serial = f"{x509.load_pem_x509_certificate(chain[0].encode()).serial_number:x}"
    page = call("GET", "/v1/certificates", {200}, query={"limit": 1}).json()
    call("GET", "/v1/certificates", {200}, query={"cursor": page["next_cursor"]})
    call("GET", "/v1/certificates", {200}, query={
        "namespace": "pay", "service_account": "api", "active": "true",
        "spiffe_id_prefix": "spiffe://cluster.local/ns/pay/", "expiring_before": "2999-01-01T00:00:00Z"})
    call("GET", "/v1/certificates/{serial}", {200}, path_parameters={"serial": serial})
    revoke = "/v1/certificates/{serial}:revoke"
    call("POST", revoke, {200}, path_parameters={"serial": serial}, body={"reason": "keyCompromise"})
    call("POST", revoke, {409}, path_parameters={"serial": serial}, body={"reason": "superseded"})
    call("GET", "/v1/crl", {200})
    call("GET", "/v1/crl", {200}, headers={"Accept": PKIX_CRL})
    call("GET", "/v1/bundle", {200})
    call("GET", "/v1/bundle", {200}, headers={"Accept": PEM})
    call("GET", "/v1/ca", {200})

    identity = {"spiffe_id": "spiffe://cluster.local/ns/pay/sa/api"}
    block, unblock = "/v1/identities/{spiffe_id}:block", "/v1/identities/{spiffe_id}:unblock"
    call("POST", block, {200}, path_parameters=identity, body={"reason": "incident 7"})
    call("POST", block, {409}, path_parameters=identity)
    call("GET", "/v1/identities:blocked", {200})
    call("POST", unblock, {200}, path_parameters=identity)
    call("POST", unblock, {404}, path_parameters=identity)

    call("POST", "/v1/admin-tokens", {201}, body={"name": "ci-deploy", "role": "viewer"})
    call("POST", "/v1/admin-tokens", {409}, body={"name": "ci-deploy", "role": "admin"})
    call("GET", "/v1/admin-tokens", {200})
    token = {"name": "ci-deploy"}
    call("POST", "/v1/admin-tokens/{name}:revoke", {200}, path_parameters=token)
    call("POST", "/v1/admin-tokens/{name}:revoke", {404}, path_parameters=token)
    audit = call("GET", "/v1/audit", {200}, query={"limit": 2}).json()
    call("GET", "/v1/audit", {200}, query={"cursor": audit["next_cursor"]})


def _cursor(issued_at: str, serial: str) -> str:
    """A certificates cursor as the API encodes one (for values it would never issue)."""
    raw = json.dumps({"t": issued_at, "s": serial}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Each once answered 500, or 2xx to input the document calls invalid. (method, path, allowed
# statuses, parts of the request)
EDGE_CASES = [
    pytest.param("GET", "/v1/audit", {400}, {"query": {"cursor": "²"}}, id="audit-cursor-superscript-two"),
    pytest.param("GET", "/v1/audit", {400}, {"query": {"cursor": "9" * 19}}, id="audit-cursor-past-int64"),
    pytest.param("GET", "/v1/audit", {200}, {"query": {"cursor": "9" * 18}}, id="audit-cursor-18-digits"),
    pytest.param("GET", "/v1/certificates", {422}, {"query": {"expiring_before": "0.5"}},
                 id="expiring-before-unix-time"),
    pytest.param("GET", "/v1/certificates", {422}, {"query": {"expiring_before": "2026-01-01"}},
                 id="expiring-before-date"),
    pytest.param("GET", "/v1/certificates", {422}, {"query": {"expiring_before": "2026-01-01T00:00:00"}},
                 id="expiring-before-no-zone"),
    # RFC 3339 times whose UTC form is outside Python's datetime range.
    pytest.param("GET", "/v1/certificates", {200, 422},
                 {"query": {"expiring_before": "0001-01-01T00:00:00+14:00"}}, id="expiring-before-year-1"),
    pytest.param("GET", "/v1/certificates", {200, 422},
                 {"query": {"expiring_before": "9999-12-31T23:59:59-14:00"}}, id="expiring-before-year-9999"),
    pytest.param("GET", "/v1/certificates", {200, 400},
                 {"query": {"cursor": _cursor("0001-01-01T00:00:00+14:00", "1")}}, id="cursor-year-1"),
    # NUL, which PostgreSQL refuses in text.
    pytest.param("GET", "/v1/certificates", {400},
                 {"query": {"cursor": _cursor("2026-01-01T00:00:00+00:00", "\x00")}}, id="cursor-nul-serial"),
    pytest.param("GET", "/v1/certificates", {422}, {"query": {"namespace": "a\x00"}}, id="namespace-nul"),
    pytest.param("GET", "/v1/certificates", {422}, {"query": {"service_account": "\x00"}},
                 id="service-account-nul"),
    pytest.param("GET", "/v1/certificates", {422}, {"query": {"spiffe_id_prefix": "spiffe://\x00"}},
                 id="spiffe-id-prefix-nul"),
    pytest.param("POST", "/v1/identities/{spiffe_id}:block", {422},
                 {"path_parameters": {"spiffe_id": "spiffe://cluster.local/x"}, "body": {"reason": "a\x00b"}},
                 id="block-reason-nul"),
    # Within the documented pattern, refused by a SPIFFE ID rule the pattern does not express.
    pytest.param("POST", "/v1/identities/{spiffe_id}:block", {400},
                 {"path_parameters": {"spiffe_id": "spiffe://td/a/.."}}, id="block-dot-dot-segment"),
]


@pytest.mark.parametrize(("method", "path", "expected", "parts"), EDGE_CASES)
def test_edge_inputs_are_answered_as_documented(call: Call, method: str, path: str,
                                                expected: set[int], parts: dict[str, Any]) -> None:
    call(method, path, expected, **parts)


schema = schemathesis.pytest.from_fixture("admin_schema")


@schema.parametrize()
def test_admin_api_conforms_to_its_openapi(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(checks=CHECKS)


def test_the_run_kept_its_own_token(admin_server: MeshcaProcess) -> None:
    """The run above proves nothing if its token was revoked and it saw only 401s."""
    response = requests.get(f"{_base_url(admin_server)}/v1/admin-tokens", headers=_auth(admin_server),
                            verify=_bundle(admin_server), timeout=30)
    assert response.status_code == 200, response.text
    assert {t["name"]: t["revoked_at"] for t in response.json()}[FUZZER_TOKEN] is None
