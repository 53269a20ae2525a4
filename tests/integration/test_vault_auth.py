"""Vault credentials that never lapse mid-run, and never show up in logs or errors."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from meshca.core.keys import KeyType
from meshca.infra.vault import (
    AppRoleAuth,
    Backoff,
    KubernetesAuth,
    TokenAuth,
    TransitKeys,
    TransitSigner,
    VaultAuth,
    VaultConnection,
    VaultDenied,
    VaultError,
    VaultKeeper,
    VaultNotFound,
    VaultSession,
    VaultUnavailable,
)
from tests.fakes.vault_server import FakeVault

SIGN_POLICY = {"transit/sign/*": {"update"}, "transit/keys/*": {"read", "create", "update"}}


class ManualClock:
    """Shared by the fake and the session: tokens expire without anyone sleeping."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeVault]:
    vault = FakeVault(clock=clock).serve()
    vault.add_policy("meshca-signer", SIGN_POLICY)
    yield vault
    vault.stop()


def connect(fake: FakeVault, auth: VaultAuth, clock: ManualClock, **kwargs: object) -> VaultSession:
    return VaultSession(VaultConnection(fake.addr, fake.ca_cert, **kwargs), auth,  # type: ignore[arg-type]
                        clock=clock)


def transit_signer(fake: FakeVault, session: VaultSession) -> TransitSigner:
    admin = VaultSession(VaultConnection(fake.addr, fake.ca_cert), TokenAuth(token=fake.root_token))
    location = TransitKeys(admin, "transit").create(f"root-{len(fake.transit)}", KeyType.EC_P256).location
    return TransitKeys(session, "transit").signer(str(location))


def verify(signer: TransitSigner, data: bytes, signature: bytes) -> None:
    public = signer.public_key
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, data, ec.ECDSA(hashes.SHA256()))


def test_a_renewable_token_is_renewed_before_it_expires(fake: FakeVault, clock: ManualClock) -> None:
    token = fake.issue_token(["meshca-signer"], ttl=60)
    session = connect(fake, TokenAuth(token=token), clock)
    signer = transit_signer(fake, session)
    for i in range(20):  # 300 s: five lifetimes of the original token
        data = f"tbs {i}".encode()
        verify(signer, data, signer.sign(data))
        clock.advance(15)
    assert session.logins == 1
    assert session.renewals >= 4
    assert ("POST", "auth/token/renew-self") in fake.requests


def test_kubernetes_auth_logs_in_again_at_max_ttl_and_rereads_the_projected_token(
        fake: FakeVault, clock: ManualClock, tmp_path: Path) -> None:
    jwt_file = tmp_path / "token"
    jwt_file.write_text("eyJhbGciOiJSUzI1NiJ9.first.sig\n")
    fake.add_kubernetes_role("meshca", {"eyJhbGciOiJSUzI1NiJ9.first.sig", "eyJhbGciOiJSUzI1NiJ9.second.sig"},
                             ["meshca-signer"], ttl=60, max_ttl=90)
    session = connect(fake, KubernetesAuth("meshca", jwt_file=jwt_file), clock)
    signer = transit_signer(fake, session)
    for i in range(30):
        if i == 10:  # the kubelet rotated the projected token
            jwt_file.write_text("eyJhbGciOiJSUzI1NiJ9.second.sig\n")
            fake.kube_roles["meshca"][0].discard("eyJhbGciOiJSUzI1NiJ9.first.sig")
        verify(signer, b"tbs", signer.sign(b"tbs"))
        clock.advance(10)
    assert session.logins >= 3  # 300 s against a 90 s max TTL
    assert session.renewals >= 1


def test_a_token_revoked_early_is_replaced_and_the_call_retried(fake: FakeVault, clock: ManualClock) -> None:
    fake.add_approle("role-1", "secret-1", ["meshca-signer"], ttl=3600)
    session = connect(fake, AppRoleAuth("role-1", secret_id="secret-1"), clock)
    signer = transit_signer(fake, session)
    signer.sign(b"before")
    fake.tokens = {k: v for k, v in fake.tokens.items() if "root" in v.policies}  # revoke all others
    verify(signer, b"after", signer.sign(b"after"))
    assert session.logins == 2


