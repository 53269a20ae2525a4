"""CA lifecycle metrics, read at scrape time: expiry per generation, bundle sequence, rotations.

Read from the journal on every scrape (a small table), so every replica reports the same
generations whichever of them rotated; rotation events are this replica's own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from meshca.errors import Unavailable
from meshca.service.ca_ports import CaState
from meshca.service.ca_rotator import CaRotator

log = logging.getLogger(__name__)


class CaStateCollector:
    def __init__(self, repository: CaState, rotator: CaRotator | None,
                 bundle_sequence: Callable[[], int], registry: CollectorRegistry,
                 vault_alert: Callable[[], float] | None = None) -> None:
        self._vault_alert = vault_alert
        self._repository = repository
        self._rotator = rotator
        self._sequence = bundle_sequence
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        expiry = Metric("meshca_ca_generation_expiry_timestamp_seconds",
                        "Unix time at which each root and intermediate generation expires.", "gauge")
        try:
            generations = self._repository.all()
        except Unavailable as exc:  # a scrape must not fail because the database blinked
            log.debug("CA metrics: journal unreadable: %s", exc)
            generations = []
        for g in generations:
            expiry.add_sample(expiry.name, {"generation": str(g.id), "kind": g.kind, "state": g.state},
                              g.not_after.timestamp())
        yield expiry
        sequence = Metric("meshca_trust_bundle_sequence",
                          "spiffe_sequence of the trust bundle this replica serves.", "gauge")
        sequence.add_sample(sequence.name, {}, float(self._sequence()))
        yield sequence
        events = Metric("meshca_ca_rotation_events",
                        "CA rotation actions applied by this replica, by event, kind and reason.",
                        "counter")
        taints = Metric("meshca_ca_taints", "CA generations tainted through this replica.", "counter")
        failing = Metric("meshca_ca_rotation_failing",
                         "1 while this replica's rotation passes fail (see the log).", "gauge")
        if self._rotator is not None:
            for (event, kind, reason), count in sorted(self._rotator.events.items()):
                events.add_sample(events.name + "_total",
                                  {"event": event, "kind": kind, "reason": reason}, float(count))
            for kind, count in sorted(self._rotator.tainted.items()):
                taints.add_sample(taints.name + "_total", {"kind": kind}, float(count))
            failing.add_sample(failing.name, {}, float(self._rotator.last_error is not None))
        yield events
        yield taints
        yield failing
        if self._vault_alert is not None:
            alert = Metric("meshca_vault_alert", "1 while Vault has failed for 30 s or a due "
                           "rotation waits for it.", "gauge")
            alert.add_sample(alert.name, {}, self._vault_alert())
            yield alert
