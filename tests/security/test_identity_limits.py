"""Identity limits before anything is signed: a SPIFFE ID is at most 2,048 bytes and its trust
domain 255; a namespace is a DNS label of at most 63 characters and a service-account name a
DNS subdomain of at most 253. A token, an ImpersonatedIdentity or an admin role mapping that
breaks them is refused (UNAUTHENTICATED / 401 / a start-up error), and nothing is recorded."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from meshca.core.kube_names import check_namespace, check_service_account
from meshca.core.spiffe import SpiffeId
from tests.security.limits_support import metric
from tests.support import AdminClient, MeshcaProcess, csr_pem, start_meshca

LONG = "a" * 3000
NODE_AGENT = ("kube-system", "ztunnel")

# ---- the rules ------------------------------------------------------------------------------


def test_spiffe_ids_over_the_spec_limits_cannot_be_made_at_all() -> None:
    with pytest.raises(ValueError, match="2048 bytes"):
        SpiffeId("cluster.local", "/x/" + "a" * 2040)
    with pytest.raises(ValueError, match="255 bytes"):
        SpiffeId("a" * 256, "")
    with pytest.raises(ValueError, match="2048 bytes"):
        SpiffeId.for_service_account("cluster.local", "default", "a" * 2100)
    longest = SpiffeId("cluster.local", "/" + "a" * (2048 - len("spiffe://cluster.local/")))
    assert len(longest.uri.encode()) == 2048 and SpiffeId.parse(longest.uri) == longest


@pytest.mark.parametrize("namespace", ["a" * 63, "default", "istio-system", "a1"])
def test_kubernetes_namespaces_that_exist_are_accepted(namespace: str) -> None:
    check_namespace(namespace)


@pytest.mark.parametrize("namespace", ["a" * 64, "a.b", "A", "-a", "a-", "", "a_b"])
def test_names_no_namespace_can_have_are_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        check_namespace(namespace)


@pytest.mark.parametrize("name", ["a" * 253, "web", "web.v1-2", "a" * 100 + "." + "b" * 100])
def test_service_account_names_that_exist_are_accepted(name: str) -> None:
    check_service_account(name)


@pytest.mark.parametrize("name", ["a" * 254, LONG, "Web", "web.", ".web", "a..b", "a_b", ""])
def test_names_no_service_account_can_have_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="service-account name"):
        check_service_account(name)


# ---- a real server -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    process = start_meshca(tmp_path_factory.mktemp("limits") / "data",
                           "--trusted-node-account", "/".join(NODE_AGENT),
                           "--admin-service-account", "ops/admin-sa=admin")
    yield process
    process.stop()


def _refused(server: MeshcaProcess, **kw: object) -> str:
    before = server.issued_count()
    with pytest.raises(grpc.RpcError) as raised:
        server.create_certificate(csr_pem(), **kw)  # type: ignore[arg-type]
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert server.issued_count() == before, "nothing may be recorded"
    details = error.details() or ""
    assert LONG[:100] not in details  # the huge name is not echoed back
    return details


@pytest.mark.parametrize(("namespace", "account", "message"), [
    ("default", LONG, "service-account name is longer than 253 characters"),
    ("n" * 64, "web", "namespace is longer than 63 characters"),
    ("Shop", "web", "namespace is not a DNS label"),
    ("shop", "web_1", "service-account name is not a DNS subdomain"),
])
def test_a_token_for_a_name_kubernetes_never_issues_is_refused_before_signing(
        server: MeshcaProcess, namespace: str, account: str, message: str) -> None:
    before = metric(server, "meshca_authentication_failures_total", reason="subject")
    details = _refused(server, token=server.token(namespace, account))
    assert "cannot form a SPIFFE ID" in details and message in details
    assert metric(server, "meshca_authentication_failures_total", reason="subject") == before + 1


def test_the_longest_real_names_are_still_served(server: MeshcaProcess) -> None:
    namespace, account = "n" * 63, "s" * 253
    chain = server.create_certificate(csr_pem(), token=server.token(namespace, account))
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    [uri] = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier)
    assert uri == f"spiffe://cluster.local/ns/{namespace}/sa/{account}"


@pytest.mark.parametrize(("target", "message"), [
    (f"spiffe://cluster.local/ns/default/sa/{'a' * 300}", "names no Kubernetes service account"),
    (f"spiffe://cluster.local/ns/{'n' * 64}/sa/web", "names no Kubernetes service account"),
    (f"spiffe://cluster.local/ns/default/sa/{LONG}", "not a workload SPIFFE ID"),
])
def test_impersonating_a_name_kubernetes_never_issues_is_refused(
        server: MeshcaProcess, target: str, message: str) -> None:
    details = _refused(server, token=server.token(*NODE_AGENT),
                       struct={"ImpersonatedIdentity": target})
    assert message in details


def test_the_node_agent_still_impersonates_real_names(server: MeshcaProcess) -> None:
    chain = server.create_certificate(
        csr_pem(), token=server.token(*NODE_AGENT),
        struct={"ImpersonatedIdentity": "spiffe://cluster.local/ns/shop/sa/cart"})
    assert len(chain) >= 2


def test_an_admin_token_for_an_impossible_account_is_unauthenticated(server: MeshcaProcess) -> None:
    token = server.token("ops", LONG, audiences=["meshca-admin"])
    response = AdminClient(server).get("/v1/ca", token=token)
    assert response.status == 401, response.body
    assert b"cannot form a SPIFFE ID" in response.body and LONG[:100].encode() not in response.body


@pytest.mark.parametrize("flag", [
    f"--admin-service-account=ops/{LONG}=admin",
    "--admin-service-account=Ops/admin=admin",
    f"--trusted-node-account=kube-system/{'z' * 254}",
    f"--admin-spiffe-id=spiffe://cluster.local/{LONG}=admin",
])
def test_role_mappings_that_name_impossible_identities_stop_start_up(tmp_path: Path,
                                                                      flag: str) -> None:
    result = subprocess.run([sys.executable, "-m", "meshca", "serve", "--data-dir",
                             str(tmp_path / "data"), flag], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    assert "longer than" in result.stderr or "not a DNS label" in result.stderr
    assert not (tmp_path / "data").exists()
