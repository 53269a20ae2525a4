"""`--keystore` choices built from settings, and the readiness/backoff pieces for Vault outages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshca.core.keys import KeyType
from meshca.core.remote_signing import LocalSigner
from meshca.infra.keyfiles import FileKeyStore
from meshca.infra.vault import (
    Backoff,
    KvKeyStore,
    TransitSigner,
    VaultDenied,
    VaultHealth,
    VaultUnavailable,
    retry_with_backoff,
)
from meshca.wiring.keystore import (
    KeystoreConfigError,
    KeystoreSettings,
    default_kek_file,
    open_key_backend,
)
from tests.fakes.vault_server import FakeVault


@pytest.fixture
def fake() -> Iterator[FakeVault]:
    vault = FakeVault().serve()
    yield vault
    vault.stop()


def vault_settings(fake: FakeVault, keystore: str, **extra: object) -> KeystoreSettings:
    return KeystoreSettings(keystore=keystore, vault_addr=fake.addr, vault_ca_cert=fake.ca_cert,
                            **extra)  # type: ignore[arg-type]


def test_file_keystore_with_a_kek_beside_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "meshca-data"
    backend = open_key_backend(KeystoreSettings(), data, env={})
    assert isinstance(backend.keys, FileKeyStore)
    assert backend.remote is None and backend.session is None and backend.health is None
    assert default_kek_file(data) == tmp_path / "meshca-data.kek"
    assert (tmp_path / "meshca-data.kek").exists()
    location = backend.keys.put("root-1", KeyType.EC_P256.generate())
    assert isinstance(backend.signer(location), LocalSigner)


@pytest.mark.parametrize(("settings", "env", "message"), [
    (KeystoreSettings(keystore="hsm"), {}, "--keystore must be one of file, vault-transit, vault-kv"),
    (KeystoreSettings(keystore="vault-kv"), {}, "needs --vault-addr"),
    (KeystoreSettings(keystore="vault-kv", vault_addr="vault:8200"), {}, "must be an http"),
    (KeystoreSettings(keystore="vault-kv", vault_addr="https://v", vault_ca_cert=Path("/nonexistent")),
     {}, "--vault-ca-cert /nonexistent is not a file"),
    (KeystoreSettings(keystore="vault-kv", vault_addr="https://v"), {},
     "needs --vault-token-file or \\$VAULT_TOKEN"),
    (KeystoreSettings(keystore="vault-kv", vault_addr="https://v", vault_auth="kubernetes"), {},
     "needs --vault-role"),
    (KeystoreSettings(keystore="vault-kv", vault_addr="https://v", vault_auth="approle",
                      vault_role_id="r"), {}, "needs --vault-role-id and --vault-secret-id-file"),
    (KeystoreSettings(keystore="vault-kv", vault_addr="https://v", vault_auth="ldap"),
     {"VAULT_TOKEN": "hvs.x"}, "--vault-auth must be one of token, kubernetes, approle"),
])
def test_bad_settings_name_the_flag(tmp_path: Path, settings: KeystoreSettings, env: dict[str, str],
                                    message: str) -> None:
    with pytest.raises(KeystoreConfigError, match=message):
        open_key_backend(settings, tmp_path / "data", env=env)


def test_building_a_vault_backend_makes_no_vault_call(tmp_path: Path) -> None:
    backend = open_key_backend(
        KeystoreSettings(keystore="vault-transit", vault_addr="https://127.0.0.1:9"), tmp_path / "data",
        env={"VAULT_TOKEN": "hvs.unused"})
    assert backend.health is not None and not backend.health.ready


def test_vault_kv_backend_stores_keys_in_kv(fake: FakeVault, tmp_path: Path) -> None:
    backend = open_key_backend(vault_settings(fake, "vault-kv"), tmp_path / "data",
                               env={"VAULT_TOKEN": fake.root_token})
    assert isinstance(backend.keys, KvKeyStore)
    key = KeyType.EC_P384.generate()
    location = backend.keys.put("root-abc", key)
    assert location == "vault-kv:secret/data/meshca/ca-keys/root-abc#1"
    signer = backend.signer(location)
    assert isinstance(signer, LocalSigner)
    assert signer.private_key.private_numbers() == key.private_numbers()
    assert not list((tmp_path / "data").rglob("*.pem"))
    assert backend.health is not None and backend.health.ready


def test_generations_from_the_file_keystore_keep_signing_after_a_switch_to_vault(
        fake: FakeVault, tmp_path: Path) -> None:
    data = tmp_path / "data"
    old_key = KeyType.EC_P256.generate()
    old_location = open_key_backend(KeystoreSettings(), data, env={}).keys.put("intermediate-old", old_key)
    for keystore in ("vault-kv", "vault-transit"):
        backend = open_key_backend(vault_settings(fake, keystore), data, env={"VAULT_TOKEN": fake.root_token})
        signer = backend.signer(old_location)
        assert isinstance(signer, LocalSigner)
        assert signer.private_key.private_numbers() == old_key.private_numbers()
    with pytest.raises(KeystoreConfigError, match="start with --keystore vault-transit"):
        open_key_backend(KeystoreSettings(), data, env={}).signer("vault-transit:transit/keys/root-1#1")


def test_vault_transit_backend_keeps_the_root_in_transit_and_seals_the_intermediate(
        fake: FakeVault, tmp_path: Path) -> None:
    backend = open_key_backend(vault_settings(fake, "vault-transit"), tmp_path / "data",
                               env={"VAULT_TOKEN": fake.root_token})
    assert backend.creates_remotely("root") and not backend.creates_remotely("intermediate")
    assert backend.remote is not None
    root = backend.remote.create("root-1", KeyType.EC_P256)
    assert isinstance(backend.signer(str(root.location)), TransitSigner)
    local = backend.keys.put("intermediate-1", KeyType.EC_P256.generate())
    assert local.startswith("file:") and isinstance(backend.signer(local), LocalSigner)
    settings = vault_settings(fake, "vault-transit", vault_transit_intermediate=True)
    with_intermediate = open_key_backend(settings, tmp_path / "data", env={"VAULT_TOKEN": fake.root_token})
    assert with_intermediate.creates_remotely("intermediate")


def test_a_token_file_rewritten_by_an_agent_is_picked_up_on_403(fake: FakeVault, tmp_path: Path) -> None:
    token_file = tmp_path / "vault-token"
    token_file.write_text(fake.issue_token([], ttl=600) + "\n")  # default policy only
    fake.add_policy("kv", {"secret/data/*": {"create", "update", "read"}, "secret/metadata/*": {"read"}})
    backend = open_key_backend(vault_settings(fake, "vault-kv", vault_token_file=token_file),
                               tmp_path / "data", env={})
    with pytest.raises(VaultDenied, match="permission denied"):
        backend.keys.put("from-file", KeyType.EC_P256.generate())
    token_file.write_text(fake.issue_token(["kv"], ttl=600) + "\n")  # Vault Agent renders a new one
    assert backend.keys.put("from-file", KeyType.EC_P256.generate()).endswith("#1")


# --- start-up and outages ------------------------------------------------------------------------

def test_start_up_waits_for_vault_with_backoff_then_becomes_ready(fake: FakeVault, tmp_path: Path) -> None:
    backend = open_key_backend(vault_settings(fake, "vault-transit"), tmp_path / "data",
                               env={"VAULT_TOKEN": fake.root_token})
    assert backend.session is not None and backend.health is not None
    fake.sealed = True
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        assert not backend.health.ready  # type: ignore[union-attr]  # /readyz false meanwhile
        if len(delays) == 4:
            fake.sealed = False

    retry_with_backoff(backend.session.ensure_token, retry_on=(VaultUnavailable,),
                       backoff=Backoff(initial=0.5, maximum=2.0, jitter=0.0), sleep=sleep)
    assert delays == [0.5, 1.0, 2.0, 2.0]
    assert backend.health.ready and backend.health.reachable and backend.health.alert == 0.0


def test_a_refusal_is_not_retried(fake: FakeVault, tmp_path: Path) -> None:
    backend = open_key_backend(vault_settings(fake, "vault-kv"), tmp_path / "data",
                               env={"VAULT_TOKEN": "hvs.not-a-real-token"})
    assert backend.session is not None
    slept: list[float] = []
    with pytest.raises(VaultDenied):
        retry_with_backoff(backend.session.ensure_token, retry_on=(VaultUnavailable,), sleep=slept.append)
    assert slept == []


def test_retry_gives_up_after_its_deadline_and_on_stop() -> None:
    now = [0.0]

    def down() -> None:
        raise VaultUnavailable("down")

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(VaultUnavailable):
        retry_with_backoff(down, retry_on=(VaultUnavailable,), backoff=Backoff(jitter=0.0),
                           give_up_after=10, clock=lambda: now[0], sleep=sleep)
    assert 5 <= now[0] <= 10
    stop = threading.Event()
    stop.set()
    with pytest.raises(VaultUnavailable):
        retry_with_backoff(down, retry_on=(VaultUnavailable,), stop=stop)


def test_health_stays_ready_through_an_outage_and_raises_the_alert_after_grace() -> None:
    now = [0.0]
    health = VaultHealth(clock=lambda: now[0], alert_after=30)
    assert not health.ready and health.alert == 0.0
    health.succeeded()
    health.failed(VaultUnavailable("Vault is sealed"))
    assert health.ready and not health.reachable  # issuance goes on under the active intermediate
    assert health.alert == 0.0
    now[0] = 31
    assert health.alert == 1.0
    assert health.last_error == "Vault is sealed"
    health.succeeded()
    assert health.alert == 0.0
    health.rotation_waiting(True)
    assert health.alert == 1.0


def test_backoff_grows_to_its_cap_with_bounded_jitter() -> None:
    delays = Backoff(initial=1, maximum=8, factor=2, jitter=0.2).delays()
    values = [next(delays) for _ in range(6)]
    for value, base in zip(values, [1, 2, 4, 8, 8, 8], strict=True):
        assert base * 0.8 <= value <= base * 1.2
