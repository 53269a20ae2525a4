"""IssuanceService (the CreateCertificate use case) on in-memory ports and a fake clock: the
token path, renewal by a meshca-issued certificate, node-agent impersonation and its audit,
CSR and lifetime rules, CertSigner, blocked identities, an unavailable CA, rate limits and
the refusal summary. No server, no database, no sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshca.core import templates
from meshca.core.authority import SigningAuthority
from meshca.core.certificates import format_serial
from meshca.core.keys import describe_public_key
from meshca.core.lifetime import LifetimePolicy
from meshca.core.rate_limit import RateLimit
from meshca.core.remote_signing import LocalSigner, SignerUnavailable, SigningPublicKey
from meshca.core.sa_token import ServiceAccount
from meshca.core.spiffe import SpiffeId
from meshca.errors import (
    AuthenticationError,
    CaUnavailable,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
)
from meshca.service.issuance import (
    CertificateRequest,
    IssuanceService,
    IssuedChain,
)
from meshca.service.ports import AuditSink, CertificateLog, WorkloadTokens
from meshca.service.rate_limits import IssuanceRateLimits
from meshca.service.refusal_summary import RefusalSummary
from tests.fakes.audit import FakeAuditLog
from tests.fakes.certificate_log import FakeCertificateLog
from tests.fakes.clock import FakeClock
from tests.fakes.workload_tokens import FakeWorkloadTokens
from tests.unit.pki import NOW, csr_pem, ec_key, ed25519_key, make_authority

TD = "cluster.local"
WEB = ServiceAccount("shop", "web", pod_name="web-0", pod_uid="uid-web-0", node_name="n1",
                     expires_at=int(NOW.timestamp()) + 3600)
DB = ServiceAccount("shop", "db")
AGENT = ServiceAccount("kube-system", "ztunnel", pod_name="ztunnel-n1", node_name="n1")
WEB_ID, DB_ID = (f"spiffe://{TD}/ns/shop/sa/{n}" for n in ("web", "db"))
AGENT_ID = f"spiffe://{TD}/ns/kube-system/sa/ztunnel"
LIFETIMES = LifetimePolicy(timedelta(hours=1), timedelta(hours=24), timedelta(minutes=5))
PEER = "10.0.0.7:40112"
KEY = ec_key("secp256r1", 30)
CSR = csr_pem(KEY)


class FlakySigner:
    """A remote signer (as Vault Transit): signs to-be-signed bytes, and can be switched off."""

    def __init__(self) -> None:
        self._key = LocalSigner(ec_key("secp256r1", 101))  # make_authority's intermediate key
        self.down = False
        self.signed = 0

    @property
    def public_key(self) -> SigningPublicKey:
        return self._key.public_key

    def sign(self, tbs: bytes) -> bytes:
        if self.down:
            raise SignerUnavailable("vault is sealed")
        self.signed += 1
        return self._key.sign(tbs)


class World:
    def __init__(self, *, authority: SigningAuthority | None = None,
                 rate_limits: IssuanceRateLimits | None = None,
                 max_renewal_age: timedelta = timedelta(days=7),
                 clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock(NOW)
        self.workloads = FakeWorkloadTokens(
            {"web": WEB, "db": DB, "agent": AGENT,
             "expired": AuthenticationError("token has expired", reason="expired"),
             "odd-name": ServiceAccount("Shop", "web")},
            clusters={"west": {"west-web": ServiceAccount("shop", "web", pod_name="web-w")}},
            node_agents={"kube-system/ztunnel": {"shop/web"}})
        self.log = FakeCertificateLog()
        self.audit = FakeAuditLog()
        self.authority = authority or make_authority()
        self.authority_error: Exception | None = None
        self.codes: list[str] = []
        workloads: WorkloadTokens = self.workloads  # the fakes satisfy the ports
        log: CertificateLog = self.log
        audit: AuditSink = self.audit
        self.service = IssuanceService(
            trust_domain=TD, workloads=workloads, authority=self._authority,
            lifetimes=LIFETIMES, certificate_log=log, audit=audit, clock=self.clock,
            refusals=RefusalSummary(counted=self.codes.append), rate_limits=rate_limits,
            max_renewal_age=max_renewal_age)

    def _authority(self) -> SigningAuthority:
        if self.authority_error is not None:
            raise self.authority_error
        return self.authority

    def issue(self, caller: str | None = "web", *, csr: str = CSR, ttl: int = 0,
              metadata: Mapping[str, object] | None = None, certificate: bytes | None = None,
              cluster_id: str | None = None, peer: str = PEER,
              authorization: Sequence[str] | None = None) -> IssuedChain:
        if authorization is None:
            authorization = [f"Bearer {caller}"] if caller is not None else []
        request = CertificateRequest(csr_pem=csr, validity_seconds=ttl, metadata=metadata or {},
                                     authorization=authorization, cluster_id=cluster_id,
                                     peer_certificate=certificate, peer=peer)
        return asyncio.run(self.service.create_certificate(request))

    def refused(self) -> list[tuple[str, str, str, str]]:
        """The refusal summary's rows: (actor, target, outcome, detail)."""
        return [(e.actor, e.target, e.outcome, e.detail or "") for e in self.service.refusals.take()]


