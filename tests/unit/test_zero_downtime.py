"""The zero-downtime proof: two years of automatic rotation, a real mutual TLS handshake at every step.

A small CA simulator (here) drives `rotation.next_step` over a journal of real certificates
(EC P-256 keys, meshca's templates, its leaf signing path). Simulated workloads renew their leaf
at half-life, take the bundle that comes with it (the last element of Istio's `cert_chain`) and
refresh their copy every refresh hint. At every step every pair of live workloads completes a
TLS 1.3 mutual handshake with Python's `ssl` (in memory: MemoryBIO/SSLObject), each side trusting
only the bundle it holds and the intermediate its peer sends.

OpenSSL checks validity at the simulated time: Python's `ssl` has no API for it, so the test sets
the verification time of each SSL_CTX through ctypes (X509_VERIFY_PARAM_set_time), after checking
that the pointer it reads really is that context.

Steps are event-driven: the CA's `next_check`, operator events, workload joins, renewals (half-life
plus a small per-workload offset, like an agent's jitter), bundle refreshes that fetch something
new, and the instant any certificate a workload holds would expire (OpenSSL: at notAfter).

A taint lands at a step: the CA records it, rotates, publishes, and marks every certificate under
the tainted key; a marked workload renews at its next step, before it refreshes its bundle (the
"renew now" signal travels no slower than the bundle). Two negative controls show the harness
does see a root that signs too early and a retired root that leaves too early.
"""

from __future__ import annotations

import _ssl
import ctypes
import itertools
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from meshca.core import rotation, templates
from meshca.core.authority import SigningAuthority, sign_leaf
from meshca.core.bundle import TrustBundle
from meshca.core.lifetime import LifetimePolicy, leaf_validity
from meshca.core.rotation import (
    Activate,
    Generation,
    Kind,
    Prepare,
    Prune,
    RotationPolicy,
    State,
    Withdraw,
)
from meshca.core.spiffe import SpiffeId

T0 = datetime(2030, 1, 1, tzinfo=UTC)  # simulated: every certificate is "not yet valid" for real
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
BACKDATE = timedelta(minutes=5)
TRUST_DOMAIN = "cluster.local"
POLICY = RotationPolicy(refresh_hint=timedelta(minutes=5), publish_lead=DAY, skew=HOUR)
BundleOf = Callable[[list[Generation], datetime, RotationPolicy], tuple[Generation, ...]]


# ---- OpenSSL at the simulated time ---------------------------------------------------------

class OpenSslClock:
    """Sets the time OpenSSL verifies certificates at, per SSL_CTX (SSL objects inherit it)."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(_ssl.__file__)
        lib.SSL_CTX_get0_param.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get0_param.restype = ctypes.c_void_p
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.X509_VERIFY_PARAM_set_time.argtypes = [ctypes.c_void_p, ctypes.c_int64]
        lib.X509_VERIFY_PARAM_set_time.restype = None
        self._lib = lib

    def set(self, context: ssl.SSLContext, when: datetime) -> None:
        # CPython's PySSLContext starts with PyObject_HEAD, then `SSL_CTX *ctx`.
        pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
        if not pointer or self._lib.SSL_CTX_get_options(pointer) != int(context.options):
            raise RuntimeError("cannot find the SSL_CTX behind an ssl.SSLContext")
        param = self._lib.SSL_CTX_get0_param(pointer)
        self._lib.X509_VERIFY_PARAM_set_time(param, int(when.timestamp()))


OPENSSL_CLOCK = OpenSslClock()


def tls_context(*, server: bool, bundle_pem: str, credentials: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # SPIFFE: the identity is the URI SAN, checked below
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(cadata=bundle_pem)
    context.load_cert_chain(credentials)
    if server:
        context.num_tickets = 0  # every handshake is a full one
    return context


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> tuple[bytes | None, bytes | None]:
    """A full mutual handshake in memory; each side's view of the peer's leaf (DER)."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    c_in, s_in = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, to_server, server_side=False)
    s = server.wrap_bio(s_in, to_client, server_side=True)
    c_done = s_done = False
    for _ in range(6):
        if not c_done:
            try:
                c.do_handshake()
                c_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(to_server.read())
        if not s_done:
            try:
                s.do_handshake()
                s_done = True
            except ssl.SSLWantReadError:
                pass
        c_in.write(to_client.read())
        if c_done and s_done:
            return c.getpeercert(binary_form=True), s.getpeercert(binary_form=True)
    raise ssl.SSLError("handshake did not complete")


