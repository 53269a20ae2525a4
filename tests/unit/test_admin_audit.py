"""AuditTrail over a fake log: cursor pages that never skip or repeat."""

from __future__ import annotations

from meshca.service.admin.audit import AuditTrail, audit_entry
from tests.fakes.audit import FakeAuditLog
from tests.unit.admin_fixtures import FixedClock


def test_pages_continue_after_the_last_id_and_end_with_none() -> None:
    log = FakeAuditLog()
    trail = AuditTrail(log)
    clock = FixedClock()
    for n in range(5):
        trail.append(audit_entry(clock, "token:a", "x.y", str(n)))
    first = trail.page(0, 2)
    assert [r.entry.target for r in first.items] == ["0", "1"] and first.next_after == 2
    second = trail.page(2, 3)
    assert [r.entry.target for r in second.items] == ["2", "3", "4"]
    assert second.next_after is None


def test_audit_entry_is_stamped_by_the_clock() -> None:
    clock = FixedClock()
    entry = audit_entry(clock, "sa:ops/bot", "ca.prepare", "root", outcome="refused", detail="no")
    assert (entry.at, entry.actor, entry.outcome, entry.detail) == (
        clock.current, "sa:ops/bot", "refused", "no")
