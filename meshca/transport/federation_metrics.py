"""Federation metrics, read at scrape time from the process's snapshot (so every replica shows
the state of every foreign bundle, whichever replica fetched it), plus the fetches this
replica made, by trust domain and outcome."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from meshca.service.federation_ports import FederationRecord

OK = "ok"


class FederationCollector:
    def __init__(self, records: Callable[[], Sequence[FederationRecord]],
                 now: Callable[[], datetime], registry: CollectorRegistry) -> None:
        self._records = records
        self._now = now
        self.fetches: Counter[tuple[str, str]] = Counter()
        registry.register(self)

    def fetched(self, trust_domain: str, outcome: str) -> None:
        """The refresher's observer: one fetch of this replica."""
        self.fetches[(trust_domain, outcome)] += 1

    def collect(self) -> Iterator[Metric]:
        fetches = Metric("meshca_federation_fetches",
                         "Foreign bundle fetches made by this replica, by trust domain and "
                         "outcome (ok, unreachable, timeout, tls, http_status, too_large, "
                         "invalid, wrong_trust_domain, stale_sequence).", "counter")
        for (td, outcome), count in sorted(self.fetches.items()):
            fetches.add_sample(fetches.name + "_total", {"trust_domain": td, "outcome": outcome},
                               float(count))
        yield fetches
        now = self._now()
        since = Metric("meshca_federation_last_success_age_seconds",
                       "Seconds since the last good fetch of each foreign bundle (absent: "
                       "never fetched).", "gauge")
        age = Metric("meshca_federation_bundle_age_seconds",
                     "Seconds since each stored foreign bundle last changed.", "gauge")
        failing = Metric("meshca_federation_fetch_failing",
                         "1 while the last fetch of a trust domain's bundle failed (the last "
                         "good bundle is kept).", "gauge")
        present = Metric("meshca_federation_bundle_present",
                         "1 when a bundle of the trust domain is held.", "gauge")
        for record in self._records():
            labels = {"trust_domain": record.relationship.trust_domain}
            if record.fetched_at is not None:
                since.add_sample(since.name, labels, (now - record.fetched_at).total_seconds())
            if record.changed_at is not None:
                age.add_sample(age.name, labels, (now - record.changed_at).total_seconds())
            failing.add_sample(failing.name, labels,
                               float(record.outcome is not None and record.outcome != OK))
            present.add_sample(present.name, labels, float(record.document is not None))
        yield since
        yield age
        yield failing
        yield present
