"""Every Vault feature meshca uses, against a real OpenBao server (`bao server -dev`).

Each test works in a namespace of its own (OpenBao has namespaces, sent as X-Vault-Namespace
like Vault Enterprise's), so mounts, policies and auth methods sit at their default paths,
and the policies are the files the Helm chart ships. Token TTLs are real: a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac.exceptions
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from meshca.core.keys import KeyType
from meshca.infra.vault import (
    AppRoleAuth,
    KeyStoreConflict,
    KvKeyStore,
    TokenAuth,
    TransitKeys,
    VaultConnection,
    VaultDenied,
    VaultKeeper,
    VaultNotFound,
    VaultSession,
)
from tests.vault.bao import BaoServer, new_namespace, shipped_policy

pytestmark = pytest.mark.bao


def connect(bao: BaoServer, namespace: str, auth: Any) -> VaultSession:
    return VaultSession(VaultConnection(bao.addr, bao.ca_cert, namespace), auth)


def token_for(bao: BaoServer, namespace: str, policies: list[str], **options: Any) -> str:
    created = bao.client(namespace=namespace).auth.token.create(policies=policies, **options)
    token: str = created["auth"]["client_token"]
    return token


def with_transit(bao: BaoServer) -> str:
    namespace = new_namespace(bao)
    admin = bao.client(namespace=namespace)
    admin.sys.enable_secrets_engine("transit", path="transit")
    admin.sys.create_or_update_policy("meshca", shipped_policy("transit"))
    return namespace


def with_approle(bao: BaoServer, namespace: str, secret_file: Path, **role: Any) -> str:
    admin = bao.client(namespace=namespace)
    admin.sys.enable_auth_method("approle")
    admin.auth.approle.create_or_update_approle("meshca", token_policies=["meshca"], **role)
    role_id: str = admin.auth.approle.read_role_id("meshca")["data"]["role_id"]
    secret_file.write_text(admin.auth.approle.generate_secret_id("meshca")["data"]["secret_id"])
    secret_file.chmod(0o600)
    return role_id


def verifies(signer: Any) -> bool:
    signature = signer.sign(b"tbs")
    signer.public_key.verify(signature, b"tbs", ec.ECDSA(hashes.SHA256()))
    return True


# --- the shipped policies --------------------------------------------------------------------

def test_the_shipped_transit_policy_creates_and_signs_but_cannot_export_delete_or_rotate(
        bao: BaoServer) -> None:
    namespace = with_transit(bao)
    session = connect(bao, namespace, TokenAuth(token=token_for(bao, namespace, ["meshca"])))
    signer = TransitKeys(session).create("root-01", KeyType.EC_P256)
    assert verifies(signer)
    info = bao.client(namespace=namespace).secrets.transit.read_key("root-01")["data"]
    assert info["exportable"] is False and info["allow_plaintext_backup"] is False
    weak = hvac_client(bao, namespace, session)
    attempts: list[Callable[[], Any]] = [
                    lambda: weak.secrets.transit.update_key_configuration(
                        "root-01", exportable=True),
                    lambda: weak.secrets.transit.export_key("root-01", key_type="signing-key"),
                    lambda: weak.secrets.transit.rotate_key("root-01"),
                    lambda: weak.secrets.transit.delete_key("root-01"),
                    lambda: weak.secrets.transit.backup_key("root-01")]
    for attempt in attempts:
        with pytest.raises(hvac.exceptions.Forbidden):
            attempt()
    # Creating over an existing key's name is refused by meshca before Vault is asked to.
    with pytest.raises(Exception, match="already exists"):
        TransitKeys(session).create("root-01", KeyType.EC_P256)


def hvac_client(bao: BaoServer, namespace: str, session: VaultSession) -> Any:
    """A plain client holding the session's current token."""
    token: str = session.call("token", lambda client: client.token)
    return bao.client(token=token, namespace=namespace)


def test_the_shipped_kv_policy_writes_once_with_check_and_set_and_never_deletes(bao: BaoServer) -> None:
    namespace = new_namespace(bao)
    admin = bao.client(namespace=namespace)
    admin.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    admin.write_data("secret/config", data={"cas_required": True})
    admin.sys.create_or_update_policy("meshca", shipped_policy("kv"))
    token = token_for(bao, namespace, ["meshca"])
    first = KvKeyStore(connect(bao, namespace, TokenAuth(token=token)))
    second = KvKeyStore(connect(bao, namespace, TokenAuth(token=token)))  # another replica
    key = KeyType.EC_P256.generate()
    location = first.put("root-02", key)
    assert location.endswith("#1")
    with pytest.raises(KeyStoreConflict) as lost:
        second.put("root-02", KeyType.EC_P256.generate())
    assert lost.value.current_version == 1
    assert second.load(location).private_numbers() == key.private_numbers()
    plain = bao.client(token=token, namespace=namespace)
    with pytest.raises(hvac.exceptions.Forbidden):
        plain.secrets.kv.v2.delete_metadata_and_all_versions("meshca/ca-keys/root-02")
    with pytest.raises(hvac.exceptions.Forbidden):
        plain.secrets.kv.v2.read_secret_version("other/thing", raise_on_deleted_version=True)


# --- token auth: renewal, expiry ------------------------------------------------------------