def leaf(chain: IssuedChain) -> x509.Certificate:
    return x509.load_pem_x509_certificate(chain.cert_chain[0].encode())


def uris(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert len(list(san)) == len(san.get_values_for_type(x509.UniformResourceIdentifier))
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def der(chain: IssuedChain) -> bytes:
    return leaf(chain).public_bytes(Encoding.DER)


@pytest.fixture
def world() -> World:
    return World()


# ---- the token path -------------------------------------------------------------------------

def test_a_token_gets_a_leaf_for_its_identity_recorded_with_its_pod(world: World) -> None:
    chain = world.issue("web")
    cert = leaf(chain)
    assert uris(cert) == [WEB_ID] and chain.spiffe_id.uri == WEB_ID
    assert chain.serial == format_serial(cert.serial_number)
    assert cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == \
        KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    cert.verify_directly_issued_by(world.authority.certificate)
    # Istio's layout: leaf, the intermediates, and the whole bundle last.
    assert chain.cert_chain[1:] == (*world.authority.chain_pem, world.authority.bundle.pem)
    (record,) = world.log.records.values()
    assert (record.serial, record.spiffe_id, record.namespace, record.service_account) == (
        chain.serial, WEB_ID, "shop", "web")
    assert (record.pod_name, record.pod_uid) == ("web-0", "uid-web-0")
    assert record.issuer_generation_id == world.authority.generation_id
    assert record.issued_at == record.token_checked_at == NOW
    assert (record.not_before, record.not_after) == (cert.not_valid_before_utc,
                                                     cert.not_valid_after_utc)
    assert record.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert record.key_type == describe_public_key(KEY.public_key())
    assert record.certificate_pem == chain.cert_chain[0]
    assert world.workloads.calls == ["web"]
    assert world.refused() == [] and world.audit.entries == []


@pytest.mark.parametrize(("token", "cluster", "identity"), [
    ("web", None, WEB_ID), ("db", None, DB_ID), ("agent", None, AGENT_ID),
    ("west-web", "west", WEB_ID)])
def test_the_certificate_names_exactly_the_callers_identity(
        world: World, token: str, cluster: str | None, identity: str) -> None:
    assert uris(leaf(world.issue(token, cluster_id=cluster))) == [identity]
    # A CSR naming the caller is fine; one naming anyone else is refused, whatever its subject.
    own = csr_pem(KEY, sans=[x509.UniformResourceIdentifier(identity)])
    assert uris(leaf(world.issue(token, csr=own, cluster_id=cluster))) == [identity]
    for other in (WEB_ID, DB_ID, AGENT_ID, f"spiffe://elsewhere/ns/shop/sa/{token}"):
        if other == identity:
            continue
        csr = csr_pem(KEY, sans=[x509.UniformResourceIdentifier(other)])
        with pytest.raises(InvalidRequest, match="identity other than the caller's"):
            world.issue(token, csr=csr, cluster_id=cluster)
    assert {r.spiffe_id for r in world.log.records.values()} == {identity}
    assert len(world.log.records) == 2


@pytest.mark.parametrize(("authorization", "words", "code"), [
    ([], "no authorization metadata", "missing"),
    (["bearer web"], "must start with 'Bearer '", "malformed"),
    (["Bearer web", "Bearer web"], "more than one authorization value", "malformed"),
    (["Bearer nobody"], "not a JWT", "malformed"),
    (["Bearer expired"], "token has expired", "expired"),
])
def test_a_caller_without_an_acceptable_token_is_refused_and_summarised(
        world: World, authorization: list[str], words: str, code: str) -> None:
    with pytest.raises(AuthenticationError, match=words):
        world.issue(authorization=authorization)
    assert world.log.records == {}
    assert world.codes == [code]
    ((actor, target, outcome, detail),) = world.refused()
    assert (actor, target, outcome) == ("grpc:10.0.0.7", "", "refused")
    assert detail.startswith("1 refusal: ") and words in detail


def test_a_token_of_an_unknown_cluster_or_the_wrong_one_is_refused(world: World) -> None:
    with pytest.raises(AuthenticationError, match="unknown cluster id"):
        world.issue("west-web", cluster_id="nowhere")
    with pytest.raises(AuthenticationError):
        world.issue("west-web")  # no clusterid: the local cluster, which does not know it
    assert world.codes == ["cluster", "malformed"] and world.log.records == {}


def test_a_token_whose_names_cannot_form_a_spiffe_id_is_refused(world: World) -> None:
    with pytest.raises(AuthenticationError, match="cannot form a SPIFFE ID"):
        world.issue("odd-name")
    assert world.codes == ["subject"]


# ---- renewal by certificate -----------------------------------------------------------------

def test_a_meshca_certificate_renews_without_a_token_and_inherits_the_token_check(
        world: World) -> None:
    first = world.issue("web")
    world.clock.advance(timedelta(minutes=30))
    renewed = world.issue(None, certificate=der(first))
    assert uris(leaf(renewed)) == [WEB_ID] and renewed.serial != first.serial
    assert world.workloads.calls == ["web"]  # no token was looked at for the renewal
    record = world.log.records[renewed.serial]
    assert record.issued_at == NOW + timedelta(minutes=30)
    assert record.token_checked_at == NOW  # the lineage's last token check, not now
    assert (record.pod_name, record.pod_uid) == (None, None)


def test_a_token_wins_over_a_presented_certificate(world: World) -> None:
    first = world.issue("web")
    world.clock.advance(timedelta(minutes=10))
    chain = world.issue("db", certificate=der(first))
    assert uris(leaf(chain)) == [DB_ID]
    assert world.log.records[chain.serial].token_checked_at == NOW + timedelta(minutes=10)


def test_a_revoked_or_unknown_certificate_cannot_renew(world: World) -> None:
    revoked, unknown = world.issue("web"), world.issue("web")
    world.log.revoke(revoked.serial)
    world.log.forget(unknown.serial)
    for chain in (revoked, unknown):
        with pytest.raises(AuthenticationError, match="authenticate with a token"):
            world.issue(None, certificate=der(chain))
    assert len(world.log.records) == 1 and world.codes == ["certificate", "certificate"]
    ((_, target, _, detail),) = world.refused()
    assert target == WEB_ID and detail.startswith("2 refusals:")


def test_renewal_by_certificate_needs_a_recent_token_check_in_the_lineage() -> None:
    world = World(max_renewal_age=timedelta(minutes=30))
    first = world.issue("web")
    world.clock.advance(timedelta(minutes=20))
    second = world.issue(None, certificate=der(first))  # 20 min after the token: fine
    world.clock.advance(timedelta(minutes=20))
    with pytest.raises(AuthenticationError, match="present a service-account token") as info:
        world.issue(None, certificate=der(second))  # the lineage's token is 40 min old
    assert info.value.reason == "renewal_age"
    fresh = world.issue("web")  # a token starts a new lineage
    assert uris(leaf(world.issue(None, certificate=der(fresh)))) == [WEB_ID]
    assert world.codes == ["renewal_age"]


@pytest.mark.parametrize(("metadata", "cluster", "words"), [
    ({"ImpersonatedIdentity": WEB_ID}, None, "impersonation needs a node agent's token"),
    ({}, "west", "clusterid applies to tokens only"),
])
def test_a_certificate_cannot_impersonate_or_pick_a_cluster(
        world: World, metadata: dict[str, object], cluster: str | None, words: str) -> None:
    first = world.issue("web")
    with pytest.raises(AuthenticationError, match=words):
        world.issue(None, certificate=der(first), metadata=metadata, cluster_id=cluster)
    assert list(world.log.records) == [first.serial]


def test_an_expired_or_foreign_certificate_cannot_renew(world: World) -> None:
    first = world.issue("web")
    world.clock.advance(timedelta(hours=2))  # the leaf lived one hour
    with pytest.raises(AuthenticationError, match="not valid now"):
        world.issue(None, certificate=der(first))
    authority = world.authority
    foreign = authority.sign(templates.leaf_svid(
        public_key=KEY.public_key(), spiffe_id=SpiffeId.for_service_account("evil.example",
                                                                             "shop", "web"),
        issuer=authority.certificate, serial=x509.random_serial_number(),
        not_before=world.clock.now() - timedelta(minutes=1),
        not_after=world.clock.now() + timedelta(hours=1)))
    with pytest.raises(AuthenticationError, match="not a workload identity of this trust domain"):
        world.issue(None, certificate=foreign.public_bytes(Encoding.DER))
    with pytest.raises(AuthenticationError, match="exactly one SPIFFE ID"):
        world.issue(None, certificate=b"not DER at all")
    assert world.codes == ["certificate"] * 3 and len(world.log.records) == 1


# ---- impersonation --------------------------------------------------------------------------

def test_a_node_agent_gets_a_certificate_for_a_workload_on_its_node_and_it_is_audited(
        world: World) -> None:
    chain = world.issue("agent", metadata={"ImpersonatedIdentity": WEB_ID})
    assert uris(leaf(chain)) == [WEB_ID]
    assert world.workloads.impersonations == [("kube-system/ztunnel", None, "shop/web")]
    record = world.log.records[chain.serial]
    assert (record.namespace, record.service_account, record.pod_name) == ("shop", "web", None)
    (entry,) = world.audit.entries
    assert (entry.actor, entry.action, entry.target, entry.outcome, entry.at) == (
        AGENT_ID, "CreateCertificate.impersonate", WEB_ID, "ok", NOW)
    assert entry.detail == "node n1"
    assert world.refused() == []


@pytest.mark.parametrize(("token", "target", "words"), [
    ("web", DB_ID, "may not use ImpersonatedIdentity"),  # a workload is no node agent
    ("agent", DB_ID, "no pod of that identity runs on the caller's node"),
])
def test_impersonation_the_workloads_port_refuses_is_refused_and_not_audited_as_granted(
        world: World, token: str, target: str, words: str) -> None:
    with pytest.raises(AuthenticationError, match=words):
        world.issue(token, metadata={"ImpersonatedIdentity": target})
    assert world.log.records == {} and world.audit.entries == []
    assert world.codes == ["impersonation"]
    ((_, target_seen, _, detail),) = world.refused()
    assert target_seen == "" and words in detail


@pytest.mark.parametrize("target", [
    "spiffe://evil.example/ns/shop/sa/web", "shop/web", f"spiffe://{TD}/ns/shop",
    f"spiffe://{TD}/ns/shop/sa/web/x", f"spiffe://{TD}/ns/Shop/sa/web", 42, ["shop", "web"],
])
def test_an_impersonated_identity_that_is_no_workload_of_ours_is_refused_before_asking(
        world: World, target: object) -> None:
    with pytest.raises(AuthenticationError, match="ImpersonatedIdentity") as info:
        world.issue("agent", metadata={"ImpersonatedIdentity": target})
    assert info.value.reason == "impersonation"
    assert world.workloads.impersonations == [] and world.log.records == {}


# ---- the request: CSR, CertSigner, lifetime ---------------------------------------------------

@pytest.mark.parametrize(("csr", "words"), [
    ("", "csr is empty"),
    ("hello", "not a PEM 'CERTIFICATE REQUEST' block"),
    (csr_pem(KEY, sans=[x509.DNSName("web.shop")]), "SANs that are not allowed: DNSName"),
    (csr_pem(KEY, extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)]),
     "asks for a CA certificate"),
    (csr_pem(ec_key("secp256k1")), "curve secp256k1 is not allowed"),
])
def test_a_bad_csr_is_an_invalid_request_not_a_refusal(world: World, csr: str, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        world.issue("web", csr=csr)
    assert world.log.records == {} and world.refused() == [] and world.codes == []


def test_an_ed25519_csr_is_accepted(world: World) -> None:
    chain = world.issue("web", csr=csr_pem(ed25519_key()))
    assert uris(leaf(chain)) == [WEB_ID]


@pytest.mark.parametrize("signer", ["kubernetes.io/kube-apiserver-client", "istio-system/other"])
def test_a_named_cert_signer_is_refused(world: World, signer: str) -> None:
    with pytest.raises(InvalidRequest, match="CertSigner names a signer meshca does not have"):
        world.issue("web", metadata={"CertSigner": signer})
    assert world.log.records == {}


def test_an_empty_cert_signer_and_unknown_hints_are_ignored(world: World) -> None:
    chain = world.issue("web", metadata={"CertSigner": "", "SomeFutureHint": "x"})
    assert uris(leaf(chain)) == [WEB_ID]


@pytest.mark.parametrize(("ttl", "lifetime"), [
    (0, timedelta(hours=1)), (-5, timedelta(hours=1)), (120, timedelta(minutes=2)),
    (24 * 3600, timedelta(hours=24)),
])
def test_the_requested_lifetime_or_the_default_backdated(
        world: World, ttl: int, lifetime: timedelta) -> None:
    cert = leaf(world.issue("web", ttl=ttl))
    assert cert.not_valid_after_utc == NOW + lifetime
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)


