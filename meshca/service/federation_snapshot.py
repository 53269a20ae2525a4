"""Every process's in-memory view of the federated bundles (the `FederatedBundles` port):
re-read from the store every interval, like the CA reload, so that request paths never wait
for the database. A failed read keeps the view it has."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from cryptography import x509

from meshca.core.bundle import certificate_pem
from meshca.core.federation import BundleRejected, parse_bundle
from meshca.errors import MeshcaError
from meshca.service.federation_ports import FederatedBundle, FederationRecord, FederationStore
from meshca.service.pause import pause

log = logging.getLogger(__name__)
Listener = Callable[[Mapping[str, FederatedBundle]], None]


class FederationSnapshot:
    def __init__(self, store: FederationStore, own_trust_domain: str) -> None:
        self._store = store
        self._own = own_trust_domain
        self._bundles: Mapping[str, FederatedBundle] = {}
        self._roots_pem = ""  # made when the bundles change: issuance reads it on every call
        self._records: tuple[FederationRecord, ...] = ()
        self._listeners: list[Listener] = []
        self._wake = asyncio.Event()
        self._failing = False

    def snapshot(self) -> Mapping[str, FederatedBundle]:
        return self._bundles

    @property
    def records(self) -> tuple[FederationRecord, ...]:
        """Every stored relationship with its fetch status, as last read."""
        return self._records

    def roots_pem(self) -> str:
        """Every federated root, PEM: for TLS contexts that must also trust federated peers
        (who may then claim which identity is checked apart, per trust domain), and for
        CreateCertificate's bundle with --istio-include-federated."""
        return self._roots_pem

    def add_listener(self, listener: Listener) -> None:
        """Called on the event loop's thread whenever the set of bundles changes."""
        self._listeners.append(listener)

    def wake(self) -> None:
        self._wake.set()

    def refresh(self) -> bool:
        """Blocking: read the store; True when the bundles changed."""
        records = tuple(self._store.all())
        bundles: dict[str, FederatedBundle] = {}
        for record in records:
            bundle = self._bundle(record)
            if bundle is not None:
                bundles[bundle.trust_domain] = bundle
        self._records = records
        changed = _documents(bundles) != _documents(self._bundles)
        if changed:
            self._roots_pem = "".join(certificate_pem(root) for bundle in bundles.values()
                                      for root in bundle.x509_roots)
            self._bundles = bundles
        return changed

    async def refresh_now(self) -> bool:
        changed = await asyncio.to_thread(self.refresh)
        if changed:
            for listener in self._listeners:
                try:
                    listener(self._bundles)
                except Exception:  # one broken consumer must not stop the others
                    log.exception("federation: a snapshot listener failed")
        return changed

    async def run(self, stop: asyncio.Event, interval_seconds: float) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                if await self.refresh_now():
                    log.info("federation: bundles of %s",
                             ", ".join(sorted(self._bundles)) or "no trust domain")
                self._failing = False
            except MeshcaError as exc:
                if not self._failing:
                    log.warning("federation: cannot read the stored bundles, keeping the ones "
                                "held: %s", exc)
                self._failing = True
            await pause(stop, self._wake, interval_seconds)

    def _bundle(self, record: FederationRecord) -> FederatedBundle | None:
        td = record.relationship.trust_domain
        if record.document is None or td == self._own:
            return None  # never mixed with the local trust domain's roots
        try:
            parsed = parse_bundle(record.document, td)
        except BundleRejected as exc:
            log.warning("federation: the stored bundle of %s is unusable: %s", td, exc)
            return None
        return FederatedBundle(trust_domain=td, document=record.document,
                               x509_roots=tuple(parsed.x509_roots), jwt_keys=parsed.jwt_keys,
                               sequence=record.sequence, fetched_at=record.fetched_at)


def _documents(bundles: Mapping[str, FederatedBundle]) -> dict[str, bytes]:
    return {td: b.document for td, b in bundles.items()}


def roots_of(bundles: Mapping[str, FederatedBundle], trust_domain: str,
             ) -> tuple[x509.Certificate, ...]:
    found = bundles.get(trust_domain)
    return found.x509_roots if found is not None else ()


def last_good_age(record: FederationRecord, now: datetime) -> float | None:
    return (now - record.fetched_at).total_seconds() if record.fetched_at else None
