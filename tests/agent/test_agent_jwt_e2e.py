"""A real `meshca agent` process serving the JWT half of the Workload API and federated
bundles, against the in-process fake SvidService (tests/fakes/svid_server.py: real TLS,
tokens and SPIFFE bundles), with py-spiffe as the workload and PyJWT as an independent
validator of what the agent hands out."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from spiffe import JwtSource, TrustDomain, WorkloadApiClient
from spiffe.bundle.jwt_bundle.jwt_bundle_set import JwtBundleSet

from tests.agent.agent_process import AgentProcess, cleanup, public_dir, start_agent_at
from tests.fakes.agent_server import fake_authority
from tests.fakes.svid_server import TOKEN, FakeSvidServer
from tests.unit.pki import TRUST_DOMAIN, ec_key

WEB = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/web"
FOREIGN = "b.test"
TIMEOUT = 20.0
FOREIGN_ROOTS = fake_authority(9).chain  # ECDSA signatures differ per call: made once


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSvidServer]:
    server = FakeSvidServer(refresh_hint=1).start()
    server.federate(FOREIGN, FOREIGN_ROOTS, {"foreign-1": ec_key("secp256r1", 930)
                                                       .public_key()})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def agent(fake: FakeSvidServer) -> Iterator[AgentProcess]:
    directory = public_dir()
    token = directory / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    ca = directory / "server-ca.pem"
    ca.write_bytes(fake.ca_pem)
    process = start_agent_at(fake.address, ca, token, directory, "--attestor", "unix",
                             "--workload", f"web=uid:{os.getuid()}={WEB}")
    yield process
    cleanup(directory, process)


@pytest.fixture
def client(agent: AgentProcess) -> Iterator[WorkloadApiClient]:
    workload = WorkloadApiClient(socket_path=agent.endpoint, default_timeout=TIMEOUT)
    yield workload
    workload.close()


def test_a_jwt_svid_from_the_agent_validates_independently(
        client: WorkloadApiClient, fake: FakeSvidServer, agent: AgentProcess) -> None:
    mints = fake.mints
    svid = client.fetch_jwt_svid(audience={"db"})
    assert str(svid.spiffe_id) == WEB
    assert client.fetch_jwt_svid(audience={"db"}).token == svid.token  # cached
    assert fake.mints == mints + 1
    assert fake.minted[-1][:2] == (WEB, ("db",))
    # PyJWT, with nothing but the key the agent's JWT bundle names by the token's kid.
    bundles = client.fetch_jwt_bundles()
    own = bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert own is not None
    kid = pyjwt.get_unverified_header(svid.token)["kid"]
    key = own.get_jwt_authority(kid)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    claims = pyjwt.decode(svid.token, key, algorithms=["ES256"], audience="db")
    assert claims["sub"] == WEB
    assert str(client.validate_jwt_svid(svid.token, "db").spiffe_id) == WEB
    assert svid.token not in agent.log_text()
    assert agent.metric("meshca_agent_svids_served_total", api="workload_jwt_svid") >= 1
    assert agent.metric("meshca_agent_jwt_validations_total", outcome="ok") >= 1


def test_jwt_source_and_refusals(agent: AgentProcess, fake: FakeSvidServer,
                                 client: WorkloadApiClient) -> None:
    source = JwtSource(workload_api_client=client, timeout_in_seconds=TIMEOUT)
    try:
        svid = source.fetch_svid(audience={"cache"})
        assert str(svid.spiffe_id) == WEB
        assert source.get_bundle_for_trust_domain(TrustDomain(FOREIGN)) is not None
    finally:
        source.close()
    expired = fake.mint(WEB, ["db"], exp=int(time.time()) - 600)
    before = agent.metric("meshca_agent_jwt_validations_total", outcome="expired")
    with pytest.raises(Exception, match="expired"):
        client.validate_jwt_svid(expired, "db")
    assert agent.metric("meshca_agent_jwt_validations_total", outcome="expired") == before + 1


def test_federated_bundles_reach_the_workload(client: WorkloadApiClient) -> None:
    x509_bundles = client.fetch_x509_bundles()
    foreign = x509_bundles.get_bundle_for_trust_domain(TrustDomain(FOREIGN))
    own = x509_bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert foreign is not None and own is not None
    assert list(foreign.x509_authorities) == list(FOREIGN_ROOTS)
    assert FOREIGN_ROOTS[0] not in own.x509_authorities
    context = client.fetch_x509_context()
    assert context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(FOREIGN)) is not None
    jwt_bundles = client.fetch_jwt_bundles()
    foreign_jwt = jwt_bundles.get_bundle_for_trust_domain(TrustDomain(FOREIGN))
    assert foreign_jwt is not None and foreign_jwt.get_jwt_authority("foreign-1") is not None


def test_a_new_jwt_key_is_pushed_on_an_open_stream(client: WorkloadApiClient,
                                                   fake: FakeSvidServer) -> None:
    updates: queue.Queue[JwtBundleSet] = queue.Queue()
    errors: list[Exception] = []
    handle = client.stream_jwt_bundles(updates.put, errors.append, retry_connect=False)
    try:
        updates.get(timeout=TIMEOUT)
        kid = fake.rotate_jwt_key()
        deadline = time.monotonic() + TIMEOUT
        while True:
            update = updates.get(timeout=max(0.1, deadline - time.monotonic()))
            own = update.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
            if own is not None and own.get_jwt_authority(kid) is not None:
                break
        # A token signed with the new key validates through the agent at once.
        token = fake.mint(WEB, ["db"])
        assert str(client.validate_jwt_svid(token, "db").spiffe_id) == WEB
        assert errors == []
    finally:
        handle.cancel()

