"""CaAdmin over fakes: status, operator actions with their audit entries (refusals too), and
a plugged-in CA, which meshca does not rotate."""

from __future__ import annotations

from datetime import timedelta

import pytest

from meshca.core import rotation
from meshca.core.rotation import Kind, Reason, RotationPolicy, State, Withdraw
from meshca.errors import Conflict, LostLease, NotFound
from meshca.service.admin.ca import PLUGGED, CaAdmin, PluggedStatus, TrustBundleView
from tests.fakes.audit import FakeAuditLog
from tests.fakes.ca_generations import FakeCaGenerations, FakeGeneration
from tests.fakes.rotator import FakeJournal, FakeRotator
from tests.unit.admin_fixtures import FixedClock
from tests.unit.pki import NOW, make_authority

AUTHORITY = make_authority()
DAY = timedelta(days=1)


def _rows() -> FakeCaGenerations:
    return FakeCaGenerations([
        FakeGeneration(1, "root", None, "root", "1001", "ec-p256", "file:r", NOW - DAY,
                       NOW + 3650 * DAY, "active", ""),
        FakeGeneration(7, "intermediate", 1, "int", "2001", "ec-p256", "file:i", NOW - DAY,
                       NOW + 365 * DAY, "active", ""),
    ], sequence=3)


def _journal() -> FakeJournal:
    return FakeJournal([
        rotation.Generation(1, Kind.ROOT, State.ACTIVE, NOW - DAY, NOW + 3650 * DAY, NOW - DAY),
        rotation.Generation(7, Kind.INTERMEDIATE, State.ACTIVE, NOW - DAY, NOW + 365 * DAY,
                            NOW - DAY, parent_id=1),
    ], {1})


def _meshca() -> tuple[CaAdmin, FakeRotator, FakeAuditLog, list[bool]]:
    log, changed = FakeAuditLog(), []
    rotator = FakeRotator(_journal(), log)
    admin = CaAdmin(generations=_rows(), audit=log, clock=FixedClock(),
                    authority=lambda: AUTHORITY, rotator=rotator,
                    rotation_policy=RotationPolicy(), changed=lambda: changed.append(True))
    return admin, rotator, log, changed


def _plugged() -> tuple[CaAdmin, FakeAuditLog]:
    log = FakeAuditLog()
    status = PluggedStatus("/etc/cacerts", "ab12", None, ("expires soon",))
    return CaAdmin(generations=_rows(), audit=log, clock=FixedClock(),
                   authority=lambda: AUTHORITY, plugged=lambda: status,
                   bundle_sequence=lambda: 9), log


def test_status_of_a_rotating_ca() -> None:
    admin, _, _, _ = _meshca()
    status = admin.status()
    assert (status.mode, status.bundle_sequence, status.plugged) == ("meshca", 3, None)
    assert status.rotation.automatic and status.rotation.publish_lead_seconds == 86400
    assert status.rotation.next_check is not None
    assert [(g.id, g.signing, g.in_bundle) for g in status.generations] == [
        (1, False, True), (7, True, False)]


def test_status_of_a_plugged_ca_takes_the_signer_from_the_loaded_authority() -> None:
    admin, _ = _plugged()
    status = admin.status()
    assert (status.mode, status.bundle_sequence) == ("plugged", 9)
    assert not status.rotation.automatic and status.rotation.note == PLUGGED
    assert status.plugged is not None and status.plugged.warnings == ("expires soon",)
    assert [(g.id, g.signing, g.in_bundle) for g in status.generations] == [
        (1, False, False), (7, True, False)]


def test_prepare_audits_reloads_and_reports_the_new_generation() -> None:
    admin, rotator, log, changed = _meshca()
    change = admin.prepare(Kind.INTERMEDIATE, "token:ops")
    assert rotator.calls == [("prepare", Kind.INTERMEDIATE)] and changed == [True]
    [action] = change.actions
    assert (action.action, action.kind, action.generation_id, action.reason) == (
        "prepare", "intermediate", 42, "manual")
    assert [(e.actor, e.action, e.target, e.outcome) for e in log.entries] == [
        ("token:ops", "ca.prepare", "intermediate", "ok")]
    assert len(change.generations) == 2


def test_activate_passes_the_waiver_and_names_what_retires() -> None:
    admin, rotator, log, _ = _meshca()
    [action] = admin.activate(Kind.ROOT, "token:ops", waive_lead=True).actions
    assert rotator.calls == [("activate", (Kind.ROOT, True))]
    assert (action.action, action.generation_id, action.retires) == ("activate", 42, 7)
    assert log.entries[0].action == "ca.activate"


def test_taint_audits_the_reason_and_lists_the_rotator_actions() -> None:
    admin, rotator, log, _ = _meshca()
    rotator.taint_actions = [Withdraw(5, Kind.INTERMEDIATE, Reason.TAINTED)]
    change = admin.taint(7, "key leaked", "token:ops")
    assert [(a.action, a.generation_id, a.reason) for a in change.actions] == [
        ("withdraw", 5, "tainted")]
    [entry] = log.entries
    assert (entry.target, entry.detail, entry.outcome) == ("generation/7", "key leaked", "ok")


@pytest.mark.parametrize("error", [NotFound("CA generation 9"), Conflict("already tainted"),
                                   LostLease("another replica")])
def test_a_refused_change_is_audited_as_refused_with_why_and_reraised(error: Exception) -> None:
    admin, rotator, log, changed = _meshca()
    rotator.fail = error
    with pytest.raises(type(error)):
        admin.taint(9, "", "token:ops")
    [entry] = log.entries
    assert (entry.action, entry.outcome, entry.detail) == ("ca.taint", "refused", str(error))
    assert changed == []


@pytest.mark.parametrize("act", ["prepare", "activate", "taint"])
def test_a_plugged_ca_refuses_every_operator_action_with_an_audit_entry(act: str) -> None:
    admin, log = _plugged()
    with pytest.raises(Conflict, match="plugged in"):
        if act == "taint":
            admin.taint(7, "", "token:ops")
        else:
            getattr(admin, act)(Kind.ROOT, "token:ops")
    [entry] = log.entries
    assert (entry.action, entry.outcome, entry.detail) == (f"ca.{act}", "refused", PLUGGED)


def test_trust_bundle_is_none_until_the_ca_is_loaded() -> None:
    loaded: list[object] = []
    view = TrustBundleView(lambda: AUTHORITY if loaded else None, lambda: 4, 300)
    assert view.current() is None
    loaded.append(True)
    assert view.current() is AUTHORITY.bundle and view.sequence() == 4