def test_a_lifetime_over_the_maximum_is_refused_not_clamped(world: World) -> None:
    with pytest.raises(InvalidRequest, match="exceeds the maximum 86400s"):
        world.issue("web", ttl=24 * 3600 + 1)
    assert world.log.records == {}


def test_a_leaf_never_outlives_its_issuer() -> None:
    world = World(authority=make_authority(not_after=NOW + timedelta(minutes=30)))
    cert = leaf(world.issue("web", ttl=3600))
    assert cert.not_valid_after_utc == NOW + timedelta(minutes=30)
    world.clock.advance(timedelta(minutes=30))
    with pytest.raises(CaUnavailable, match="the issuing CA has expired"):
        world.issue("web")
    assert len(world.log.records) == 1


# ---- blocked, unavailable -------------------------------------------------------------------

def test_a_blocked_identity_gets_nothing_by_token_renewal_or_impersonation(world: World) -> None:
    first = world.issue("web")
    world.log.block(WEB_ID)
    for attempt in ({"caller": "web"}, {"caller": None, "certificate": der(first)},
                    {"caller": "agent", "metadata": {"ImpersonatedIdentity": WEB_ID}}):
        with pytest.raises(PermissionDenied, match="blocked by an administrator"):
            world.issue(**attempt)
    assert list(world.log.records) == [first.serial] and world.codes == ["blocked"] * 3
    ((actor, target, outcome, detail),) = world.refused()
    assert (actor, target, outcome) == ("grpc:10.0.0.7", WEB_ID, "refused")
    assert detail.startswith("3 refusals: identity is blocked")
    assert uris(leaf(world.issue("db"))) == [DB_ID]  # others are not