# ---- the simulated CA ------------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    policy: RotationPolicy
    root_ttl: timedelta
    intermediate_ttl: timedelta
    leaf_ttl: timedelta

    def __post_init__(self) -> None:
        rotation.check_lifetimes(self.policy, root_ttl=self.root_ttl,
                                 intermediate_ttl=self.intermediate_ttl, leaf_ttl=self.leaf_ttl)


@dataclass(eq=False)
class CaGeneration:
    id: int
    kind: Kind
    state: State
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    prepared_at: datetime
    parent_id: int | None
    last_leaf_expiry: datetime | None = None
    tainted_at: datetime | None = None
    not_before: datetime = field(init=False)
    not_after: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.not_before = self.certificate.not_valid_before_utc
        self.not_after = self.certificate.not_valid_after_utc

    def snapshot(self) -> Generation:
        return Generation(
            id=self.id, kind=self.kind, state=self.state,
            not_before=self.not_before, not_after=self.not_after,
            prepared_at=self.prepared_at, parent_id=self.parent_id,
            last_leaf_expiry=self.last_leaf_expiry,
        )


@dataclass(frozen=True)
class Issued:
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    bundle: frozenset[int]
    bundle_pem: str


def default_bundle(gens: list[Generation], now: datetime, policy: RotationPolicy) -> tuple[Generation, ...]:
    return rotation.bundle_roots(gens, now, policy)