def test_a_static_token_is_used_until_expiry_then_a_clear_error(fake: FakeVault, clock: ManualClock) -> None:
    token = fake.issue_token(["meshca-signer"], ttl=30, renewable=False)
    session = connect(fake, TokenAuth(token=token), clock)
    signer = transit_signer(fake, session)
    clock.advance(25)  # past the renewal point: not renewable, still valid
    signer.sign(b"x")
    clock.advance(10)
    with pytest.raises(VaultDenied, match="expired and cannot be renewed") as caught:
        signer.sign(b"x")
    assert token not in str(caught.value)


def test_a_failed_renewal_keeps_the_live_token_and_tries_again(fake: FakeVault, clock: ManualClock) -> None:
    token = fake.issue_token(["meshca-signer"], ttl=60)
    session = connect(fake, TokenAuth(token=token), clock)
    signer = transit_signer(fake, session)
    clock.advance(45)
    fake.inject("auth/token/renew-self", 503, ["Vault is sealed"])
    signer.sign(b"x")  # the renewal failed, the signature did not
    assert session.renewals == 0
    clock.advance(1)
    signer.sign(b"x")
    assert session.renewals == 1


def test_signing_never_fails_while_tokens_expire_under_concurrent_load(
        fake: FakeVault, clock: ManualClock, tmp_path: Path) -> None:
    jwt_file = tmp_path / "token"
    jwt_file.write_text("eyJhbGciOiJSUzI1NiJ9.pod.sig")
    fake.add_kubernetes_role("meshca", {"eyJhbGciOiJSUzI1NiJ9.pod.sig"}, ["meshca-signer"],
                             ttl=30, max_ttl=60)
    session = connect(fake, KubernetesAuth("meshca", jwt_file=jwt_file), clock)
    signer = transit_signer(fake, session)
    failures: list[BaseException] = []
    done = threading.Event()

    def sign_many(worker: int) -> None:
        for i in range(25):
            data = f"{worker}/{i}".encode()
            try:
                verify(signer, data, signer.sign(data))
            except BaseException as exc:  # noqa: BLE001 - every failure is the finding
                failures.append(exc)

    def tick() -> None:
        while not done.is_set():
            clock.advance(1)
            done.wait(0.002)

    ticker = threading.Thread(target=tick)
    ticker.start()
    workers = [threading.Thread(target=sign_many, args=(n,)) for n in range(6)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    done.set()
    ticker.join()
    assert failures == []
    assert session.logins + session.renewals >= 2, "the run should have outlived one token"


def test_namespace_is_sent_on_every_request(clock: ManualClock) -> None:
    fake = FakeVault(clock=clock, namespace="team-mesh").serve()
    try:
        good = connect(fake, TokenAuth(token=fake.root_token), clock, namespace="team-mesh")
        TransitKeys(good, "transit").create("ns-key", KeyType.EC_P256).sign(b"x")
        wrong = connect(fake, TokenAuth(token=fake.root_token), clock)
        with pytest.raises(VaultNotFound, match="no handler for route"):
            TransitKeys(wrong, "transit").create("ns-key-2", KeyType.EC_P256)
    finally:
        fake.stop()


def test_an_untrusted_vault_certificate_is_a_tls_error(fake: FakeVault, clock: ManualClock,
                                                       tmp_path: Path) -> None:
    other = FakeVault().serve()
    try:
        session = VaultSession(VaultConnection(fake.addr, other.ca_cert), TokenAuth(token=fake.root_token),
                               clock=clock)
        with pytest.raises(VaultUnavailable, match="TLS handshake with Vault failed"):
            session.ensure_token()
        assert not session.health.ready
    finally:
        other.stop()


def test_an_unreachable_vault_is_unavailable_and_not_ready(clock: ManualClock) -> None:
    session = VaultSession(VaultConnection("https://127.0.0.1:9", timeout=2), TokenAuth(token="hvs.x"),
                           clock=clock)
    with pytest.raises(VaultUnavailable, match="cannot reach Vault"):
        session.ensure_token()
    assert not session.health.ready
    clock.advance(31)
    assert session.health.alert == 1.0


def _exception_text(exc: BaseException) -> str:
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def test_no_token_jwt_or_secret_id_reaches_logs_or_errors(fake: FakeVault, clock: ManualClock,
                                                           tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LWNsYWltcw.c2lnbmF0dXJl"
    (tmp_path / "jwt").write_text(jwt)
    (tmp_path / "secret-id").write_text("8f1c-secret-id-value")
    fake.add_kubernetes_role("meshca", {jwt}, ["meshca-signer"], ttl=20)
    fake.add_approle("role-id-1", "8f1c-secret-id-value", ["meshca-signer"], ttl=20)
    errors: list[BaseException] = []
    with caplog.at_level(logging.DEBUG):
        for auth in (KubernetesAuth("meshca", jwt_file=tmp_path / "jwt"),
                     AppRoleAuth("role-id-1", secret_id_file=tmp_path / "secret-id")):
            session = connect(fake, auth, clock)
            signer = transit_signer(fake, session)
            for _ in range(4):
                signer.sign(b"x")
                clock.advance(15)
            fake.inject("transit/sign/", 403, ["permission denied"], times=2)
            try:
                signer.sign(b"x")
            except VaultError as exc:
                errors.append(exc)
        (tmp_path / "secret-id").write_text("wrong-secret-id")
        try:
            connect(fake, AppRoleAuth("role-id-1", secret_id_file=tmp_path / "secret-id"), clock) \
                .ensure_token()
        except VaultError as exc:
            errors.append(exc)
        try:
            connect(fake, TokenAuth(token=fake.root_token + "x"), clock).ensure_token()
        except VaultError as exc:
            errors.append(exc)
    assert len(errors) == 4
    secrets_used = [jwt, "8f1c-secret-id-value", "wrong-secret-id", fake.root_token, *fake.tokens]
    text = caplog.text + "\n".join(_exception_text(e) for e in errors) + repr(errors)
    for secret in secrets_used:
        assert secret not in text
    assert "logged in to Vault with kubernetes auth" in caplog.text
    assert "renewed the Vault token" in caplog.text


def test_scrub_removes_anything_token_shaped_from_vault_error_text() -> None:
    from meshca.infra.vault.errors import scrub

    text = ("invalid token hvs.CAESIGx7a_b-c.d and s.AbCdEfGhIjKlMnOpQrStUvWx and "
            "jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln here")
    cleaned = scrub(text)
    assert "hvs." not in cleaned and "s.AbCd" not in cleaned and "eyJ" not in cleaned
    assert cleaned.count("[redacted]") == 3
    assert len(scrub("x" * 5000)) == 300


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_the_keeper_renews_an_idle_token_and_tracks_outages(fake: FakeVault, clock: ManualClock) -> None:
    token = fake.issue_token(["meshca-signer"], ttl=60)
    session = connect(fake, TokenAuth(token=token), clock)
    session.health._alert_after = 0  # alert as soon as Vault fails, for the test
    keeper = VaultKeeper(session, interval=0.02, backoff=Backoff(initial=0.02, maximum=0.05))
    fake.sealed = True  # Vault down at start
    keeper.start()
    try:
        assert not keeper.wait_ready(0.3)
        assert not session.health.ready
        fake.sealed = False
        assert keeper.wait_ready(5)
        for _ in range(12):  # 4 minutes of idleness against a 60 s token: renewed all along
            clock.advance(20)
            seen = len(fake.requests)
            assert _until(lambda seen=seen: len(fake.requests) > seen + 1)  # type: ignore[misc]
            assert session.health.reachable
        assert session.renewals >= 4
        assert session.logins == 1
        fake.sealed = True  # lost while running: still ready, alert raised
        assert _until(lambda: not session.health.reachable)
        assert session.health.ready and session.health.alert == 1.0
        fake.sealed = False
        assert _until(lambda: session.health.alert == 0.0)
    finally:
        keeper.stop()
    assert signer_still_works(fake, session)


def signer_still_works(fake: FakeVault, session: VaultSession) -> bool:
    signer = transit_signer(fake, session)
    verify(signer, b"x", signer.sign(b"x"))
    return True