def test_no_signing_ca_is_unavailable_and_no_refusal(world: World) -> None:
    world.authority_error = CaUnavailable("no signing CA generation yet")
    with pytest.raises(CaUnavailable, match="no signing CA generation yet"):
        world.issue("web")
    assert world.log.records == {} and world.refused() == []


def test_a_certificate_log_that_cannot_be_written_makes_the_ca_unavailable(world: World) -> None:
    world.log.down = True
    with pytest.raises(CaUnavailable, match="certificate log is unavailable"):
        world.issue("web")
    world.log.down = False
    assert uris(leaf(world.issue("web"))) == [WEB_ID]
    assert world.refused() == []


def test_a_remote_signer_signs_off_the_loop_and_its_outage_is_unavailable() -> None:
    base, signer = make_authority(), FlakySigner()
    remote = SigningAuthority(generation_id=9, certificate=base.certificate, private_key=None,
                              chain=base.chain, bundle=base.bundle, signer=signer)
    world = World(authority=remote)
    chain = world.issue("web")
    leaf(chain).verify_directly_issued_by(base.certificate)
    assert signer.signed == 1 and world.log.records[chain.serial].issuer_generation_id == 9
    signer.down = True
    with pytest.raises(CaUnavailable, match=r"signing key's service \(Vault\) is unavailable") \
            as info:
        world.issue("web")
    assert isinstance(info.value.__cause__, SignerUnavailable)
    assert len(world.log.records) == 1 and world.refused() == []


