"""CertificateAdmin over fakes: paging, revocation with its audit entry, the CRL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from meshca.core.crl import RevocationReason
from meshca.core.remote_signing import LocalSigner, Signer
from meshca.errors import Conflict, NotFound, StoreUnavailable
from meshca.service.admin.certificates import CertificateAdmin
from meshca.service.admin_ports import CertificateFilter
from tests.fakes.ca_generations import FakeCaGenerations, FakeGeneration
from tests.fakes.inventory import FakeInventory
from tests.unit.admin_fixtures import FixedClock, certificate
from tests.unit.pki import NOW, ec_key, make_authority

AUTHORITY = make_authority()  # generation 7, key ec_key(101)


def _generations() -> FakeCaGenerations:
    intermediate = AUTHORITY.certificate
    pem = AUTHORITY.chain_pem[0]
    return FakeCaGenerations([
        FakeGeneration(1, "root", None, "root", "1001", "ec-p256", "file:root", NOW, NOW, "active",
                       AUTHORITY.chain_pem[1]),
        FakeGeneration(7, "intermediate", 1, intermediate.subject.rfc4514_string(), "2001",
                       "ec-p256", "file:intermediate", NOW, NOW, "active", pem),
    ])


def _admin(inventory: FakeInventory, clock: FixedClock | None = None,
           loaded: bool = True) -> tuple[CertificateAdmin, list[str]]:
    asked: list[str] = []

    def signer(location: str) -> Signer:
        asked.append(location)
        return LocalSigner(ec_key("secp256r1", 101))

    return CertificateAdmin(inventory, _generations(), signer,
                            lambda: AUTHORITY if loaded else None, clock or FixedClock()), asked


def test_pages_follow_issue_order_and_end_without_a_position() -> None:
    inventory = FakeInventory()
    for n in range(5):
        inventory.add(certificate(f"{n:02x}", issued=timedelta(minutes=5 - n)))
    admin, _ = _admin(inventory)
    first = admin.page(CertificateFilter(), None, 2)
    assert [c.serial for c in first.items] == ["04", "03"] and first.next_after is not None
    second = admin.page(CertificateFilter(), first.next_after, 2)
    third = admin.page(CertificateFilter(), second.next_after, 2)
    assert [c.serial for c in (*second.items, *third.items)] == ["02", "01", "00"]
    assert third.next_after is None


def test_a_full_last_page_has_no_next_position() -> None:
    inventory = FakeInventory()
    inventory.add(certificate("01"))
    admin, _ = _admin(inventory)
    assert admin.page(CertificateFilter(), None, 1).next_after is None


def test_active_filter_uses_the_clock() -> None:
    inventory = FakeInventory()
    inventory.add(certificate("01", valid=timedelta(hours=1)))
    clock = FixedClock(NOW + timedelta(minutes=30))
    admin, _ = _admin(inventory, clock)
    assert [c.serial for c in admin.page(CertificateFilter(active=True), None, 10).items] == ["01"]
    clock.advance(3600)
    assert admin.page(CertificateFilter(active=True), None, 10).items == ()


def test_revoke_records_the_reason_and_one_audit_entry() -> None:
    inventory = FakeInventory()
    inventory.add(certificate("0a"))
    admin, _ = _admin(inventory)
    revoked = admin.revoke("0a", RevocationReason.KEY_COMPROMISE, "token:ops")
    assert revoked.revoked_at == NOW and revoked.revocation_reason == "keyCompromise"
    [entry] = inventory.audit.entries
    assert (entry.actor, entry.action, entry.target, entry.detail, entry.outcome) == (
        "token:ops", "certificate.revoke", "0a", "keyCompromise", "ok")


def test_revoking_twice_or_an_unknown_serial_writes_no_audit_entry() -> None:
    inventory = FakeInventory()
    inventory.add(certificate("0a", revoked_at=NOW, reason="superseded"))
    admin, _ = _admin(inventory)
    with pytest.raises(Conflict):
        admin.revoke("0a", RevocationReason.SUPERSEDED, "token:ops")
    with pytest.raises(NotFound):
        admin.revoke("0b", RevocationReason.SUPERSEDED, "token:ops")
    assert inventory.audit.entries == []


def test_a_store_outage_is_store_unavailable() -> None:
    inventory = FakeInventory()
    inventory.audit.down = True
    admin, _ = _admin(inventory)
    with pytest.raises(StoreUnavailable):
        admin.get("0a")


def test_crl_of_the_signing_intermediate_lists_its_unexpired_revocations() -> None:
    inventory = FakeInventory()
    inventory.add(certificate("0a", revoked_at=NOW, reason="keyCompromise"))
    inventory.add(certificate("0b", revoked_at=NOW, reason="superseded", valid=timedelta(0)))
    inventory.add(certificate("0c"))
    inventory.add(certificate("0d", issuer=8, revoked_at=NOW, reason="superseded"))
    admin, asked = _admin(inventory)
    crl = admin.crl(None)
    assert asked == ["file:intermediate"]
    assert crl.issuer == AUTHORITY.certificate.subject
    assert [r.serial_number for r in crl] == [0x0A]
    public_key = AUTHORITY.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(public_key)
    assert crl.next_update_utc is not None and crl.last_update_utc == NOW
    assert isinstance(crl, x509.CertificateRevocationList)


@pytest.mark.parametrize("issuer", [1, 99])
def test_crl_of_a_root_or_unknown_generation_is_not_found(issuer: int) -> None:
    admin, asked = _admin(FakeInventory())
    with pytest.raises(NotFound, match=f"intermediate CA generation {issuer}"):
        admin.crl(issuer)
    assert asked == []


def test_crl_without_a_loaded_ca_and_no_issuer_is_not_found() -> None:
    admin, _ = _admin(FakeInventory(), loaded=False)
    with pytest.raises(NotFound):
        admin.crl(None)
