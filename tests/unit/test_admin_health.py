"""Readiness: the signing key, the key service when signing needs it, the database."""

from __future__ import annotations

from dataclasses import replace

from meshca.core.remote_signing import LocalSigner
from meshca.service.admin.health import Readiness
from tests.fakes.ca_generations import FakeStoreProbe
from tests.unit.pki import ec_key, make_authority

LOCAL = make_authority()
REMOTE = replace(LOCAL, private_key=None, signer=LocalSigner(ec_key("secp256r1", 101)))


def test_ready_when_everything_answers() -> None:
    assert Readiness(lambda: LOCAL, FakeStoreProbe(), lambda: True).not_ready() is None


def test_not_ready_without_a_signing_key() -> None:
    assert Readiness(lambda: None, FakeStoreProbe()).not_ready() == "signing key is not loaded"


def test_key_service_matters_only_when_signing_is_remote() -> None:
    assert REMOTE.is_remote and not LOCAL.is_remote
    assert Readiness(lambda: LOCAL, FakeStoreProbe(), lambda: False).not_ready() is None
    assert "(Vault) is not reachable" in str(
        Readiness(lambda: REMOTE, FakeStoreProbe(), lambda: False).not_ready())


def test_not_ready_when_the_database_does_not_answer() -> None:
    probe = FakeStoreProbe()
    probe.up = False
    assert Readiness(lambda: LOCAL, probe).not_ready() == "database is not reachable"
