"""Fetching foreign bundles: one replica at a time (the `federation-fetch` lease) fetches
every relationship that is due, verifies the bundle, and stores it, or stores why not and
keeps the last good one.

When a fetch is due: at the stored `next_fetch_at` (None: now, e.g. a relationship just put);
after a good fetch, at the bundle's `spiffe_refresh_hint` within `RefreshBounds`; after a
failure, after an exponential back-off (jittered, from the shortest to the longest bound).
Putting `next_fetch_at` in the database lets a replica that takes the lease over carry on
where the previous holder stopped.

An https_spiffe endpoint is verified against the bundle of its SPIFFE ID's trust domain: the
latest fetched one, or the operator's bootstrap bundle before the first good fetch (SPIFFE
Federation §5.2.2.4). A bundle whose `spiffe_sequence` is lower than the stored one is not
taken (`stale_sequence`): a replayed or rolled-back document must not replace a newer one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from meshca.core.backoff import ExponentialBackoff
from meshca.core.bundle import certificate_pem
from meshca.core.clock import Clock
from meshca.core.federation import (
    HTTPS_SPIFFE,
    MAX_BUNDLE_BYTES,
    BundleRejected,
    RefreshBounds,
    Relationship,
    endpoint_trust_domain,
    parse_bundle,
)
from meshca.errors import LostLease, MeshcaError
from meshca.service.ca_ports import Lease, Leases
from meshca.service.federation_ports import (
    BundleFetcher,
    FederationRecord,
    FederationStore,
    FetchFailed,
    FetchRequest,
    FetchResult,
)
from meshca.service.pause import pause

log = logging.getLogger(__name__)
FETCH_LEASE = "federation-fetch"
OK = "ok"
Observer = Callable[[str, str], None]  # (trust domain, outcome) of every fetch


class FederationRefresher:
    def __init__(self, store: FederationStore, leases: Leases, fetcher: BundleFetcher,
                 clock: Clock, *, identity: str, bounds: RefreshBounds,
                 timeout: timedelta = timedelta(seconds=10),
                 lease_ttl: timedelta = timedelta(seconds=60),
                 observe: Observer = lambda td, outcome: None) -> None:
        self._store = store
        self._leases = leases
        self._fetcher = fetcher
        self._clock = clock
        self._identity = identity
        self._bounds = bounds
        self._timeout = timeout.total_seconds()
        self._lease_ttl = lease_ttl
        self._observe = observe
        self._backoff: dict[str, ExponentialBackoff] = {}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for due fetches now (from the event loop's thread): a relationship was put."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, tick_seconds: float) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                wait = await self.run_once()
            except MeshcaError as exc:  # the database, mostly: try again soon
                log.warning("federation: fetching pass failed: %s", exc)
                wait = tick_seconds
            await pause(stop, self._wake, min(tick_seconds, max(wait, 0.05)))

    async def run_once(self) -> float:
        """One pass: fetch what is due if this replica holds the lease. Seconds until the next
        fetch is due (as far as this replica knows)."""
        now = self._clock.now()
        lease = await asyncio.to_thread(self._leases.acquire, FETCH_LEASE, self._identity,
                                        self._lease_ttl, now)
        if lease is None:
            return self._lease_ttl.total_seconds() / 3
        records = await asyncio.to_thread(self._store.all)
        self._forget_gone({r.relationship.trust_domain for r in records})
        by_domain = {r.relationship.trust_domain: r for r in records}
        due = [r for r in records if r.next_fetch_at is None or r.next_fetch_at <= now]
        await asyncio.gather(*(self._refresh(lease, r, by_domain) for r in due))
        later = [r.next_fetch_at for r in records if r.next_fetch_at is not None and r not in due]
        if due:
            return 0.05 if not later else min(1.0, _until(min(later), self._clock.now()))
        return _until(min(later), now) if later else self._bounds.longest

    async def _refresh(self, lease: Lease, record: FederationRecord,
                       by_domain: dict[str, FederationRecord]) -> None:
        td = record.relationship.trust_domain
        try:
            result = await asyncio.to_thread(self._fetch_one, record, by_domain)
        except Exception as exc:  # a surprise must not stop the other trust domains
            log.exception("federation: fetching the bundle of %s failed unexpectedly", td)
            result = self._failed(td, "internal", f"{type(exc).__name__}: {exc}")
        self._observe(td, result.outcome)
        try:
            await asyncio.to_thread(self._store.record_fetch, lease, td, result)
        except LostLease:
            log.info("federation: another replica took the fetching over")
        except MeshcaError as exc:
            log.warning("federation: could not store the fetch of %s: %s", td, exc)

    def _fetch_one(self, record: FederationRecord,
                   by_domain: dict[str, FederationRecord]) -> FetchResult:
        relationship = record.relationship
        td = relationship.trust_domain
        request = FetchRequest(url=relationship.url, profile=relationship.profile,
                               trust_pem=_endpoint_trust(relationship, by_domain),
                               endpoint_spiffe_id=relationship.endpoint_spiffe_id,
                               timeout_seconds=self._timeout, max_bytes=MAX_BUNDLE_BYTES)
        try:
            body = self._fetcher.fetch(request)
            parsed = parse_bundle(body, td)
        except FetchFailed as exc:
            return self._failed(td, exc.outcome, str(exc))
        except BundleRejected as exc:
            return self._failed(td, exc.outcome, f"{relationship.url}: {exc}")
        if (parsed.sequence is not None and record.sequence is not None
                and parsed.sequence < record.sequence):
            return self._failed(td, "stale_sequence",
                                f"{relationship.url} served spiffe_sequence {parsed.sequence}, "
                                f"older than the stored {record.sequence}")
        self._backoff.pop(td, None)
        now = self._clock.now()
        if record.outcome not in (None, OK):
            log.info("federation: the bundle of %s is fetched again", td)
        return FetchResult(at=now, outcome=OK,
                           next_fetch_at=now + timedelta(
                               seconds=self._bounds.delay(parsed.refresh_hint)),
                           document=body, sequence=parsed.sequence,
                           changed=body != record.document)

    def _failed(self, td: str, outcome: str, message: str) -> FetchResult:
        backoff = self._backoff.setdefault(td, ExponentialBackoff(
            self._bounds.shortest, self._bounds.longest,
            floor=min(1.0, self._bounds.shortest)))
        level = logging.WARNING if backoff.failures == 0 else logging.DEBUG
        log.log(level, "federation: keeping the last good bundle of %s: %s", td, message)
        now = self._clock.now()
        return FetchResult(at=now, outcome=outcome, error=message[:1000],
                           next_fetch_at=now + timedelta(seconds=backoff.failed()))

    def _forget_gone(self, present: set[str]) -> None:
        for td in set(self._backoff) - present:
            del self._backoff[td]


def _endpoint_trust(relationship: Relationship,
                    by_domain: dict[str, FederationRecord]) -> str | None:
    """PEM roots that verify the endpoint: https_web, the configured CA (None: the system's);
    https_spiffe, the latest good bundle of the endpoint's trust domain, else the bootstrap."""
    if relationship.profile != HTTPS_SPIFFE:
        return relationship.web_ca_pem
    owner = by_domain.get(endpoint_trust_domain(relationship))
    if owner is not None and owner.document is not None:
        try:
            roots = parse_bundle(owner.document, owner.relationship.trust_domain).x509_roots
        except BundleRejected:
            roots = ()
        if roots:
            return "".join(certificate_pem(root) for root in roots)
    return relationship.bootstrap_pem


def _until(when: datetime, now: datetime) -> float:
    return max(0.0, (when - now).total_seconds())