class SimulatedCa:
    """A journal of generations driven by rotation.next_step, with every invariant recorded."""

    def __init__(self, profile: Profile, bundle_of: BundleOf = default_bundle) -> None:
        self.profile = profile
        self.policy = profile.policy
        self.bundle_of = bundle_of
        self.gens: dict[int, CaGeneration] = {}
        self.published: frozenset[int] = frozenset()
        self.sequence = 0
        self.publications: list[tuple[datetime, frozenset[int]]] = []
        self.issued: dict[int, tuple[int, datetime, datetime]] = {}  # serial: issuer, at, not_after
        self.to_renew: set[int] = set()
        self.events: Counter[str] = Counter()
        self.violations: list[str] = []
        self.due: datetime | None = None  # next_check after the last tick
        self._snapshot: list[Generation] | None = None  # rebuilt after every change
        self.root_timeline: list[str] = []

    # -- journal --

    def snapshot(self) -> list[Generation]:
        if self._snapshot is None:
            self._snapshot = [g.snapshot() for g in self.gens.values()]
        return self._snapshot

    def active(self, kind: Kind) -> CaGeneration:
        (found,) = [g for g in self.gens.values() if g.kind is kind and g.state is State.ACTIVE]
        return found

    def tick(self, now: datetime, *, expected: bool) -> None:
        """Apply next_step until nothing is due, then publish the bundle if it changed."""
        pending = set(self.published)
        announced: set[int] = set()
        acted = False
        for _ in range(10):
            # X.509 only: JWT keys have their own simulated period (test_jwt_rotation_period.py).
            actions = [a for a in rotation.next_step(self.policy, self.snapshot(), now,
                                                     published=pending) if a.kind is not Kind.JWT]
            if not actions:
                break
            acted = True
            for action in actions:
                self._apply(action, now)
                if isinstance(action, Prune):
                    pending.discard(action.generation_id)
                    announced.add(action.generation_id)
        else:
            raise AssertionError("next_step did not converge")
        if acted and not expected:
            self.violations.append(f"{now}: rotation was due before next_check said it would be")
        roots = self.bundle_of(self.snapshot(), now, self.policy)
        new = frozenset(g.id for g in roots)
        if self.bundle_of is default_bundle and self.published - new != announced:
            self.violations.append(f"{now}: roots {sorted(self.published - new)} left unannounced")
        if rotation.bundle_changed(self.published, new):
            self.sequence += 1
            self.published = new
            self.publications.append((now, new))
            self.events["bundle publications"] += 1
        self.due = rotation.next_check(self.policy, self.snapshot(), now)

    def taint(self, generation_id: int, now: datetime) -> None:
        """An operator's taint: the key signs nothing more; what it signed must be renewed."""
        self._snapshot = None
        g = self.gens[generation_id]
        g.state = rotation.transition(g.state, State.TAINTED)
        g.tainted_at = now
        self.events[f"{g.kind} taints"] += 1
        self._log(now, f"{g.kind} {g.id} tainted")
        under = rotation.generations_under(self.snapshot(), generation_id)
        self.to_renew |= {serial for serial, (issuer, _, not_after) in self.issued.items()
                          if issuer in under and not_after >= now}
        self.tick(now, expected=True)

    def _apply(self, action: rotation.Action, now: datetime) -> None:
        self._snapshot = None
        match action:
            case Prepare(kind=kind, parent_id=parent_id):
                self._prepare(kind, parent_id, now)
            case Activate(generation_id=gid, kind=kind, retires=retires, lead_waived=waived):
                current = [g.id for g in self.gens.values() if g.kind is kind and g.state is State.ACTIVE]
                assert current == ([retires] if retires is not None else []), (action, current)
                g = self.gens[gid]
                g.state = rotation.transition(g.state, State.ACTIVE)
                if retires is not None:
                    old = self.gens[retires]
                    old.state = rotation.transition(old.state, State.RETIRED)
                self.events[f"{kind} activations"] += 1
                if kind is Kind.ROOT:
                    self._log(now, f"root {gid} active" + (f", root {retires} retired" if retires else "")
                              + (" (publish lead waived)" if waived else ""))
                if waived:
                    self.events["root activations with the publish lead waived"] += 1
            case Withdraw(generation_id=gid, kind=kind):
                g = self.gens[gid]
                g.state = rotation.transition(g.state, State.RETIRED)
                self.events[f"{kind} withdrawals"] += 1
            case Prune(generation_id=gid, reason=reason):
                self.events["root prunes"] += 1
                self._log(now, f"root {gid} leaves the bundle ({reason})")

    def _log(self, now: datetime, what: str) -> None:
        self.root_timeline.append(f"day {(now - T0) / DAY:7.2f}: {what}")

    def _prepare(self, kind: Kind, parent_id: int | None, now: datetime) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        number = 1 + sum(1 for g in self.gens.values() if g.kind is kind)
        subject = templates.ca_subject("meshca simulation", str(kind), number, serial)
        td = SpiffeId.for_trust_domain(TRUST_DOMAIN)
        if parent_id is None:
            builder = templates.ca_certificate(
                public_key=key.public_key(), subject=subject, trust_domain=td, issuer=None,
                serial=serial, not_before=now - BACKDATE, not_after=now + self.profile.root_ttl,
                path_length=1)
            certificate = builder.sign(key, hashes.SHA256())
        else:
            parent = self.gens[parent_id]
            self._check_signer(parent, now, "an intermediate")
            not_after = min(now + self.profile.intermediate_ttl, parent.certificate.not_valid_after_utc)
            builder = templates.ca_certificate(
                public_key=key.public_key(), subject=subject, trust_domain=td,
                issuer=parent.certificate, serial=serial, not_before=now - BACKDATE,
                not_after=not_after, path_length=0)
            certificate = builder.sign(parent.key, hashes.SHA256())
            certificate.verify_directly_issued_by(parent.certificate)
        gid = 1 + len(self.gens)
        self.gens[gid] = CaGeneration(gid, kind, State.PREPARED, certificate, key, now, parent_id)
        self.events[f"{kind} preparations"] += 1
        if kind is Kind.ROOT:
            self._log(now, f"root {gid} prepared and published")

    # -- issuance --

    def issue(self, spiffe_id: SpiffeId, public_key: ec.EllipticCurvePublicKey, now: datetime) -> Issued:
        signer = rotation.signing_generation(self.snapshot())
        assert signer is not None, f"{now}: the CA cannot sign"
        intermediate = self.gens[signer.id]
        root = self.gens[self.active(Kind.ROOT).id]
        assert intermediate.parent_id == root.id
        self._check_signer(intermediate, now, "a leaf")
        self._check_signer(root, now, "a leaf (its root)")
        bundle = TrustBundle(tuple(self.gens[i].certificate for i in sorted(self.published)))
        authority = SigningAuthority(generation_id=signer.id, certificate=intermediate.certificate,
                                     private_key=intermediate.key, chain=(), bundle=bundle)
        lifetime = LifetimePolicy(
            default_ttl=self.profile.leaf_ttl, backdate=BACKDATE,
            max_ttl=rotation.max_leaf_ttl(self.profile.intermediate_ttl, self.policy))
        validity = leaf_validity(0, lifetime, now, intermediate.certificate.not_valid_after_utc)
        builder = templates.leaf_svid(
            public_key=public_key, spiffe_id=spiffe_id, issuer=intermediate.certificate,
            serial=x509.random_serial_number(), not_before=validity.not_before,
            not_after=validity.not_after)
        leaf = sign_leaf(authority, builder, spiffe_id)
        for g in (intermediate, root):
            g.last_leaf_expiry = max(g.last_leaf_expiry or validity.not_after, validity.not_after)
        self._snapshot = None
        self.issued[leaf.serial_number] = (intermediate.id, now, validity.not_after)
        self.events["leaves issued"] += 1
        return Issued(leaf, (intermediate.certificate,), self.published, bundle.pem)

    def _check_signer(self, signer: CaGeneration, now: datetime, what: str) -> None:
        if signer.state is not State.ACTIVE:
            self.violations.append(f"{now}: a {signer.state} generation {signer.id} signed {what}")
        root_id = signer.id if signer.parent_id is None else signer.parent_id
        if not self._published_throughout(root_id, now - self.policy.publish_lead, now):
            self.violations.append(
                f"{now}: {what} signed under root {root_id}, absent from the bundle "
                f"published {self.policy.publish_lead} before")

    def _published_throughout(self, root_id: int, start: datetime, end: datetime) -> bool:
        if not self.publications or start < self.publications[0][0]:
            # Bootstrap: until the first bundle is publish_lead old, only its root may sign.
            return root_id == min(g.id for g in self.gens.values() if g.kind is Kind.ROOT)
        in_effect = [ids for t, ids in self.publications if t <= start][-1]
        during = [ids for t, ids in self.publications if start < t <= end]
        return all(root_id in ids for ids in (in_effect, *during))

    def check_taints(self) -> None:
        """After a taint, nothing more was signed under the tainted key."""
        for g in self.gens.values():
            if g.tainted_at is None:
                continue
            under = rotation.generations_under(self.snapshot(), g.id)
            late = [s for s, (issuer, at, _) in self.issued.items() if issuer in under and at >= g.tainted_at]
            if late:
                self.violations.append(f"{len(late)} leaves signed under tainted generation {g.id}")


