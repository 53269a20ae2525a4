"""The pieces ext_authz fails closed with: the identity snapshot (what the database says, what
a check decides from it, when it is too old), its refresher, terse responses, the settings."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, insert

from meshca.cli.main import build_parser
from meshca.cli.serve_args import settings_from
from meshca.config import Settings
from meshca.infra.db.engine import migrate, open_engine
from meshca.infra.db.inventory import SqlInventory
from meshca.infra.db.schema import blocked_identities, ca_generations, issued_certificates
from meshca.transport.ext_authz import reasons
from meshca.transport.ext_authz.identity import (
    IdentityState,
    SnapshotIdentityCheck,
    peer_certificate,
    state_from,
)
from meshca.transport.ext_authz.refresher import IdentityRefresher
from meshca.transport.ext_authz.responses import Responses, Verdict
from meshca.transport.ext_authz.tls import serving_key_and_chain

NOW = datetime.now(UTC)
WEB = "spiffe://cluster.local/ns/shop/sa/web"


class Authority:
    """A CA certificate and key, issuing CA or leaf certificates with key identifiers."""

    def __init__(self, name: str, parent: Authority | None = None) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (parent or self)._sign(self.name, self.key.public_key(), ca=True, root=parent is None)

    def _sign(self, subject: x509.Name, public: Any, *, ca: bool, root: bool = False,
              aki: bool = True) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(subject if root else self.name).public_key(public)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - timedelta(hours=1)).not_valid_after(NOW + timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                                            critical=False)
        if aki and not root:
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def leaf(self, *, aki: bool = True) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        return self._sign(x509.Name([]), key.public_key(), ca=False, aki=aki)

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def serial(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'meshca.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def _generation(engine: Engine, authority: Authority, kind: str, state: str,
                parent: int | None) -> int:
    with engine.begin() as connection:
        inserted = connection.execute(insert(ca_generations).values(
            kind=kind, parent_id=parent, subject=authority.name.rfc4514_string(),
            serial=serial(authority.cert), key_type="ec-p256", key_location="file:x",
            not_before=NOW - timedelta(hours=1), not_after=NOW + timedelta(days=1), state=state,
            certificate_pem=authority.pem, created_at=NOW)).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def _issued(engine: Engine, cert: x509.Certificate, issuer: int, *, revoked: bool,
            expired: bool = False) -> None:
    not_after = NOW - timedelta(minutes=1) if expired else NOW + timedelta(hours=1)
    with engine.begin() as connection:
        connection.execute(insert(issued_certificates).values(
            serial=serial(cert), spiffe_id=WEB, namespace="shop", service_account="web",
            not_before=NOW - timedelta(hours=2), not_after=not_after, issuer_generation_id=issuer,
            fingerprint_sha256="0" * 64, key_type="ec", issued_at=NOW - timedelta(hours=2),
            certificate_pem=pem(cert), revoked_at=NOW - timedelta(minutes=5) if revoked else None,
            revocation_reason="keyCompromise" if revoked else None))


def test_the_snapshot_holds_what_may_no_longer_authenticate(engine: Engine) -> None:
    root, tainted_root = Authority("root 1"), Authority("root 2")
    good, tainted = Authority("intermediate 1", root), Authority("intermediate 2", root)
    orphan = Authority("intermediate 3", tainted_root)  # fine itself, under a tainted root
    root_id = _generation(engine, root, "root", "active", None)
    good_id = _generation(engine, good, "intermediate", "active", root_id)
    _generation(engine, tainted, "intermediate", "tainted", root_id)
    tainted_root_id = _generation(engine, tainted_root, "root", "tainted", None)
    _generation(engine, orphan, "intermediate", "active", tainted_root_id)
    revoked, expired, fine = good.leaf(), good.leaf(), good.leaf()
    _issued(engine, revoked, good_id, revoked=True)
    _issued(engine, expired, good_id, revoked=True, expired=True)
    _issued(engine, fine, good_id, revoked=False)
    with engine.begin() as connection:
        connection.execute(insert(blocked_identities).values(
            spiffe_id=f"{WEB}-blocked", reason="r", blocked_by="t", blocked_at=NOW))

    denied = SqlInventory(engine).denied_identities(NOW)
    assert denied.blocked == {f"{WEB}-blocked"}
    assert denied.revoked_serials == {serial(revoked)}  # an expired one is TLS's to refuse
    assert set(denied.tainted_issuers) == {tainted.pem, tainted_root.pem, orphan.pem}

    state = state_from(denied.blocked, denied.revoked_serials, denied.tainted_issuers, 0.0)
    check = SnapshotIdentityCheck(lambda: state, max_staleness=5, clock=lambda: 1.0)
    refused = {name: check.refusal(WEB, quote(pem(cert))) for name, cert in [
        ("fine", fine), ("revoked", revoked), ("under tainted", tainted.leaf()),
        ("under tainted root", orphan.leaf()), ("no aki, tainted issuer", tainted.leaf(aki=False)),
        ("no aki, good issuer", good.leaf(aki=False))]}
    assert {name: r and r.reason for name, r in refused.items()} == {
        "fine": None, "revoked": reasons.REVOKED, "under tainted": reasons.TAINTED_ISSUER,
        "under tainted root": reasons.TAINTED_ISSUER,
        "no aki, tainted issuer": reasons.TAINTED_ISSUER, "no aki, good issuer": None}
    blocked = check.refusal(f"{WEB}-blocked", "")
    assert blocked is not None and blocked.reason == reasons.BLOCKED


def _state(taken_at: float) -> IdentityState:
    return IdentityState(frozenset(), frozenset(), frozenset(), frozenset(), taken_at)


def test_a_state_too_old_or_missing_denies_every_check() -> None:
    now = [100.0]
    current: list[IdentityState | None] = [None]
    check = SnapshotIdentityCheck(lambda: current[0], max_staleness=30, clock=lambda: now[0])
    refusal = check.refusal(WEB, "")
    assert refusal is not None and refusal.reason == reasons.IDENTITY_STATE_STALE
    current[0] = _state(taken_at=90.0)
    assert check.refusal(WEB, "") is None
    now[0] = 120.0  # exactly at the limit: still good
    assert check.refusal(WEB, "") is None
    now[0] = 120.5
    refusal = check.refusal(None, "")
    assert refusal is not None and refusal.reason == reasons.IDENTITY_STATE_STALE
    assert "30.5s old" in refusal.detail


@pytest.mark.parametrize("text", ["", "%", "x" * 5000, quote("-----BEGIN CERTIFICATE-----\n"),
                                  "-----BEGIN CERTIFICATE-----%0AMIIB%0A-----END CERTIFICATE-----"])
def test_anything_but_a_certificate_is_unparseable(text: str) -> None:
    check = SnapshotIdentityCheck(lambda: _state(0.0), max_staleness=5, clock=lambda: 0.0)
    refusal = check.refusal(WEB, text)
    if text:
        assert peer_certificate(text) is None
        assert refusal is not None and refusal.reason == reasons.CERTIFICATE_UNPARSEABLE
    else:
        assert refusal is None  # no certificate sent: nothing to check it against


class Recorder:
    def __init__(self) -> None:
        self.refreshes: list[str] = []
        self.read_at: list[float | None] = []

    def authz_decision(self, decision: str, reason: str) -> None:
        pass

    def identity_refresh(self, outcome: str) -> None:
        self.refreshes.append(outcome)

    def identity_state_read(self, wall_time: float | None) -> None:
        self.read_at.append(wall_time)


def test_a_failed_or_slow_read_keeps_the_last_snapshot_and_is_counted() -> None:
    clock = [0.0]
    outcomes: list[Any] = [_state(0.0), RuntimeError("database is locked"), "slow"]
    metrics = Recorder()

    def read(started: float) -> IdentityState:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        if outcome == "slow":
            clock[0] += 5.0
            return _state(started)
        assert isinstance(outcome, IdentityState)
        return outcome

    refresher = IdentityRefresher(read, interval=2.0, metrics=metrics, clock=lambda: clock[0],
                                  wall=lambda: 1000.0 + clock[0])
    assert refresher.state is None and not refresher.wait_first(0)
    assert refresher.refresh() and refresher.wait_first(0)
    first = refresher.state
    clock[0] = 2.0
    assert not refresher.refresh() and refresher.state is first
    clock[0] = 4.0
    assert refresher.refresh()
    assert refresher.state is not None and refresher.state.taken_at == 4.0  # when the read began
    assert metrics.refreshes == ["ok", "failed", "slow"]
    assert metrics.read_at == [1000.0, 1004.0]


def test_a_hung_read_blocks_only_the_refresher() -> None:
    release = threading.Event()
    reads = []

    def read(started: float) -> IdentityState:
        reads.append(started)
        if len(reads) > 1:
            release.wait(10)
        return _state(started)

    refresher = IdentityRefresher(read, interval=0.01)
    refresher.start()
    try:
        assert refresher.wait_first(5)
        check = SnapshotIdentityCheck(lambda: refresher.state, max_staleness=0.2)
        assert check.refusal(WEB, "") is None
        threading.Event().wait(0.3)  # the second read hangs; the snapshot ages
        refusal = check.refusal(WEB, "")
        assert refusal is not None and refusal.reason == reasons.IDENTITY_STATE_STALE
    finally:
        refresher.stop()
        release.set()


@pytest.mark.parametrize(("decision", "reason"), reasons.DECISIONS)
def test_terse_bodies_never_say_which_policy_or_whether_an_identity_is_blocked(
        decision: str, reason: str) -> None:
    verdict = Verdict(decision, reason, f"secret detail {WEB}", "shop/secret-policy", 3, "DENY")
    terse, verbose = Responses().of(verdict), Responses(verbose=True).of(verdict)
    wire = terse.SerializeToString()
    for word in (b"secret", b"blocked", b"revoked", b"tainted", b"no-allow-match", WEB.encode()):
        assert word not in wire
    if decision == "ALLOW":
        assert terse.ok_response.headers[0].header.value == "ALLOW"
        assert verbose.ok_response.headers[0].header.value == "ALLOW shop/secret-policy 3"
        return
    assert json.loads(terse.denied_response.body) == {"decision": "DENY",
                                                      "reason": reasons.public(reason)}
    assert terse.denied_response.headers[0].header.value == "DENY"
    assert json.loads(verbose.denied_response.body) == {
        "decision": "DENY", "reason": reason, "policy": "shop/secret-policy", "rule": 3,
        "action": "DENY", "detail": f"secret detail {WEB}"}


def test_the_serving_file_gives_grpc_a_plain_key_and_the_chain() -> None:
    ca = Authority("ca")
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"pw"))
    chain = (pem(ca.leaf()) + ca.pem).encode()
    plain, got_chain = serving_key_and_chain(encrypted + chain, b"pw")
    assert got_chain == chain
    loaded = serialization.load_pem_private_key(plain, None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()
    with pytest.raises(ValueError, match="one private key"):
        serving_key_and_chain(chain, b"pw")


def _serve_args(*flags: str) -> Settings:
    parsed = build_parser().parse_args(["serve", *flags])
    assert isinstance(parsed, argparse.Namespace)
    return settings_from(parsed)


def test_flags_and_their_defaults() -> None:
    default = _serve_args()
    assert default.ext_authz_refresh == timedelta(seconds=2)
    assert default.ext_authz_max_staleness == timedelta(seconds=30)
    assert not default.ext_authz_verbose and not default.ext_authz_tls
    given = _serve_args("--ext-authz-refresh", "0.5s",
                        "--ext-authz-max-staleness", "5s", "--ext-authz-verbose", "--ext-authz-tls")
    assert given.ext_authz_refresh == timedelta(seconds=0.5)
    assert given.ext_authz_max_staleness == timedelta(seconds=5)
    assert given.ext_authz_verbose and given.ext_authz_tls
    with pytest.raises(ValueError, match="--ext-authz-max-staleness must be longer"):
        Settings(ext_authz_refresh=timedelta(seconds=5), ext_authz_max_staleness=timedelta(seconds=5))
    with pytest.raises(ValueError, match="--ext-authz-refresh must be positive"):
        Settings(ext_authz_refresh=timedelta(0))