def test_a_renewable_token_is_renewed_at_two_thirds_of_its_ttl(bao: BaoServer) -> None:
    namespace = with_transit(bao)
    token = token_for(bao, namespace, ["meshca"], ttl="6s", explicit_max_ttl="1h")
    session = connect(bao, namespace, TokenAuth(token=token))
    signer = TransitKeys(session).create("root-03", KeyType.EC_P256)
    time.sleep(4.2)
    assert verifies(signer)
    assert session.renewals == 1
    ttl = bao.client(token=token, namespace=namespace).auth.token.lookup_self()["data"]["ttl"]
    assert ttl >= 4  # renewed by the real server, not just counted
    time.sleep(2.5)  # past the original TTL: alive only because it was renewed
    assert verifies(signer)


def test_a_static_token_is_used_until_it_expires_then_a_clear_error(bao: BaoServer) -> None:
    namespace = with_transit(bao)
    token = token_for(bao, namespace, ["meshca"], ttl="2s", renewable=False)
    session = connect(bao, namespace, TokenAuth(token=token))
    signer = TransitKeys(session).create("root-04", KeyType.EC_P256)
    time.sleep(2.5)
    with pytest.raises(VaultDenied, match="expired") as caught:
        signer.sign(b"tbs")
    assert token not in str(caught.value)


# --- AppRole: login, re-login at max TTL, after revocation, rotated secret ID ---------------

def test_approle_logs_in_again_when_its_token_reaches_max_ttl(bao: BaoServer, tmp_path: Path) -> None:
    namespace = with_transit(bao)
    secret = tmp_path / "secret-id"
    role_id = with_approle(bao, namespace, secret, token_ttl="6s", token_max_ttl="6s")
    session = connect(bao, namespace, AppRoleAuth(role_id, secret_id_file=secret))
    signer = TransitKeys(session).create("root-05", KeyType.EC_P256)
    assert session.logins == 1
    time.sleep(5.0)  # the renewal is capped under a third of the TTL: log in afresh
    assert verifies(signer)
    time.sleep(1.5)  # past max TTL: even if that renewal met a transient error, no old token now
    assert verifies(signer)
    assert session.logins == 2, (session.renewals, session.health.last_error)
    assert session.renewals == 0  # a capped renewal is never kept


def test_a_revoked_token_is_replaced_by_a_fresh_login_and_the_call_retried(
        bao: BaoServer, tmp_path: Path) -> None:
    namespace = with_transit(bao)
    secret = tmp_path / "secret-id"
    role_id = with_approle(bao, namespace, secret, token_ttl="1h")
    session = connect(bao, namespace, AppRoleAuth(role_id, secret_id_file=secret))
    signer = TransitKeys(session).create("root-06", KeyType.EC_P256)
    bao.client(namespace=namespace).auth.token.revoke(hvac_client(bao, namespace, session).token)
    assert verifies(signer)  # 403, login, retried once
    assert session.logins == 2


def test_a_rotated_secret_id_file_is_read_at_the_next_login(bao: BaoServer, tmp_path: Path) -> None:
    namespace = with_transit(bao)
    secret = tmp_path / "secret-id"
    role_id = with_approle(bao, namespace, secret, token_ttl="1h")
    session = connect(bao, namespace, AppRoleAuth(role_id, secret_id_file=secret))
    signer = TransitKeys(session).create("root-07", KeyType.EC_P256)
    admin = bao.client(namespace=namespace)
    old = secret.read_text()
    secret.write_text(admin.auth.approle.generate_secret_id("meshca")["data"]["secret_id"])
    admin.auth.approle.destroy_secret_id("meshca", old)
    admin.auth.token.revoke(hvac_client(bao, namespace, session).token)
    assert verifies(signer)
    assert session.logins == 2


# --- namespaces and the keeper -------------------------------------------------------------

def test_keys_made_in_a_namespace_stay_in_that_namespace(bao: BaoServer) -> None:
    namespace = with_transit(bao)
    session = connect(bao, namespace, TokenAuth(token=token_for(bao, namespace, ["meshca"])))
    TransitKeys(session).create("root-08", KeyType.EC_P256)
    assert bao.client(namespace=namespace).secrets.transit.read_key("root-08")["data"]["type"] == "ecdsa-p256"
    other = with_transit(bao)
    with pytest.raises(VaultNotFound):
        TransitKeys(connect(bao, other, TokenAuth(token=token_for(bao, other, ["meshca"])))).signer(
            "vault-transit:transit/keys/root-08#1")


def test_the_keeper_renews_an_idle_token_against_the_real_server(bao: BaoServer) -> None:
    namespace = with_transit(bao)
    token = token_for(bao, namespace, ["meshca"], ttl="4s", explicit_max_ttl="1h")
    session = connect(bao, namespace, TokenAuth(token=token))
    keeper = VaultKeeper(session, interval=0.5)
    keeper.start()
    try:
        time.sleep(6)  # longer than the token's TTL, and meshca made no call of its own
        # At least one renewal: how far each renewal extends the token is OpenBao's to decide
        # (the requested increment, capped by the token's limits), so a count is not asserted.
        assert session.renewals >= 1
        assert session.health.reachable
        # Alive past its first TTL: OpenBao answers for it (an expired token is a 403).
        lookup = bao.client(token=token, namespace=namespace).auth.token.lookup_self()["data"]
        assert lookup["renewable"] is True and lookup["ttl"] >= 0
    finally:
        keeper.stop()