# ---- rate limits and the refusal summary ----------------------------------------------------

def test_the_per_source_limit_refuses_before_any_token_is_looked_at() -> None:
    clock = FakeClock(NOW)
    world = World(rate_limits=IssuanceRateLimits(RateLimit(1, 2), None,
                                                 monotonic=clock.monotonic), clock=clock)
    world.issue("web", peer="10.0.0.7:1")
    world.issue("web", peer="10.0.0.7:2")  # the same source from another port
    with pytest.raises(RateLimited) as info:
        world.issue("web", peer="10.0.0.7:3")
    assert info.value.limit == "source"
    assert abs(info.value.retry_after - 1.0) < 1e-9
    assert world.workloads.calls == ["web", "web"]
    world.issue("web", peer="[fd00::1]:4")  # another source has its own bucket
    clock.advance(timedelta(seconds=1))
    world.issue("web", peer="10.0.0.7:5")
    assert len(world.log.records) == 4 and world.codes == ["rate_limited"]
    ((actor, _, _, detail),) = world.refused()
    assert actor == "grpc:10.0.0.7"
    assert detail.startswith("1 refusal: over the per-source issuance rate limit")


def test_the_per_identity_limit_counts_one_identity_from_any_source() -> None:
    clock = FakeClock(NOW)
    world = World(rate_limits=IssuanceRateLimits(None, RateLimit(1, 1), monotonic=clock.monotonic),
                  clock=clock)
    world.issue("web", peer="10.0.0.1:1")
    for n in range(3):
        with pytest.raises(RateLimited) as info:
            world.issue("web", peer=f"10.0.0.{n + 2}:1")
        assert info.value.limit == "identity"
    world.issue("db", peer="10.0.0.9:1")
    clock.advance(timedelta(seconds=1))
    world.issue("web", peer="10.0.0.1:1")
    rows = world.refused()
    # The wait is left out of the reason, so each source makes one row, not one per refusal.
    assert sorted((actor, target) for actor, target, _, _ in rows) == [
        (f"grpc:10.0.0.{n}", WEB_ID) for n in (2, 3, 4)]
    assert all("over the per-identity issuance rate limit (" in d for *_, d in rows)


def test_refusals_are_tallied_per_source_target_and_reason(world: World) -> None:
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            world.issue("expired")
    world.clock.advance(timedelta(seconds=7))
    with pytest.raises(AuthenticationError):
        world.issue("expired", peer="10.0.0.8:1")
    with pytest.raises(AuthenticationError):
        world.issue("expired")
    rows = world.refused()
    assert [(a, d) for a, _, _, d in rows] == [
        ("grpc:10.0.0.7", "4 refusals: token has expired (first 2026-03-01T12:00:00Z, "
                          "last 2026-03-01T12:00:07Z)"),
        ("grpc:10.0.0.8", "1 refusal: token has expired (at 2026-03-01T12:00:07Z)")]
    assert world.refused() == []  # taken
    assert world.codes == ["expired"] * 5
