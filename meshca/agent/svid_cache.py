"""The agent's SVID cache: one X509-SVID per identity, shared by every stream that watches it,
renewed before it runs out, served with the trust bundle it verifies under.

- The first watch of an identity starts its renewal loop; concurrent first watches wait for
  the same signing. The key is made here, on the node; only the CSR goes to the server.
- Renewal comes at half the leaf's remaining life (counted from when it arrived: notBefore is
  backdated for skew) less up to a tenth of that life, so that the SVIDs of a node (and the
  nodes of a cluster) do not all renew at once.
- A failed signing is retried with exponential back-off (1 s doubling to `retry_max`, full
  jitter). While the server is down the cached SVID keeps being served until it expires; one
  WARNING says so when the outage starts, one INFO when it ends. After expiry an open stream
  waits quietly for the next good SVID, and a new watch gives up (Unavailable) after
  `first_wait`. A refusal (PermissionDenied) reaches the watchers of an identity that has no
  SVID, and is asked again only after the back-off, and only if someone still wants it.
- The bundle is fetched at start and then at its refresh hint (30 s when the source gives
  none), clamped to [1 s, 10 min]. What is served is the fetched roots plus the root at the end
  of every cached chain, so an SVID always verifies under the bundle it comes with; when that
  set changes every watcher of every identity gets a new state.
- The federated trust domains' roots ride along by their own names (never in the own trust
  domain's), and a change of them is a bundle change too. The JWT-SVID keys of the own and the
  federated trust domains are the cache's `JwtBundles`, with watchers of their own.
- An identity no stream has watched for `idle_lifetime` is dropped: no renewals for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509

from meshca.agent.keys import KEY_TYPES, WorkloadKey, check_leaf, is_self_signed, new_key
from meshca.agent.metrics import AgentMetrics
from meshca.agent.ports import (
    BundleSource,
    Identity,
    JwtBundleSet,
    TrustBundle,
    WorkloadSigner,
    X509State,
    X509Svid,
)
from meshca.core.backoff import ExponentialBackoff
from meshca.core.spiffe import SpiffeId
from meshca.errors import MeshcaError, PermissionDenied, Unavailable

log = logging.getLogger(__name__)

DEFAULT_BUNDLE_REFRESH = timedelta(seconds=30)
MIN_BUNDLE_REFRESH = timedelta(seconds=1)
MAX_BUNDLE_REFRESH = timedelta(minutes=10)
RENEW_JITTER = 0.10  # of the leaf's life, taken off the half-life renewal time
_MIN_WAIT = 0.01  # seconds; the wall clock and the loop's clock may disagree by a hair


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class _Entry:
    """One identity: its SVID, the renewal loop's plan, and who is waiting for changes."""

    spiffe_id: SpiffeId
    backoff: ExponentialBackoff
    svid: X509Svid | None = None
    roots: tuple[x509.Certificate, ...] = ()  # the root at the end of the SVID's chain
    not_after: datetime | None = None
    renew_at: datetime | None = None
    retry_at: datetime | None = None  # set after a failure, cleared by a success
    error: MeshcaError | None = None  # the last failure, until a success
    outage: bool = False  # the WARNING for the current run of failures was logged
    attempting: bool = False
    watchers: int = 0
    idle_since: datetime | None = None
    version: int = 0  # bumped whenever `svid` changes
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # replaced on every notify
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # the renewal loop's doorbell
    task: asyncio.Task[None] | None = None
    closed: bool = False  # dropped for good (stop, a failed loop): its watchers must end