# ---- simulated workloads ---------------------------------------------------------------------

@dataclass(eq=False)
class Workload:
    name: str
    joins_at: datetime
    refresh_phase: timedelta
    renew_offset: timedelta
    credentials: Path
    spiffe_id: SpiffeId = field(init=False)
    leaf: x509.Certificate | None = None
    leaf_der: bytes = b""
    bundle: frozenset[int] = frozenset()
    bundle_pem: str = ""
    client: ssl.SSLContext | None = None
    server: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self.spiffe_id = SpiffeId.for_service_account(TRUST_DOMAIN, "sim", self.name)

    @property
    def live(self) -> bool:
        return self.leaf is not None

    def renew_at(self) -> datetime:
        assert self.leaf is not None
        nb, na = self.leaf.not_valid_before_utc, self.leaf.not_valid_after_utc
        return ceil_second(nb + (na - nb) / 2 + self.renew_offset)

    def is_refresh_tick(self, now: datetime, hint: timedelta) -> bool:
        return (now - T0 - self.refresh_phase) % hint == timedelta(0)

    def next_refresh_tick(self, now: datetime, hint: timedelta) -> datetime:
        return now + (hint - (now - T0 - self.refresh_phase) % hint)

    def renew(self, ca: SimulatedCa, now: datetime) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        issued = ca.issue(self.spiffe_id, key.public_key(), now)
        pem = b"".join(c.public_bytes(Encoding.PEM) for c in (issued.leaf, *issued.chain))
        self.credentials.write_bytes(
            pem + key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        self.leaf, self.leaf_der = issued.leaf, issued.leaf.public_bytes(Encoding.DER)
        self._trust(issued.bundle, issued.bundle_pem)

    def refresh(self, ca: SimulatedCa) -> None:
        if self.bundle != ca.published:
            pem = "".join(c.certificate.public_bytes(Encoding.PEM).decode()
                          for c in (ca.gens[i] for i in sorted(ca.published)))
            self._trust(ca.published, pem)

    def _trust(self, bundle: frozenset[int], bundle_pem: str) -> None:
        self.bundle, self.bundle_pem = bundle, bundle_pem
        self.client = tls_context(server=False, bundle_pem=bundle_pem, credentials=self.credentials)
        self.server = tls_context(server=True, bundle_pem=bundle_pem, credentials=self.credentials)


def ceil_second(moment: datetime) -> datetime:
    if moment.microsecond:
        return moment + timedelta(microseconds=1_000_000 - moment.microsecond)
    return moment


# ---- the simulation --------------------------------------------------------------------------

OperatorEvent = tuple[datetime, str, Callable[[SimulatedCa, list[Workload], datetime], None]]


@dataclass
class Outcome:
    steps: int = 0
    handshakes: int = 0
    renewals: int = 0
    forced_renewals: int = 0  # of certificates marked to-be-renewed by a taint
    failures: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    bundle_sequence: int = 0
    seconds: float = 0.0


class Simulation:
    def __init__(self, profile: Profile, workdir: Path, *, end: datetime, workloads: int = 4,
                 operator: Iterable[OperatorEvent] = (), bundle_of: BundleOf = default_bundle) -> None:
        self.ca = SimulatedCa(profile, bundle_of)
        self.end = end
        hint = profile.policy.refresh_hint
        # Two renewal phases (even and odd workloads), so that each step's handshakes mix leaves
        # of different ages without a step per workload; bundle refreshes all have their own phase.
        self.workloads = [
            Workload(name=f"w{i}", joins_at=T0 + (i % 2) * timedelta(hours=5, minutes=11),
                     refresh_phase=(i * timedelta(seconds=73)) % hint,
                     renew_offset=(i % 2) * timedelta(minutes=37), credentials=workdir / f"w{i}.pem")
            for i in range(workloads)
        ]
        self.operator = sorted(operator, key=lambda e: e[0])
        self.outcome = Outcome()

    def run(self) -> Outcome:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:  # OpenSSL releases the GIL
            now: datetime | None = T0
            while now is not None and now <= self.end:
                self._step(now, pool)
                now = self._next_event(now)
        self.ca.check_taints()
        out = self.outcome
        out.events, out.violations = self.ca.events, self.ca.violations
        out.bundle_sequence = self.ca.sequence
        out.seconds = time.perf_counter() - started
        return out

    def _step(self, now: datetime, pool: ThreadPoolExecutor) -> None:
        ca, hint = self.ca, self.ca.policy.refresh_hint
        operator_now = [e for e in self.operator if e[0] == now]
        for _, _, event in operator_now:
            event(ca, self.workloads, now)
        due = ca.due is not None and now == ceil_second(ca.due)
        ca.tick(now, expected=now == T0 or due or bool(operator_now))
        for w in self.workloads:
            if not w.live and now >= w.joins_at:
                w.renew(ca, now)
                self.outcome.renewals += 1
            elif w.live and (now >= w.renew_at() or self._marked(w)):
                self.outcome.forced_renewals += self._marked(w)
                w.renew(ca, now)
                self.outcome.renewals += 1
            elif w.live and w.is_refresh_tick(now, hint):
                w.refresh(ca)
        live = [w for w in self.workloads if w.live]
        for w in live:
            if self._marked(w):
                ca.violations.append(f"{now}: {w.name} still holds a certificate under a tainted key")
            for context in (w.client, w.server):
                assert context is not None
                OPENSSL_CLOCK.set(context, now)
        pairs = list(itertools.combinations(live, 2))
        if self.outcome.steps % 2:
            pairs = [(b, a) for a, b in pairs]
        for failure in pool.map(lambda pair: self._handshake(now, *pair), pairs):
            if failure:
                self.outcome.failures.append(failure)
        self.outcome.handshakes += len(pairs)
        self.outcome.steps += 1

    def _marked(self, w: Workload) -> bool:
        return w.leaf is not None and w.leaf.serial_number in self.ca.to_renew

    @staticmethod
    def _handshake(now: datetime, client: Workload, server: Workload) -> str | None:
        assert client.client is not None and server.server is not None
        try:
            seen_by_client, seen_by_server = handshake(client.client, server.server)
        except ssl.SSLError as exc:
            return f"{now}: {client.name} -> {server.name}: {exc}"
        if seen_by_client != server.leaf_der or seen_by_server != client.leaf_der:
            return f"{now}: {client.name} -> {server.name}: the peers saw other certificates"
        return None

    def _next_event(self, now: datetime) -> datetime | None:
        hint = self.ca.policy.refresh_hint
        moments = [t for t, _, _ in self.operator]
        if self.ca.due is not None:
            moments.append(ceil_second(self.ca.due))
        for w in self.workloads:
            if not w.live:
                moments.append(w.joins_at)
                continue
            assert w.leaf is not None
            moments += [w.renew_at(), w.leaf.not_valid_after_utc]  # OpenSSL: expired from then
            if w.bundle != self.ca.published:
                moments.append(w.next_refresh_tick(now, hint))
        later = [m for m in moments if m > now]
        return min(later) if later else None


def taint_active(kind: Kind) -> Callable[[SimulatedCa, list[Workload], datetime], None]:
    def event(ca: SimulatedCa, workloads: list[Workload], now: datetime) -> None:
        ca.taint(ca.active(kind).id, now)
    return event


# ---- the proof -------------------------------------------------------------------------------

TWO_YEARS = Profile(POLICY, root_ttl=rotation.DEFAULT_ROOT_TTL,
                    intermediate_ttl=rotation.DEFAULT_INTERMEDIATE_TTL, leaf_ttl=DAY)
INTERMEDIATE_TAINT = T0 + timedelta(days=40, hours=7, minutes=13)
ROOT_TAINT = T0 + timedelta(days=456, hours=15, minutes=2)


def test_two_years_of_rotations_without_one_failed_handshake(tmp_path: Path) -> None:
    simulation = Simulation(TWO_YEARS, tmp_path, end=T0 + 730 * DAY, operator=[
        (INTERMEDIATE_TAINT, "taint the active intermediate", taint_active(Kind.INTERMEDIATE)),
        (ROOT_TAINT, "taint the active root", taint_active(Kind.ROOT)),
    ])
    out = simulation.run()
    print(f"\nzero-downtime simulation: {out.steps} steps, {out.handshakes} mutual TLS handshakes, "
          f"{out.renewals} leaf renewals ({out.forced_renewals} forced by taints), "
          f"bundle sequence {out.bundle_sequence}, "
          f"{out.seconds:.1f} s")
    for name, count in sorted(out.events.items()):
        print(f"  {name}: {count}")
    print("\n".join(f"  {line}" for line in simulation.ca.root_timeline))
    assert out.failures == [], f"{len(out.failures)} failed handshakes, first: {out.failures[:5]}"
    assert out.violations == [], out.violations[:10]
    assert out.handshakes >= 15_000
    assert out.forced_renewals == 8  # each taint renewed all four workloads at once
    # Roots: the bootstrap one, a scheduled rotation, the taint's replacement, a scheduled one.
    assert out.events["root activations"] == 4
    assert out.events["root activations with the publish lead waived"] == 1  # bootstrap only
    assert out.events["root taints"] == 1 and out.events["intermediate taints"] == 1
    assert out.events["root prunes"] == 3  # the first root (outlived), the tainted one, the third
    assert out.events["intermediate activations"] >= 200
    assert simulation.ca.sequence == len(simulation.ca.publications)


def test_taints_replace_the_key_and_renew_everything_under_it_at_once(tmp_path: Path) -> None:
    """A shorter run around each taint, looking at the journal and the renewals themselves."""
    profile = Profile(POLICY, root_ttl=36 * DAY, intermediate_ttl=6 * DAY, leaf_ttl=DAY)
    taint_root_at = T0 + timedelta(days=22, hours=5)  # a prepared root has been out for 4 days
    simulation = Simulation(profile, tmp_path, end=T0 + 24 * DAY, operator=[
        (T0 + timedelta(days=2, hours=3), "taint intermediate", taint_active(Kind.INTERMEDIATE)),
        (taint_root_at, "taint root", taint_active(Kind.ROOT)),
    ])
    out = simulation.run()
    assert out.failures == [] and out.violations == []
    ca = simulation.ca
    tainted = sorted((g for g in ca.gens.values() if g.state is State.TAINTED),
                     key=lambda g: g.tainted_at or T0)
    assert [g.kind for g in tainted] == [Kind.INTERMEDIATE, Kind.ROOT]
    root = next(g for g in tainted if g.kind is Kind.ROOT)
    assert root.id not in ca.published
    # Published at once, without the tainted root, at the step of the taint.
    assert any(t == taint_root_at and root.id not in ids for t, ids in ca.publications)
    # Every marked certificate was replaced at that very step.
    assert all(w.leaf is not None and w.leaf.serial_number not in ca.to_renew for w in simulation.workloads)
    for w in simulation.workloads:
        assert w.leaf is not None
        issuer = ca.gens[ca.issued[w.leaf.serial_number][0]]
        assert issuer.parent_id == ca.active(Kind.ROOT).id


# ---- the harness catches what it must ---------------------------------------------------------

SHORT = Profile(POLICY, root_ttl=36 * DAY, intermediate_ttl=6 * DAY, leaf_ttl=DAY)


def test_harness_sees_a_root_that_signs_before_peers_hold_it(tmp_path: Path) -> None:
    """Negative control: activate a freshly prepared root at once (lead waived) and renew one
    workload under it: peers that have not refreshed yet refuse it, and the invariant fires."""
    def rush(ca: SimulatedCa, workloads: list[Workload], now: datetime) -> None:
        ca._apply(rotation.manual_prepare(ca.snapshot(), Kind.ROOT), now)
        ca._apply(rotation.manual_activate(ca.policy, ca.snapshot(), Kind.ROOT, now, waive_lead=True), now)
        ca.tick(now, expected=True)  # the intermediate follows the new root at once
        assert workloads[0].leaf is not None
        ca.to_renew.add(workloads[0].leaf.serial_number)

    simulation = Simulation(SHORT, tmp_path, end=T0 + 3 * DAY,
                            operator=[(T0 + timedelta(days=2), "rush a root", rush)])
    out = simulation.run()
    assert out.failures, "a leaf under an unpublished root must fail with peers holding old bundles"
    assert any("absent from the bundle" in v for v in out.violations)


def test_harness_sees_a_retired_root_leaving_too_early(tmp_path: Path) -> None:
    """Negative control: a bundle that drops a root as soon as it retires breaks peers that still
    hold leaves under it, once they refresh."""
    def hasty(gens: list[Generation], now: datetime, policy: RotationPolicy) -> tuple[Generation, ...]:
        return tuple(g for g in rotation.bundle_roots(gens, now, policy) if g.state is not State.RETIRED)

    simulation = Simulation(SHORT, tmp_path, end=T0 + 31 * DAY, bundle_of=hasty)
    out = simulation.run()
    assert out.events["root activations"] == 2
    assert out.failures


def test_openssl_checks_validity_at_the_simulated_time(tmp_path: Path) -> None:
    simulation = Simulation(SHORT, tmp_path, end=T0 + 6 * HOUR, workloads=2)
    simulation.run()
    a, b = simulation.workloads  # b joined 5h11m after a: their leaves overlap, not coincide
    assert a.client is not None and b.server is not None and a.leaf is not None and b.leaf is not None
    second = timedelta(seconds=1)
    cases = [(T0 + 6 * HOUR, True), (b.leaf.not_valid_before_utc - second, False),
             (b.leaf.not_valid_before_utc, True), (a.leaf.not_valid_after_utc - second, True),
             (a.leaf.not_valid_after_utc, False)]  # OpenSSL: expired from notAfter on
    for moment, ok in cases:
        for context in (a.client, a.server, b.client, b.server):
            assert context is not None
            OPENSSL_CLOCK.set(context, moment)
        if ok:
            assert handshake(a.client, b.server) == (b.leaf_der, a.leaf_der)
        else:
            with pytest.raises(ssl.SSLError, match="certificate verify failed"):
                handshake(a.client, b.server)
