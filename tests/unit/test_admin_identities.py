"""IdentityAdmin over fakes: block and unblock, each with its audit entry, or neither."""

from __future__ import annotations

import pytest

from meshca.errors import Conflict, NotFound
from meshca.service.admin.identities import IdentityAdmin
from meshca.service.admin_ports import BlockedIdentity
from tests.fakes.inventory import FakeInventory
from tests.unit.admin_fixtures import FixedClock
from tests.unit.pki import NOW

API = "spiffe://cluster.local/ns/shop/sa/api"


def test_block_lists_the_identity_and_audits_with_the_reason() -> None:
    inventory = FakeInventory()
    identities = IdentityAdmin(inventory, FixedClock())
    identities.block(API, "stolen key", "token:ops")
    assert identities.blocked() == [BlockedIdentity(API, "stolen key", "token:ops", NOW)]
    [entry] = inventory.audit.entries
    assert (entry.action, entry.target, entry.detail, entry.at) == (
        "identity.block", API, "stolen key", NOW)


def test_an_empty_reason_is_audited_as_no_detail() -> None:
    inventory = FakeInventory()
    IdentityAdmin(inventory, FixedClock()).block(API, "", "token:ops")
    assert inventory.audit.entries[0].detail is None


def test_blocking_twice_conflicts_and_unblocking_an_unblocked_one_is_not_found() -> None:
    inventory = FakeInventory()
    identities = IdentityAdmin(inventory, FixedClock())
    identities.block(API, "", "token:ops")
    with pytest.raises(Conflict):
        identities.block(API, "again", "token:ops")
    identities.unblock(API, "token:ops")
    with pytest.raises(NotFound):
        identities.unblock(API, "token:ops")
    assert [e.action for e in inventory.audit.entries] == ["identity.block", "identity.unblock"]
    assert identities.blocked() == []