class SvidCache:
    """`X509Svids` and `JwtBundles` over a `WorkloadSigner` and a `BundleSource`."""

    def __init__(
        self,
        signer: WorkloadSigner,
        bundles: BundleSource,
        *,
        trust_domain: str,
        key_type: str = "ec-p256",
        ttl: timedelta | None = None,
        retry_max: timedelta = timedelta(seconds=60),
        idle_lifetime: timedelta = timedelta(minutes=10),
        first_wait: timedelta = timedelta(seconds=10),
        metrics: AgentMetrics | None = None,
        now: Callable[[], datetime] = _utcnow,
        rng: random.Random | None = None,
    ) -> None:
        if key_type not in KEY_TYPES:
            raise ValueError(f"unknown key type {key_type!r}; one of {', '.join(KEY_TYPES)}")
        if retry_max < timedelta(seconds=1):
            raise ValueError("retry_max must be at least 1s")
        SpiffeId.for_trust_domain(trust_domain)  # ValueError names what is wrong
        self._signer = signer
        self._bundles = bundles
        self._trust_domain = trust_domain
        self._key_type = key_type
        self._ttl = ttl
        self._retry_max = retry_max.total_seconds()
        self._idle_lifetime = idle_lifetime
        self._first_wait = first_wait.total_seconds()
        self._metrics = metrics
        self._now = now
        self._rng = rng or random.Random()  # jitter, not a secret
        self._entries: dict[SpiffeId, _Entry] = {}
        self._fetched: tuple[x509.Certificate, ...] = ()
        self._served: tuple[x509.Certificate, ...] = ()
        self._federated: dict[str, TrustBundle] = {}
        self._served_federated: dict[str, tuple[x509.Certificate, ...]] = {}
        self._bundle_version = 0
        self._jwt = JwtBundleSet({trust_domain: {}})
        self._jwt_changed = asyncio.Event()  # replaced on every change
        self._bundle_backoff = ExponentialBackoff(1.0, self._retry_max, rng=self._rng)
        self._bundle_outage = False
        self._bundle_task: asyncio.Task[None] | None = None
        self._soonest: datetime | None = None
        self._running = False

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the bundle once (a failure is logged and retried in the background), then
        follow it."""
        if self._running:
            return
        self._running = True
        if self._metrics is not None:
            self._metrics.soonest_expiry.set_function(self._seconds_to_soonest)
        delay = await self._refresh_bundle()
        self._bundle_task = asyncio.create_task(self._follow_bundle(delay),
                                                name="svid-cache-bundle")

    async def stop(self) -> None:
        """Stop every background task; open watches end with Unavailable."""
        self._running = False
        tasks = [t for t in (self._bundle_task, *(e.task for e in self._entries.values()))
                 if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._bundle_task = None
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            entry.closed = True
            self._notify(entry)
        self._notify_jwt()
        self._update_gauges()
        if self._metrics is not None:
            self._metrics.soonest_expiry.set_function(lambda: float("inf"))

    def ready(self) -> bool:
        """The bundle has been fetched at least once."""
        return bool(self._fetched)

    def soonest_expiry(self) -> datetime | None:
        return self._soonest

    def cached(self) -> dict[SpiffeId, X509Svid]:
        """The valid SVIDs held now, by identity (health pages, tests)."""
        return {e.spiffe_id: e.svid for e in self._entries.values()
                if e.svid is not None and self._valid(e)}

    # ---- X509Svids -------------------------------------------------------------------------

    async def watch(self, identity: Identity) -> AsyncIterator[X509State]:
        spiffe_id = identity.spiffe_id
        if not self._running:
            raise Unavailable("the SVID cache is not running")
        if spiffe_id.trust_domain != self._trust_domain:
            raise PermissionDenied(f"{spiffe_id} is not in the trust domain "
                                   f"{self._trust_domain}")
        entry = self._acquire(spiffe_id)
        try:
            await self._first_svid(entry)
            sent: tuple[int, int] | None = None
            while True:
                changed = entry.changed
                if entry.closed:
                    raise Unavailable(f"no SVID for {spiffe_id} any more")
                key = (entry.version, self._bundle_version)
                if key != sent and self._valid(entry):
                    sent = key
                    yield self._state(entry)
                    continue
                await changed.wait()
        finally:
            self._release(entry)

    def _acquire(self, spiffe_id: SpiffeId) -> _Entry:
        entry = self._entries.get(spiffe_id)
        if entry is None:
            entry = _Entry(spiffe_id, ExponentialBackoff(1.0, self._retry_max, rng=self._rng))
            self._entries[spiffe_id] = entry
            entry.task = asyncio.create_task(self._run(entry), name=f"svid {spiffe_id}")
        entry.watchers += 1
        entry.idle_since = None
        entry.wake.set()
        return entry

    def _release(self, entry: _Entry) -> None:
        entry.watchers -= 1
        if entry.watchers == 0:
            entry.idle_since = self._now()
            entry.wake.set()

    async def _first_svid(self, entry: _Entry) -> None:
        """Wait until `entry` holds a valid SVID; raise when it will not within `first_wait`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._first_wait
        while not self._valid(entry):
            if entry.closed:
                raise Unavailable(f"no SVID for {entry.spiffe_id} any more")
            changed = entry.changed
            error, retry_in = entry.error, self._seconds_until(entry.retry_at)
            if error is not None and not entry.attempting:
                if isinstance(error, PermissionDenied) and retry_in > 0:
                    raise PermissionDenied(str(error))
                if retry_in > deadline - loop.time():
                    raise Unavailable(f"no SVID for {entry.spiffe_id} yet: {error}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                detail = f": {error}" if error is not None else ""
                raise Unavailable(f"no SVID for {entry.spiffe_id} within "
                                  f"{self._first_wait:g}s{detail}")
            await _wait(changed, remaining)

    def _state(self, entry: _Entry) -> X509State:
        assert entry.svid is not None
        return X509State(svids=(entry.svid,),
                         bundles={**self._served_federated, self._trust_domain: self._served})

    # ---- JwtBundles ------------------------------------------------------------------------

    def jwt_bundles(self) -> JwtBundleSet:
        return self._jwt

    async def watch_jwt_bundles(self) -> AsyncIterator[JwtBundleSet]:
        sent: JwtBundleSet | None = None
        while True:
            if not self._running:
                raise Unavailable("the SVID cache is not running")
            changed = self._jwt_changed
            if self._jwt is not sent:
                sent = self._jwt
                yield sent
                continue
            await changed.wait()

    def _notify_jwt(self) -> None:
        changed, self._jwt_changed = self._jwt_changed, asyncio.Event()
        changed.set()

    def _valid(self, entry: _Entry) -> bool:
        return entry.svid is not None and entry.not_after is not None \
            and entry.not_after > self._now()

    # ---- one identity's renewal loop -------------------------------------------------------

    async def _run(self, entry: _Entry) -> None:
        try:
            await self._renew_forever(entry)
        except Exception:
            # A bug must not leave streams waiting on an identity nothing renews any more.
            log.exception("the renewal loop of %s failed; dropping it", entry.spiffe_id)
            entry.closed = True
            self._drop(entry)
            self._notify(entry)

    async def _renew_forever(self, entry: _Entry) -> None:
        while True:
            now = self._now()
            if entry.not_after is not None and entry.not_after <= now:
                self._expire(entry)
            idle_until = (entry.idle_since + self._idle_lifetime
                          if entry.watchers == 0 and entry.idle_since is not None else None)
            if idle_until is not None and idle_until <= now:
                self._drop(entry)
                return
            wanted = entry.svid is not None or entry.watchers > 0
            due = entry.retry_at or entry.renew_at
            if wanted and (due is None or due <= now):
                await self._attempt(entry)
                continue
            times = [t for t in (due if wanted else None, entry.not_after, idle_until)
                     if t is not None]
            timeout = max(_MIN_WAIT, min((t - now).total_seconds() for t in times)) \
                if times else None
            entry.wake.clear()
            await _wait(entry.wake, timeout)

    async def _attempt(self, entry: _Entry) -> None:
        entry.attempting = True
        try:
            key = await new_key(self._key_type, entry.spiffe_id)
            chain = await self._signer.sign(entry.spiffe_id, key.csr_pem, self._ttl)
            check_leaf(chain, entry.spiffe_id, key.public_key)
            if chain[0].not_valid_after_utc <= self._now():
                raise Unavailable("the server answered with a certificate that has already "
                                  "expired (are the clocks right?)")
        except (Unavailable, PermissionDenied) as exc:
            self._failed(entry, exc)
        except Exception as exc:  # a surprise is retried, never kills the loop
            log.exception("signing an SVID for %s failed unexpectedly", entry.spiffe_id)
            self._failed(entry, Unavailable(f"unexpected {type(exc).__name__}"))
        else:
            self._renewed(entry, chain, key)
        finally:
            entry.attempting = False
            self._notify(entry)

    def _renewed(self, entry: _Entry, chain: tuple[x509.Certificate, ...],
                 key: WorkloadKey) -> None:
        leaf, rest = chain[0], chain[1:]
        now = self._now()
        start = max(leaf.not_valid_before_utc, now)
        life = leaf.not_valid_after_utc - start
        entry.svid = X509Svid(entry.spiffe_id, (leaf, *(c for c in rest if not is_self_signed(c))),
                              key.pkcs8_der)
        entry.roots = tuple(c for c in rest if is_self_signed(c))
        entry.not_after = leaf.not_valid_after_utc
        entry.renew_at = start + life / 2 - life * (RENEW_JITTER * self._rng.random())
        entry.retry_at = None
        entry.error = None
        entry.backoff.reset()
        entry.version += 1
        self._count("ok")
        if entry.outage:
            entry.outage = False
            log.info("meshca server answered again: SVID for %s renewed, valid until %s",
                     entry.spiffe_id, _iso(entry.not_after))
        else:
            log.debug("SVID for %s signed, valid until %s, renewal at %s", entry.spiffe_id,
                      _iso(entry.not_after), _iso(entry.renew_at))
        self._update_bundle()
        self._update_gauges()

    def _failed(self, entry: _Entry, exc: MeshcaError) -> None:
        delay = entry.backoff.failed()
        entry.retry_at = self._now() + timedelta(seconds=delay)
        entry.error = exc
        refused = isinstance(exc, PermissionDenied)
        self._count("refused" if refused else "unavailable")
        what = "server refused" if refused else "server unavailable"
        if self._valid(entry):
            assert entry.not_after is not None
            serving = f"serving cached SVID for {entry.spiffe_id} until {_iso(entry.not_after)}"
        else:
            serving = f"no valid SVID for {entry.spiffe_id}"
        level = logging.DEBUG if entry.outage else logging.WARNING
        entry.outage = True
        log.log(level, "%s, %s, retry in %.1fs: %s", what, serving, delay, exc)

    def _expire(self, entry: _Entry) -> None:
        log.warning("SVID for %s expired at %s; nothing to serve for it until the server "
                    "signs again", entry.spiffe_id, _iso(entry.not_after))
        entry.svid, entry.roots, entry.not_after, entry.renew_at = None, (), None, None
        entry.version += 1
        self._update_bundle()
        self._update_gauges()
        self._notify(entry)

    def _drop(self, entry: _Entry) -> None:
        log.debug("no stream has watched %s for %s; dropping it", entry.spiffe_id,
                  self._idle_lifetime)
        if self._entries.get(entry.spiffe_id) is entry:
            del self._entries[entry.spiffe_id]
        entry.closed = True
        self._update_bundle()
        self._update_gauges()

    # ---- the bundle ------------------------------------------------------------------------

    async def _follow_bundle(self, delay: float) -> None:
        while True:
            await asyncio.sleep(delay)
            delay = await self._refresh_bundle()

    async def _refresh_bundle(self) -> float:
        """Fetch once; return the seconds until the next fetch."""
        try:
            bundle = await self._bundles.fetch()
            if bundle.trust_domain != self._trust_domain:
                raise Unavailable(f"the bundle source answered for {bundle.trust_domain}, not "
                                  f"{self._trust_domain}")
            if not bundle.roots:
                raise Unavailable("the bundle source answered with no roots")
        except Exception as exc:  # keep the roots held, ask again later
            delay = self._bundle_backoff.failed()
            if not isinstance(exc, Unavailable):
                log.exception("fetching the trust bundle failed unexpectedly")
            log.log(logging.DEBUG if self._bundle_outage else logging.WARNING,
                    "trust bundle unavailable, serving the %d roots held, retry in %.1fs: %s",
                    len(self._fetched), delay, exc)
            self._bundle_outage = True
            return delay
        if self._bundle_outage:
            log.info("trust bundle source answered again")
        self._bundle_outage = False
        self._bundle_backoff.reset()
        self._fetched = bundle.roots
        self._federated = {td: b for td, b in bundle.federated.items()
                           if td != self._trust_domain}
        self._update_bundle()
        self._update_jwt(bundle)
        hint = bundle.refresh_hint or DEFAULT_BUNDLE_REFRESH
        return min(MAX_BUNDLE_REFRESH, max(MIN_BUNDLE_REFRESH, hint)).total_seconds()

    def _update_bundle(self) -> None:
        """Recompute the served roots; on a change, every watcher hears of it."""
        roots = tuple(dict.fromkeys((*self._fetched, *(
            r for e in self._entries.values() if e.svid is not None for r in e.roots))))
        federated = {td: b.roots for td, b in sorted(self._federated.items()) if b.roots}
        if roots == self._served and federated == self._served_federated:
            return
        if federated != self._served_federated:
            log.info("federated X.509 bundles now: %s", ", ".join(
                f"{td} ({len(r)} roots)" for td, r in federated.items()) or "none")
        if roots != self._served:
            log.info("trust bundle for %s now holds %d roots", self._trust_domain, len(roots))
        self._served, self._served_federated = roots, federated
        self._bundle_version += 1
        if self._metrics is not None:
            self._metrics.bundle_updates.inc()
        for entry in self._entries.values():
            self._notify(entry)

    def _update_jwt(self, bundle: TrustBundle) -> None:
        """The JWT bundles of the fetched bundle; on a change, every JWT watcher hears of it."""
        keys = {td: dict(b.jwt_keys) for td, b in sorted(self._federated.items()) if b.jwt_keys}
        keys[self._trust_domain] = dict(bundle.jwt_keys)
        if keys == self._jwt.keys:
            return
        self._jwt = JwtBundleSet(keys)
        if self._metrics is not None:
            self._metrics.bundle_updates.inc()
        log.info("JWT bundles now: %s", ", ".join(
            f"{td} ({len(k)} keys)" for td, k in keys.items()))
        self._notify_jwt()

    # ---- small helpers ---------------------------------------------------------------------

    @staticmethod
    def _notify(entry: _Entry) -> None:
        changed, entry.changed = entry.changed, asyncio.Event()
        changed.set()

    def _seconds_until(self, when: datetime | None) -> float:
        return 0.0 if when is None else (when - self._now()).total_seconds()

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.renewals.labels(outcome).inc()

    def _update_gauges(self) -> None:
        expiries = [e.not_after for e in self._entries.values()
                    if e.svid is not None and e.not_after is not None]
        self._soonest = min(expiries, default=None)
        if self._metrics is not None:
            self._metrics.svids_cached.set(len(expiries))

    def _seconds_to_soonest(self) -> float:
        # Called by the metrics exporter, maybe from another thread: one read of one field.
        soonest = self._soonest
        if soonest is None:
            return float("inf")
        return max(0.0, (soonest - self._now()).total_seconds())


async def _wait(event: asyncio.Event, timeout: float | None) -> None:
    """Until `event` is set or `timeout` seconds pass. Not `asyncio.wait_for`: on 3.11 it
    swallows a cancellation that arrives as the event is set, and stop() would hang."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def _iso(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when is not None else "?"
