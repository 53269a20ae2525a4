"""Federation's pure rules and use cases, against fakes: `--federate-with` entries (flag and
environment), foreign bundle parsing, refresh bounds, the refresher (due times, back-off,
verification roots, last good bundle kept), the snapshot, and the admin use case."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from meshca.cli.main import build_parser
from meshca.cli.serve_args import settings_from
from meshca.core.federation import (
    HTTPS_SPIFFE,
    HTTPS_WEB,
    BundleRejected,
    FlagEntry,
    RefreshBounds,
    Relationship,
    parse_bundle,
    parse_flag_entry,
    problems,
    roots_from_text,
)
from meshca.errors import Conflict, NotFound, StoreUnavailable
from meshca.service.admin.federation import FederationAdmin, InvalidRelationship
from meshca.service.federation_ports import FetchFailed, FetchRequest
from meshca.service.federation_refresh import FederationRefresher
from meshca.service.federation_snapshot import FederationSnapshot
from meshca.service.ports import AuditEntry
from tests.fakes.clock import FakeClock
from tests.fakes.federation import FakeFederationStore, ScriptedFetcher
from tests.federation_support import bundle_document, issue, make_ca

B_ROOT = make_ca("b.test root", spiffe_trust_domain="b.test")
OTHER_ROOT = make_ca("x.test root", spiffe_trust_domain="x.test")
PLAIN_ROOT = make_ca("a root without a SPIFFE ID")


# ---- --federate-with -------------------------------------------------------------------------

def test_a_flag_entry_reads_its_options() -> None:
    entry = parse_flag_entry("b.test=https://b.example/bundle,profile=https_spiffe,"
                             "endpoint-spiffe-id=spiffe://b.test/meshca/federation,bundle=/b.pem")
    assert entry == FlagEntry("b.test", "https://b.example/bundle", HTTPS_SPIFFE,
                              "spiffe://b.test/meshca/federation", "/b.pem", None)
    assert parse_flag_entry("c.test=https://c.example/").profile == HTTPS_WEB


@pytest.mark.parametrize("text", [
    "https://b.example/", "b.test=", "=https://x/", "b.test=https://x/,colour=blue",
    "b.test=https://x/,profile=ftp", "b.test=https://x/,ca=a,ca=b", "b.test=https://x/,profile",
])
def test_bad_flag_entries_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_flag_entry(text)


def test_the_environment_separates_entries_with_semicolons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCA_FEDERATE_WITH",
                       "b.test=https://b.example/,profile=https_web; c.test=https://c.example/,"
                       "profile=https_spiffe,endpoint-spiffe-id=spiffe://c.test/e,bundle=/c.pem")
    settings = settings_from(build_parser().parse_args(["serve"]))
    assert [(e.trust_domain, e.profile) for e in settings.federate_with] == [
        ("b.test", HTTPS_WEB), ("c.test", HTTPS_SPIFFE)]
    assert settings.federate_with[1].bundle_file == "/c.pem"
    # A flag replaces the variable, and may be repeated.
    flags = settings_from(build_parser().parse_args([
        "serve", "--federate-with", "d.test=https://d/", "--federate-with", "e.test=https://e/"]))
    assert [e.trust_domain for e in flags.federate_with] == ["d.test", "e.test"]


def test_settings_refuse_own_or_repeated_trust_domains() -> None:
    for flags in (["--trust-domain", "a.test", "--federate-with", "a.test=https://a/"],
                  ["--federate-with", "b.test=https://b/", "--federate-with", "b.test=https://c/"],
                  ["--federation-addr", "127.0.0.1:0", "--federation-profile", "https_web"]):
        with pytest.raises(ValueError):
            settings_from(build_parser().parse_args(["serve", *flags]))


# ---- relationships ---------------------------------------------------------------------------

def _spiffe(**kw: Any) -> Relationship:
    return Relationship(**{"trust_domain": "b.test", "url": "https://b.example/",
                           "profile": HTTPS_SPIFFE,
                           "endpoint_spiffe_id": "spiffe://b.test/meshca/federation",
                           "bootstrap_pem": B_ROOT.pem, **kw})


@pytest.mark.parametrize(("relationship", "field"), [
    (_spiffe(trust_domain="a.test"), "trust_domain"),
    (_spiffe(trust_domain="B.TEST"), "trust_domain"),
    (_spiffe(url="http://b.example/"), "url"),
    (_spiffe(url="https://user@b.example/"), "url"),
    (_spiffe(url="https:///nohost"), "url"),
    (_spiffe(profile="ftp"), "profile"),
    (_spiffe(endpoint_spiffe_id=None), "endpoint_spiffe_id"),
    (_spiffe(endpoint_spiffe_id="spiffe://B/x"), "endpoint_spiffe_id"),
    (_spiffe(bootstrap_pem=None), "bootstrap_bundle"),
    (_spiffe(bootstrap_pem="junk"), "bootstrap_bundle"),
    (_spiffe(profile=HTTPS_WEB), "profile"),  # endpoint ID and bootstrap need https_spiffe
    (_spiffe(web_ca_pem=B_ROOT.pem), "web_ca"),
])
def test_relationship_problems_name_the_field(relationship: Relationship, field: str) -> None:
    assert field in [name for name, _ in problems(relationship, "a.test")]


def test_good_relationships_have_no_problems() -> None:
    assert problems(_spiffe(), "a.test") == []
    assert problems(Relationship("c.test", "https://c.example:8443/b?x=1"), "a.test") == []


def test_a_bootstrap_bundle_may_be_pem_or_a_spiffe_bundle() -> None:
    assert roots_from_text(B_ROOT.pem) == B_ROOT.pem
    assert roots_from_text(bundle_document(B_ROOT.cert).decode()) == B_ROOT.pem
    with pytest.raises(ValueError):
        roots_from_text("hello")


# ---- bundles ---------------------------------------------------------------------------------

def _x5c(cert: Any) -> str:
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


def test_a_bundle_yields_roots_jwt_keys_sequence_and_hint() -> None:
    doc = {"keys": [{"use": "x509-svid", "kty": "EC", "x5c": [_x5c(B_ROOT.cert)]},
                    {"use": "jwt-svid", "kty": "EC", "kid": "k1", "crv": "P-256"},
                    {"use": "something-new", "kty": "EC"}],
           "spiffe_sequence": 7, "spiffe_refresh_hint": 60}
    parsed = parse_bundle(json.dumps(doc).encode(), "b.test")
    assert parsed.x509_roots == (B_ROOT.cert,)
    assert set(parsed.jwt_keys) == {"k1"}
    assert (parsed.sequence, parsed.refresh_hint) == (7, 60.0)
    # A root without a SPIFFE ID says nothing about its trust domain: accepted.
    assert parse_bundle(bundle_document(PLAIN_ROOT.cert), "b.test").x509_roots


@pytest.mark.parametrize(("body", "outcome"), [
    (b"not json", "invalid"),
    (b"[]", "invalid"),
    (b'{"keys": []}', "invalid"),
    (json.dumps({"keys": [{"kty": "EC"}]}).encode(), "invalid"),
    (json.dumps({"keys": [{"use": "x509-svid", "x5c": []}]}).encode(), "invalid"),
    (json.dumps({"keys": [{"use": "x509-svid", "x5c": ["AAAA", "AAAA"]}]}).encode(), "invalid"),
    (json.dumps({"keys": [{"use": "x509-svid", "x5c": ["%%%"]}]}).encode(), "invalid"),
    (json.dumps({"keys": [{"use": "jwt-svid", "kty": "EC"}]}).encode(), "invalid"),
    (json.dumps({"keys": [{"use": "jwt-svid", "kty": "EC", "kid": "a"},
                          {"use": "jwt-svid", "kty": "EC", "kid": "a"}]}).encode(), "invalid"),
    (bundle_document(OTHER_ROOT.cert), "wrong_trust_domain"),
    (b" " * (1024 * 1024 + 1), "invalid"),
])
def test_bad_bundles_are_refused(body: bytes, outcome: str) -> None:
    with pytest.raises(BundleRejected) as refused:
        parse_bundle(body, "b.test")
    assert refused.value.outcome == outcome


def test_a_leaf_is_no_root() -> None:
    leaf = x509.load_pem_x509_certificate(issue(B_ROOT, dns=("x",))[0].encode())
    with pytest.raises(BundleRejected, match="not a CA"):
        parse_bundle(bundle_document(leaf), "b.test")


def test_refresh_bounds() -> None:
    bounds = RefreshBounds(30, 3600)
    assert bounds.delay(None) == 300  # the spec's five minutes
    assert bounds.delay(1) == 30 and bounds.delay(10**6) == 3600 and bounds.delay(120) == 120
    with pytest.raises(ValueError):
        RefreshBounds(10, 5)


# ---- the refresher, the snapshot, the admin use case -----------------------------------------

def _setup(respond: Any) -> tuple[FakeFederationStore, ScriptedFetcher, FakeClock,
                                  FederationRefresher, FederationAdmin]:
    store, clock = FakeFederationStore(), FakeClock()
    fetcher = ScriptedFetcher(respond)
    outcomes: list[tuple[str, str]] = []
    refresher = FederationRefresher(store, store.leases, fetcher, clock, identity="r1",
                                    bounds=RefreshBounds(30, 600),
                                    observe=lambda td, o: outcomes.append((td, o)))
    return store, fetcher, clock, refresher, FederationAdmin(store, "a.test", clock)


def test_fetching_follows_the_hint_and_keeps_the_last_good_bundle() -> None:
    answers: list[Any] = [bundle_document(B_ROOT.cert, sequence=3, refresh_hint=120)]

    def respond(request: FetchRequest) -> bytes:
        answer = answers[0]
        if isinstance(answer, Exception):
            raise answer
        return bytes(answer)

    store, fetcher, clock, refresher, admin = _setup(respond)
    admin.put(_spiffe(), "token:ops")
    asyncio.run(refresher.run_once())
    record = store.get("b.test")
    assert (record.sequence, record.outcome) == (3, "ok")
    assert record.next_fetch_at == clock.now() + timedelta(seconds=120)
    # The first fetch is verified with the bootstrap bundle, later ones with the fetched one.
    assert fetcher.requests[0].trust_pem == B_ROOT.pem
    assert fetcher.requests[0].endpoint_spiffe_id == "spiffe://b.test/meshca/federation"
    asyncio.run(refresher.run_once())  # not due yet
    assert len(fetcher.requests) == 1
    for failure, outcome in [(FetchFailed("down", "unreachable"), "unreachable"),
                             (b"garbage", "invalid"),
                             (bundle_document(OTHER_ROOT.cert, sequence=9), "wrong_trust_domain"),
                             (bundle_document(B_ROOT.cert, sequence=2), "stale_sequence")]:
        clock.advance(timedelta(hours=1))
        answers[0] = failure
        asyncio.run(refresher.run_once())
        record = store.get("b.test")
        assert (record.outcome, record.sequence) == (outcome, 3)
        assert record.document == bundle_document(B_ROOT.cert, sequence=3, refresh_hint=120)
        # Back-off: due again within the bounds, never at once.
        wait = (record.next_fetch_at - clock.now()).total_seconds()  # type: ignore[operator]
        assert 0 < wait <= 600
    assert fetcher.requests[-1].trust_pem == B_ROOT.pem  # from the stored bundle now


def test_only_the_lease_holder_fetches() -> None:
    store, fetcher, clock, refresher, admin = _setup(lambda r: bundle_document(B_ROOT.cert))
    admin.put(_spiffe(), "token:ops")
    store.leases.acquire("federation-fetch", "someone else", timedelta(minutes=1), clock.now())
    asyncio.run(refresher.run_once())
    assert fetcher.requests == [] and store.get("b.test").document is None


def test_the_snapshot_holds_good_bundles_only_and_drops_deleted_ones() -> None:
    store, _, _, refresher, admin = _setup(lambda r: bundle_document(B_ROOT.cert, sequence=1))
    admin.put(_spiffe(), "token:ops")
    admin.put(Relationship("c.test", "https://c.example/"), "token:ops")
    snapshot = FederationSnapshot(store, "a.test")
    assert snapshot.refresh() is False and snapshot.snapshot() == {}
    asyncio.run(refresher.run_once())
    assert snapshot.refresh() is True
    bundles = snapshot.snapshot()
    # c.test's endpoint answered a root naming b.test: refused, so c.test has no bundle.
    assert set(bundles) == {"b.test"} and store.get("c.test").outcome == "wrong_trust_domain"
    assert bundles["b.test"].x509_roots == (B_ROOT.cert,) and bundles["b.test"].sequence == 1
    assert B_ROOT.pem in snapshot.roots_pem()
    store.down = True  # a failed read keeps what is held
    with pytest.raises(StoreUnavailable):
        snapshot.refresh()
    assert set(snapshot.snapshot()) == {"b.test"}
    store.down = False
    admin.delete("b.test", "token:ops")
    assert snapshot.refresh() is True and "b.test" not in snapshot.snapshot()


def test_admin_changes_are_audited_and_flag_entries_protected() -> None:
    store, _, _, _, admin = _setup(lambda r: b"")
    with pytest.raises(InvalidRelationship) as invalid:
        admin.put(_spiffe(trust_domain="a.test", url="ftp://x"), "token:ops")
    assert {"trust_domain", "url"} <= {name for name, _ in invalid.value.errors}
    assert admin.put(_spiffe(), "token:ops")[1] is True
    with pytest.raises(Conflict):
        admin.put(_spiffe(), "token:ops", create_only=True)
    assert admin.put(_spiffe(url="https://other/"), "token:ops")[1] is False
    admin.delete("b.test", "token:ops")
    with pytest.raises(NotFound):
        admin.delete("b.test", "token:ops")
    assert [(e.action, e.actor, e.target) for e in store.audit] == [
        ("federation.put", "token:ops", "b.test"), ("federation.put", "token:ops", "b.test"),
        ("federation.delete", "token:ops", "b.test")]
    flagged = Relationship("c.test", "https://c.example/", from_flags=True)
    admin.sync_flags([flagged])
    admin.sync_flags([flagged])  # unchanged: nothing written
    assert sum(e.target == "c.test" for e in store.audit) == 1
    for change in (lambda: admin.delete("c.test", "token:ops"),
                   lambda: admin.put(Relationship("c.test", "https://x/"), "token:ops")):
        with pytest.raises(Conflict, match="--federate-with"):
            change()
    admin.sync_flags([])  # gone from the flags: gone from the store
    assert store.all() == []
    assert isinstance(store.audit[-1], AuditEntry) and store.audit[-1].action == "federation.delete"
