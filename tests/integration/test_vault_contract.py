"""The Vault behaviours meshca relies on, asserted through hvac and meshca's Vault adapter.

Run against the suite's real OpenBao server (`bao server -dev`, tests/vault/bao.py). The
tests that break Vault on purpose (seal it, rate-limit it) use the in-test fake
(`fake_vault`): a real server cannot be made to do that on demand.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from meshca.core import templates
from meshca.core.keys import KeyType
from meshca.infra.vault import (
    KeyStoreConflict,
    KvKeyStore,
    TokenAuth,
    TransitKeys,
    VaultConflict,
    VaultConnection,
    VaultDenied,
    VaultNotFound,
    VaultPkiUpstream,
    VaultRejected,
    VaultSession,
    VaultUnavailable,
)
from tests.fakes.vault_server import VaultTarget, vault_target
from tests.vault.bao import BaoServer

pytestmark = pytest.mark.bao


@pytest.fixture(scope="module")
def vault(bao_server: BaoServer) -> Iterator[VaultTarget]:
    with vault_target((bao_server.addr, bao_server.root_token, bao_server.ca_cert)) as target:
        yield target


@pytest.fixture(scope="module")
def fake_vault() -> Iterator[VaultTarget]:
    with vault_target() as target:
        yield target


def session(vault: VaultTarget, token: str | None = None) -> VaultSession:
    auth = TokenAuth(token=token or vault.root_token)
    return VaultSession(VaultConnection(vault.addr, vault.ca_cert), auth)


def child_token(vault: VaultTarget, *, ttl: str = "1h", renewable: bool = True,
                policies: list[str] | None = None, explicit_max_ttl: str | None = None) -> str:
    response = vault.client().auth.token.create(policies=policies or ["default"], ttl=ttl,
                                                renewable=renewable, explicit_max_ttl=explicit_max_ttl)
    token: str = response["auth"]["client_token"]
    return token


def name() -> str:
    return f"meshca-contract-{secrets.token_hex(4)}"


# --- health and tokens -------------------------------------------------------------------------

def test_health_reports_an_unsealed_initialized_vault(vault: VaultTarget) -> None:
    health = vault.client().sys.read_health_status(method="GET")
    assert health["initialized"] is True
    assert health["sealed"] is False


def test_lookup_self_gives_ttl_and_renewability(vault: VaultTarget) -> None:
    token = child_token(vault, ttl="10m")
    data = vault.client(token).auth.token.lookup_self()["data"]
    assert 590 <= data["ttl"] <= 600
    assert data["renewable"] is True
    assert "default" in data["policies"]


def test_renew_self_extends_the_ttl_up_to_the_max(vault: VaultTarget) -> None:
    token = child_token(vault, ttl="60s", explicit_max_ttl="5m")
    auth = vault.client(token).auth.token.renew_self(increment="120s")["auth"]
    assert auth["lease_duration"] == 120
    assert auth["renewable"] is True
    capped = vault.client(token).auth.token.renew_self(increment="1h")["auth"]
    assert capped["lease_duration"] <= 300


def test_renewing_a_non_renewable_token_is_a_400(vault: VaultTarget) -> None:
    token = child_token(vault, renewable=False)
    with pytest.raises(VaultRejected) as caught:
        session(vault, token).call("renew", lambda c: c.auth.token.renew_self())
    assert caught.value.status == 400


def test_an_unknown_token_is_403_and_never_echoed(vault: VaultTarget) -> None:
    bogus = "hvs." + secrets.token_urlsafe(24)
    with pytest.raises(VaultDenied) as caught:
        TransitKeys(session(vault, bogus), vault.transit_mount).create(name(), KeyType.EC_P256)
    assert caught.value.status == 403
    assert bogus not in str(caught.value)


def test_a_token_without_the_policy_gets_403_permission_denied(vault: VaultTarget) -> None:
    keys = TransitKeys(session(vault), vault.transit_mount)
    signer = keys.create(name(), KeyType.EC_P256)
    weak = session(vault, child_token(vault))
    with pytest.raises(VaultDenied, match="permission denied") as caught:
        TransitKeys(weak, vault.transit_mount).signer(str(signer.location))
    assert caught.value.status == 403


# --- transit -----------------------------------------------------------------------------------

@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048])
def test_transit_keys_are_non_exportable_and_sign_prehashed_x509_signatures(
        vault: VaultTarget, key_type: KeyType) -> None:
    key_name = name()
    signer = TransitKeys(session(vault), vault.transit_mount).create(key_name, key_type)
    info = vault.client().secrets.transit.read_key(name=key_name, mount_point=vault.transit_mount)["data"]
    assert info["exportable"] is False
    assert info["type"] == {"ec-p256": "ecdsa-p256", "ec-p384": "ecdsa-p384"}.get(key_type.value, "rsa-2048")

    message = b"to-be-signed certificate bytes"
    signature = signer.sign(message)
    public = signer.public_key
    if isinstance(public, ec.EllipticCurvePublicKey):
        algorithm: hashes.HashAlgorithm = hashes.SHA384() if key_type is KeyType.EC_P384 else hashes.SHA256()
        public.verify(signature, message, ec.ECDSA(algorithm))  # DER ECDSA-Sig-Value
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def test_transit_sign_answers_vault_prefixed_signatures(vault: VaultTarget) -> None:
    key_name = name()
    TransitKeys(session(vault), vault.transit_mount).create(key_name, KeyType.EC_P256)
    digest = hashlib.sha256(b"x").digest()
    data = vault.client().secrets.transit.sign_data(
        name=key_name, hash_input=base64.b64encode(digest).decode(), hash_algorithm="sha2-256",
        prehashed=True, marshaling_algorithm="asn1", mount_point=vault.transit_mount)["data"]
    assert data["signature"].startswith("vault:v1:")
    public = serialization.load_pem_public_key(vault.client().secrets.transit.read_key(
        name=key_name, mount_point=vault.transit_mount)["data"]["keys"]["1"]["public_key"].encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(base64.b64decode(data["signature"].split(":")[2]), digest,
                  ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_a_pinned_signer_keeps_signing_with_its_version_after_rotation(vault: VaultTarget) -> None:
    key_name = name()
    keys = TransitKeys(session(vault), vault.transit_mount)
    signer = keys.create(key_name, KeyType.EC_P256)
    vault.client().secrets.transit.rotate_key(name=key_name, mount_point=vault.transit_mount)
    reopened = keys.signer(str(signer.location))
    signature = reopened.sign(b"after rotation")
    assert isinstance(signer.public_key, ec.EllipticCurvePublicKey)
    signer.public_key.verify(signature, b"after rotation", ec.ECDSA(hashes.SHA256()))


def test_creating_an_existing_transit_key_is_refused(vault: VaultTarget) -> None:
    keys = TransitKeys(session(vault), vault.transit_mount)
    key_name = name()
    keys.create(key_name, KeyType.EC_P256)
    with pytest.raises(VaultRejected, match="already exists"):
        keys.create(key_name, KeyType.EC_P256)


def test_signing_with_a_missing_transit_key_is_an_error(vault: VaultTarget) -> None:
    with pytest.raises(VaultNotFound):
        TransitKeys(session(vault), vault.transit_mount).signer(
            f"vault-transit:{vault.transit_mount}/keys/{name()}#1")


# --- kv v2 -------------------------------------------------------------------------------------

def test_kv_check_and_set_creates_once_and_refuses_a_stale_version(vault: VaultTarget) -> None:
    kv = vault.client().secrets.kv.v2
    path = f"contract/{name()}"
    assert kv.create_or_update_secret(path=path, secret={"v": "1"}, cas=0,
                                      mount_point=vault.kv_mount)["data"]["version"] == 1
    store = KvKeyStore(session(vault), vault.kv_mount, "contract")
    with pytest.raises(VaultConflict, match="check-and-set parameter did not match the current version") \
            as caught:
        session(vault).call("stale write", lambda c: c.secrets.kv.v2.create_or_update_secret(
            path=path, secret={"v": "x"}, cas=0, mount_point=vault.kv_mount))
    assert caught.value.status == 400
    assert store.write(path, {"v": "2"}, expected_version=1) == 2
    old: dict[str, Any] = kv.read_secret_version(path=path, version=1, mount_point=vault.kv_mount,
                                                 raise_on_deleted_version=True)["data"]
    assert old["data"] == {"v": "1"}
    assert kv.read_secret_metadata(path=path, mount_point=vault.kv_mount)["data"]["current_version"] == 2


def test_kv_keystore_detects_a_lost_race_instead_of_overwriting(vault: VaultTarget) -> None:
    first = KvKeyStore(session(vault), vault.kv_mount, "meshca/ca-keys")
    second = KvKeyStore(session(vault), vault.kv_mount, "meshca/ca-keys")  # another replica
    key_name = name()
    winner = KeyType.EC_P256.generate()
    location = first.put(key_name, winner)
    with pytest.raises(KeyStoreConflict, match="another replica wrote it first") as caught:
        second.put(key_name, KeyType.EC_P256.generate())
    assert caught.value.current_version == 1
    assert second.load(location).private_numbers() == winner.private_numbers()


def test_a_missing_kv_secret_is_404(vault: VaultTarget) -> None:
    with pytest.raises(VaultNotFound) as caught:
        KvKeyStore(session(vault), vault.kv_mount).read(f"nothing/{name()}")
    assert caught.value.status == 404


# --- failures that only the fake can stage -----------------------------------------------------

def test_a_sealed_vault_answers_503_and_is_unavailable(fake_vault: VaultTarget) -> None:
    assert fake_vault.fake is not None
    live = session(fake_vault)
    keys = TransitKeys(live, fake_vault.transit_mount)
    signer = keys.create(name(), KeyType.EC_P256)
    fake_vault.fake.sealed = True
    try:
        with pytest.raises(VaultUnavailable, match="Vault is sealed") as caught:
            signer.sign(b"x")
        assert caught.value.status == 503
        health = fake_vault.client().sys.read_health_status(method="GET")  # non-200: a Response
        assert health.status_code == 503
        assert health.json()["sealed"] is True
        assert not live.health.reachable
    finally:
        fake_vault.fake.sealed = False
    signer.sign(b"x")
    assert live.health.reachable


def test_rate_limiting_is_429_and_unavailable(fake_vault: VaultTarget) -> None:
    assert fake_vault.fake is not None
    signer = TransitKeys(session(fake_vault), fake_vault.transit_mount).create(name(), KeyType.EC_P256)
    fake_vault.fake.inject(f"{fake_vault.transit_mount}/sign/", 429,
                      [f"request path \"{fake_vault.transit_mount}/sign\": rate limit quota exceeded"],
                      headers={"Retry-After": "1"})
    with pytest.raises(VaultUnavailable, match="rate limit quota exceeded") as caught:
        signer.sign(b"x")
    assert caught.value.status == 429
    signer.sign(b"x")  # only one request was limited


# --- pki as an upstream ------------------------------------------------------------------------

def test_pki_signs_meshcas_intermediate_from_its_csr(vault: VaultTarget) -> None:
    mount = f"meshca-test-pki-{secrets.token_hex(4)}"
    client = vault.client()
    client.sys.enable_secrets_engine(backend_type="pki", path=mount, config={"max_lease_ttl": "87600h"})
    try:
        client.secrets.pki.generate_root(type="internal", common_name="corp root",
                                         extra_params={"ttl": "8760h"}, mount_point=mount)
        upstream = VaultPkiUpstream(session(vault), mount)
        key = KeyType.EC_P256.generate()
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(templates.ca_subject("meshca", "intermediate", 1, 0xabc))
               .add_extension(x509.SubjectAlternativeName(
                   [x509.UniformResourceIdentifier("spiffe://cluster.local")]), critical=False)
               .sign(key, hashes.SHA256()))
        signed = upstream.sign_intermediate(csr, ttl=timedelta(days=7),
                                            uri_sans=["spiffe://cluster.local"])
        assert signed.certificate.public_key() == key.public_key()
        assert signed.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        signed.certificate.verify_directly_issued_by(signed.issuing_ca)
        san = signed.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local"]
        lifetime = signed.certificate.not_valid_after_utc - signed.certificate.not_valid_before_utc
        assert timedelta(days=6, hours=23) <= lifetime <= timedelta(days=7, minutes=1)
        assert signed.chain and signed.chain[0] == signed.issuing_ca
    finally:
        client.sys.disable_secrets_engine(path=mount)


def test_pki_without_a_root_is_a_500_naming_the_missing_issuer(vault: VaultTarget) -> None:
    """OpenBao answers 500, not 400: meshca treats it as an upstream outage (rotation waits,
    the alert is raised) and the message says what is missing."""
    mount = f"meshca-test-pki-{secrets.token_hex(4)}"
    vault.client().sys.enable_secrets_engine(backend_type="pki", path=mount)
    try:
        key = KeyType.EC_P256.generate()
        csr = x509.CertificateSigningRequestBuilder().subject_name(
            templates.ca_subject("meshca", "intermediate", 1, 1)).sign(key, hashes.SHA256())
        with pytest.raises(VaultUnavailable, match="no default issuer") as caught:
            VaultPkiUpstream(session(vault), mount).sign_intermediate(csr, ttl=timedelta(days=1), uri_sans=[])
        assert caught.value.status == 500
    finally:
        vault.client().sys.disable_secrets_engine(path=mount)


def test_a_sealed_vault_is_a_signer_unavailable_for_the_service_layer(fake_vault: VaultTarget) -> None:
    assert fake_vault.fake is not None
    from meshca.core.remote_signing import SignerUnavailable

    signer = TransitKeys(session(fake_vault), fake_vault.transit_mount).create(name(), KeyType.EC_P256)
    fake_vault.fake.sealed = True
    try:
        with pytest.raises(SignerUnavailable):
            signer.sign(b"x")
    finally:
        fake_vault.fake.sealed = False
