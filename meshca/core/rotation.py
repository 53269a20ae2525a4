"""CA lifecycle: when to prepare, activate, withdraw and prune root, intermediate and JWT
signing-key generations.

Pure decisions, no I/O: every function takes a snapshot of the generations and `now`, and
says what to do. The rotator applies the actions to its journal (the `ca_generations` table),
one transition per action, re-reads the snapshot and asks again until `next_step` returns
nothing; then it publishes `bundle_roots` if `bundle_changed` (bumping `spiffe_sequence`), and
sleeps until `next_check` (or a taint). A crash between two actions leaves a snapshot that
`next_step` resumes from.

States (`State`, the strings stored in the database) and the only transitions allowed:

    prepared -> active          activation; the kind's previously active generation retires
    prepared -> retired         withdrawal: it will never be activated (it never signed)
    active   -> retired         its successor was activated
    prepared | active | retired -> tainted   an operator says the key is compromised (final)

Invariants (the service must keep them; `next_step` never breaks them):

1. At most one active generation per kind. Only `signing_generation` signs leaves: the
   active intermediate whose parent is the active root. Only the active root signs
   intermediates. Prepared, retired and tainted keys sign nothing.
2. A root is in the trust bundle from the moment it is prepared, and a planned activation
   waits until it has been there `publish_lead` (several refresh hints): every peer holds a
   root before anything is signed under it. The lead is waived, and the `Activate` says so
   (`lead_waived`), only when there is no usable active root: at bootstrap (no peer exists
   yet) and when the active root is tainted or expired and no successor is ready; waiting
   would not help then, since everything under the old root is already untrusted or expired.
3. Intermediates rotate on the same thresholds under the active root, and need no lead: they
   are not in the bundle, peers get them in the chain. When the active root changes (planned
   or taint), the intermediate is replaced at once by one signed by the new root, and only
   after that root is active. A prepared intermediate under a root that is no longer active
   is withdrawn, never activated.
4. A retired root stays in the bundle while an intermediate under it is still active and until
   the last certificate under it has expired plus `skew`; then it is pruned. A tainted root
   leaves the bundle at once: a compromised key must not be trusted one refresh longer, even
   if peers holding certificates under it fail until they renew (the service marks them
   to-be-renewed when it records the taint, see `generations_under`).
5. A leaf never outlives its intermediate, nor an intermediate its root. With a leaf lifetime of
   at most `(1 - activate_at)` of the intermediate's (`max_leaf_ttl`: a sixth by default), a leaf
   signed just before the intermediate rotates still gets its full lifetime.
6. A prepared generation that reached its own activation point unused is stale: it is
   withdrawn and a fresh one prepared, so an activated generation always has life left.

7. A JWT-SVID signing key (kind `jwt`) is not a certificate and has no parent, but is
   published like a root: in the bundle (as a `jwt-svid` key) from the moment it is prepared,
   activated only after `publish_lead` (waived at bootstrap, on taint and on expiry, as for
   roots), at most one active. It lives as long as an intermediate. A retired JWT key stays in
   the bundle until every token it can have signed has expired plus `skew`: tokens never
   outlive their key's notAfter nor are longer than `token_ttl`, so that is the earlier of
   notAfter and retirement + `token_ttl`. A tainted JWT key leaves the bundle at once.

`next_step` handles roots before intermediates: while roots need an action it returns only
root actions (and prunes), so intermediate decisions always see the roots as they now are.
JWT keys depend on nothing else; their actions come once the X.509 chain needs none.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_ROOT_TTL = timedelta(days=365)
DEFAULT_INTERMEDIATE_TTL = timedelta(days=7)
_SECOND = timedelta(seconds=1)  # certificates count in whole seconds


class Kind(enum.StrEnum):
    ROOT = "root"
    INTERMEDIATE = "intermediate"
    JWT = "jwt"  # a JWT-SVID signing key


# Kinds published in the bundle from the moment they are prepared (roots as x509-svid keys,
# JWT keys as jwt-svid keys): activation waits for publish_lead, retirement keeps them a while.
PUBLISHED_KINDS = frozenset({Kind.ROOT, Kind.JWT})


class State(enum.StrEnum):
    PREPARED = "prepared"
    ACTIVE = "active"
    RETIRED = "retired"
    TAINTED = "tainted"

    def can_become(self, target: State) -> bool:
        return target in _ALLOWED[self]


_ALLOWED: dict[State, frozenset[State]] = {
    # prepared -> retired is a withdrawal: the generation never signed anything.
    State.PREPARED: frozenset({State.ACTIVE, State.RETIRED, State.TAINTED}),
    State.ACTIVE: frozenset({State.RETIRED, State.TAINTED}),
    State.RETIRED: frozenset({State.TAINTED}),
    State.TAINTED: frozenset(),
}


def transition(current: State, target: State) -> State:
    """`target` if the lifecycle allows `current -> target`; ValueError otherwise."""
    if not isinstance(current, State) or not isinstance(target, State):
        raise TypeError("states must be rotation.State values")
    if not current.can_become(target):
        raise ValueError(f"a {current} CA generation cannot become {target}")
    return target


class Reason(enum.StrEnum):
    """Why an action is due: for logs, audit entries and the rotation-events metric."""

    BOOTSTRAP = "bootstrap"  # no generation of this kind was ever active
    SCHEDULED = "scheduled"  # the active generation reached a threshold
    TAINTED = "tainted"  # the active generation was tainted by an operator
    EXPIRED = "expired"  # the active generation expired (or vanished) with no successor
    PARENT_ROTATED = "parent-rotated"  # the intermediate's root is no longer the active root
    STALE = "stale"  # a prepared generation that can no longer be activated
    OUTLIVED = "outlived"  # every certificate under a retired root expired (+ skew)


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """Fractions of the active generation's lifetime, and the bundle timings.

    `publish_lead`: how long a root must have been in the bundle before it may sign. One day by
    default: Istio's agent also takes the bundle from its renewal response (every 12 h with 24 h
    leaves), so a day covers every peer; a planned rotation leaves months between preparing and
    activating a root, so the lead only binds operators and emergencies.
    `skew`: how long a retired root outlives the last certificate under it (clocks that lag).
    `refresh_hint`: how often peers should refetch the bundle (`spiffe_refresh_hint`).
    `token_ttl`: the longest a JWT-SVID signed by a key that just retired may still be valid
    (the longest JWT-SVID, plus how long another process may keep signing with the key
    before it notices the retirement).
    """

    prepare_at: float = 1 / 2
    activate_at: float = 5 / 6
    skew: timedelta = timedelta(hours=1)
    refresh_hint: timedelta = timedelta(minutes=5)
    publish_lead: timedelta = timedelta(days=1)
    token_ttl: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        for name in ("prepare_at", "activate_at"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number")
        for name in ("skew", "refresh_hint", "publish_lead", "token_ttl"):
            if not isinstance(getattr(self, name), timedelta):
                raise TypeError(f"{name} must be a timedelta")
        if not 0 < self.prepare_at < self.activate_at < 1:
            raise ValueError("fractions must satisfy 0 < prepare_at < activate_at < 1")
        if self.skew < timedelta(0):
            raise ValueError("skew must not be negative")
        if self.refresh_hint <= timedelta(0):
            raise ValueError("refresh_hint must be positive")
        if self.token_ttl <= timedelta(0):
            raise ValueError("token_ttl must be positive")
        if self.publish_lead < 2 * self.refresh_hint:
            raise ValueError("publish_lead must be at least two refresh hints")


DEFAULT_POLICY = RotationPolicy()


@dataclass(frozen=True, slots=True)
class Generation:
    """What the rotation decisions need to know about one root, intermediate or JWT key.

    `prepared_at`: when it was created; for a root, when it entered the published bundle
    (`publish_lead` counts from it, so publish in the same tick that prepares it).
    `last_leaf_expiry`: the latest notAfter of the leaves signed under it (for a root: through
    any of its intermediates); None if it never signed one.
    `retired_at`: when it became retired (JWT keys: bounds the tokens it signed); None if not
    retired, or not recorded.
    """

    id: int
    kind: Kind
    state: State
    not_before: datetime
    not_after: datetime
    prepared_at: datetime
    parent_id: int | None = None
    last_leaf_expiry: datetime | None = None
    retired_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Kind) or not isinstance(self.state, State):
            raise TypeError("kind and state must be rotation.Kind and rotation.State values")
        for moment in (self.not_before, self.not_after, self.prepared_at, self.last_leaf_expiry,
                       self.retired_at):
            if moment is not None:
                _check_aware(moment)
        if self.not_after <= self.not_before:
            raise ValueError(f"generation {self.id}: not_after must follow not_before")
        if (self.kind is Kind.INTERMEDIATE) != (self.parent_id is not None):
            raise ValueError(f"generation {self.id}: a root has no parent, an intermediate has "
                             "one, a JWT key none")


@dataclass(frozen=True, slots=True)
class Prepare:
    """Create a generation of `kind` in state prepared, signed by `parent_id` (intermediates)."""

    kind: Kind
    parent_id: int | None
    reason: Reason


@dataclass(frozen=True, slots=True)
class Activate:
    """prepared -> active for `generation_id`, and active -> retired for `retires`, together."""

    generation_id: int
    kind: Kind
    retires: int | None
    reason: Reason
    lead_waived: bool = False  # a root or JWT key signing before publish_lead has passed


@dataclass(frozen=True, slots=True)
class Withdraw:
    """prepared -> retired: a generation that will never be activated."""

    generation_id: int
    kind: Kind
    reason: Reason


@dataclass(frozen=True, slots=True)
class Prune:
    """Take a published root or JWT key out of the bundle (it stays in the journal)."""

    generation_id: int
    reason: Reason
    kind: Kind = Kind.ROOT


Action = Prepare | Activate | Withdraw | Prune

_WHY = {
    Reason.BOOTSTRAP: "first start: no {kind} was ever active",
    Reason.SCHEDULED: "scheduled: the active {kind} reached its rotation point",
    Reason.TAINTED: "the active {kind} was tainted",
    Reason.EXPIRED: "the active {kind} expired with no successor",
    Reason.PARENT_ROTATED: "its root is no longer the active root",
    Reason.STALE: "it can no longer be activated",
    Reason.OUTLIVED: "every certificate under it has expired",
}


_NOUN = {Kind.ROOT: "root", Kind.INTERMEDIATE: "intermediate", Kind.JWT: "JWT-SVID key"}


def describe(action: Action, created: int | None = None, *, manual: bool = False) -> str:
    """One log line's words for an action (`created`: a prepared generation's new id)."""
    why = "asked by an operator" if manual else _WHY[action.reason].format(kind=_NOUN[action.kind])
    match action:
        case Prepare(kind=kind, parent_id=parent):
            what = f"prepared {_NOUN[kind]} generation {created if created is not None else '(new)'}"
            what += f", signed by root generation {parent}" if parent is not None else ""
        case Activate(generation_id=gid, kind=kind, retires=retires, lead_waived=waived):
            what = f"activated {_NOUN[kind]} generation {gid}"
            what += f", retiring generation {retires}" if retires is not None else ""
            # At the first start nothing was published before, so there is no lead to wait for.
            if waived and action.reason is not Reason.BOOTSTRAP:
                what += " before its publish lead (waived)"
        case Withdraw(generation_id=gid, kind=kind):
            what = f"withdrew prepared {_NOUN[kind]} generation {gid}"
        case Prune(generation_id=gid, kind=kind):
            what = f"took {_NOUN[kind]} generation {gid} out of the trust bundle"
    return f"{what} ({why})"


# ---- thresholds ---------------------------------------------------------------------------

def prepare_time(policy: RotationPolicy, not_before: datetime, not_after: datetime) -> datetime:
    """The instant `prepare_at` of the lifetime has elapsed (to the microsecond)."""
    return _fraction_of_life(policy.prepare_at, not_before, not_after)


def activate_time(policy: RotationPolicy, not_before: datetime, not_after: datetime) -> datetime:
    """The instant `activate_at` of the lifetime has elapsed (to the microsecond)."""
    return _fraction_of_life(policy.activate_at, not_before, not_after)


def should_prepare(policy: RotationPolicy, not_before: datetime, not_after: datetime,
                   now: datetime) -> bool:
    """True from `prepare_at` of the lifetime on (the boundary instant included)."""
    return _check_aware(now) >= prepare_time(policy, not_before, not_after)


def should_activate(policy: RotationPolicy, not_before: datetime, not_after: datetime,
                    now: datetime) -> bool:
    """True from `activate_at` of the lifetime on (the boundary instant included)."""
    return _check_aware(now) >= activate_time(policy, not_before, not_after)


def max_leaf_ttl(intermediate_ttl: timedelta, policy: RotationPolicy = DEFAULT_POLICY) -> timedelta:
    """The longest leaf an intermediate can sign until its successor takes over, uncut."""
    return _remaining_at_activation(intermediate_ttl, policy)


def max_intermediate_ttl(root_ttl: timedelta, policy: RotationPolicy = DEFAULT_POLICY) -> timedelta:
    """The longest intermediate a root can sign until its successor takes over, uncut."""
    return _remaining_at_activation(root_ttl, policy)


def check_lifetimes(policy: RotationPolicy, *, root_ttl: timedelta, intermediate_ttl: timedelta,
                    leaf_ttl: timedelta) -> None:
    """ValueError unless the configured lifetimes let every rotation happen without a gap."""
    if min(root_ttl, intermediate_ttl, leaf_ttl) <= timedelta(0):
        raise ValueError("lifetimes must be positive")
    if intermediate_ttl > max_intermediate_ttl(root_ttl, policy):
        raise ValueError("the intermediate lifetime exceeds what is left of a root at rotation")
    if leaf_ttl > max_leaf_ttl(intermediate_ttl, policy):
        raise ValueError("the leaf lifetime exceeds what is left of an intermediate at rotation")
    if root_ttl * (policy.activate_at - policy.prepare_at) < policy.publish_lead:
        raise ValueError("a prepared root would not be published for publish_lead before activation")


# ---- decisions ----------------------------------------------------------------------------

def next_step(policy: RotationPolicy, generations: Iterable[Generation], now: datetime, *,
              published: Collection[int] | None = None,
              external_roots: bool = False) -> list[Action]:
    """The actions due now, in the order to apply them; [] when nothing is due.

    `generations`: every generation in the journal. `published`: the root and JWT key ids in
    the bundle the service last published; those that must leave yield `Prune` (omit it to
    get lifecycle actions only). `external_roots`: roots are an upstream authority's (their
    keys are not meshca's): a root is never `Prepare`d here, the service records one when the
    upstream signs with a new one; and a recorded root replaces the active one as soon as it
    has been published `publish_lead` (the upstream has moved on), not at `activate_at`.
    """
    _check_aware(now)
    snapshot = _validated(generations)
    actions: list[Action] = _published_kind_actions(policy, snapshot, now, Kind.ROOT,
                                                    external=external_roots)
    if not actions:
        actions = _intermediate_actions(policy, snapshot, now)
    if not actions:  # the X.509 chain first: at bootstrap, certificates before tokens
        actions = _published_kind_actions(policy, snapshot, now, Kind.JWT)
    if published is not None:
        actions += _prunes(policy, snapshot, now, published)
    return actions


def next_check(policy: RotationPolicy, generations: Iterable[Generation],
               now: datetime, *, external_roots: bool = False) -> datetime | None:
    """The earliest instant after `now` at which `next_step` (or the bundle) may change by
    itself, i.e. without a taint, an issuance or an operator; None if never.
    `external_roots` as for `next_step`."""
    _check_aware(now)
    snapshot = _validated(generations)
    moments: list[datetime] = []
    root = _active(snapshot, Kind.ROOT)
    for kind in (Kind.ROOT, Kind.INTERMEDIATE, Kind.JWT):
        active = _active(snapshot, kind)
        parent = root if kind is Kind.INTERMEDIATE else None
        candidates = _candidates(policy, snapshot, kind, parent, now)
        for p in _prepared(snapshot, kind):
            moments.append(activate_time(policy, p.not_before, p.not_after))  # goes stale
        if active is None:
            continue
        moments.append(active.not_after)
        if not candidates:
            moments.append(prepare_time(policy, active.not_before, active.not_after))
            continue
        due = activate_time(policy, active.not_before, active.not_after)
        if kind is Kind.ROOT and external_roots:
            due = candidates[0].prepared_at + policy.publish_lead
        elif kind in PUBLISHED_KINDS:
            due = max(due, candidates[0].prepared_at + policy.publish_lead)
        moments.append(due)
    for g in snapshot.values():
        if g.state is not State.RETIRED or not _in_bundle(policy, snapshot, g, now):
            continue
        if g.kind is Kind.ROOT and g.last_leaf_expiry is not None:
            moments.append(g.last_leaf_expiry + policy.skew + _SECOND)
        elif g.kind is Kind.JWT:
            moments.append(_last_token_expiry(policy, g) + policy.skew + _SECOND)
    later = [m for m in moments if m > now]
    return min(later) if later else None


def bundle_roots(generations: Iterable[Generation], now: datetime,
                 policy: RotationPolicy = DEFAULT_POLICY) -> tuple[Generation, ...]:
    """The roots peers must trust now, by id: prepared and active roots; retired roots until
    nothing under them is valid any more (+ skew); never a tainted root."""
    _check_aware(now)
    snapshot = _validated(generations)
    return tuple(g for g in sorted(snapshot.values(), key=lambda g: g.id)
                 if g.kind is Kind.ROOT and _in_bundle(policy, snapshot, g, now))


def bundle_jwt_keys(generations: Iterable[Generation], now: datetime,
                    policy: RotationPolicy = DEFAULT_POLICY) -> tuple[Generation, ...]:
    """The JWT keys validators must know now, by id: prepared and active keys; retired keys
    until every token they can have signed expired (+ skew); never a tainted key."""
    _check_aware(now)
    snapshot = _validated(generations)
    return tuple(g for g in sorted(snapshot.values(), key=lambda g: g.id)
                 if g.kind is Kind.JWT and _in_bundle(policy, snapshot, g, now))


def jwt_signing_generation(generations: Iterable[Generation]) -> Generation | None:
    """The one JWT key allowed to sign JWT-SVIDs now; None means none can be minted."""
    return _active(_validated(generations), Kind.JWT)


def bundle_changed(old_roots: Iterable[int | Generation], new_roots: Iterable[int | Generation]) -> bool:
    """Whether the set of roots differs (order does not matter): bump `spiffe_sequence` if so."""
    return _ids(old_roots) != _ids(new_roots)


def signing_generation(generations: Iterable[Generation]) -> Generation | None:
    """The one generation allowed to sign leaves now; None means the CA cannot sign."""
    snapshot = _validated(generations)
    root = _active(snapshot, Kind.ROOT)
    intermediate = _active(snapshot, Kind.INTERMEDIATE)
    if root is None or intermediate is None or intermediate.parent_id != root.id:
        return None
    return intermediate


def generations_under(generations: Iterable[Generation], generation_id: int) -> frozenset[int]:
    """`generation_id` and every generation it signed: whose certificates a taint affects."""
    snapshot = _validated(generations)
    if generation_id not in snapshot:
        raise ValueError(f"no CA generation {generation_id}")
    found = {generation_id}
    found |= {g.id for g in snapshot.values() if g.parent_id == generation_id}
    return frozenset(found)


def manual_prepare(generations: Iterable[Generation], kind: Kind) -> Prepare:
    """An operator's `ca:prepare`: a new generation of `kind` (an intermediate under the active root).

    One prepared generation of a kind at a time (for intermediates: under the active root), as
    the scheduler keeps it: every prepared root or JWT key is in the bundle every peer fetches,
    so repeated requests must not grow it without bound."""
    snapshot = _validated(generations)
    root = _active(snapshot, Kind.ROOT)
    if kind is Kind.INTERMEDIATE and root is None:
        raise ValueError("no active root to sign an intermediate")
    waiting = [g for g in _prepared(snapshot, kind)
               if kind is not Kind.INTERMEDIATE or (root is not None and g.parent_id == root.id)]
    if waiting:
        raise ValueError(f"{_NOUN[kind]} generation {waiting[0].id} is already prepared: activate it, "
                         f"or taint it to withdraw it, before preparing another")
    return Prepare(kind, root.id if kind is Kind.INTERMEDIATE and root is not None else None,
                   Reason.SCHEDULED)


def manual_activate(policy: RotationPolicy, generations: Iterable[Generation], kind: Kind,
                    now: datetime, *, waive_lead: bool = False) -> Activate:
    """An operator's `ca:activate`: the oldest usable prepared generation of `kind`, now.

    A root or JWT key published for less than `publish_lead` is refused unless `waive_lead`
    (peers that have not refreshed their bundle would reject what it signs)."""
    _check_aware(now)
    snapshot = _validated(generations)
    root = _active(snapshot, Kind.ROOT)
    parent = root if kind is Kind.INTERMEDIATE else None
    if kind is Kind.INTERMEDIATE and root is None:
        raise ValueError("no active root: activate a root first")
    candidates = _candidates(policy, snapshot, kind, parent, now)
    if not candidates:
        raise ValueError(f"no prepared {kind} generation can be activated")
    chosen = candidates[0]
    early = kind in PUBLISHED_KINDS and not _published_long_enough(policy, chosen, now)
    if early and not waive_lead:
        ready = chosen.prepared_at + policy.publish_lead
        raise ValueError(f"{kind} generation {chosen.id} is published only from {ready.isoformat()}")
    active = _active(snapshot, kind)
    return Activate(chosen.id, kind, active.id if active else None, Reason.SCHEDULED, early)


# ---- internals ----------------------------------------------------------------------------

def _published_kind_actions(policy: RotationPolicy, snapshot: dict[int, Generation],
                            now: datetime, kind: Kind, *, external: bool = False) -> list[Action]:
    """Roots and JWT keys: parentless, published ahead, activated after publish_lead.
    `external`: roots of an upstream (see `next_step`)."""
    actions: list[Action] = [Withdraw(p.id, kind, Reason.STALE)
                             for p in _prepared(snapshot, kind) if _stale(policy, p, now)]
    candidates = _candidates(policy, snapshot, kind, None, now)
    active = _active(snapshot, kind)
    best = candidates[0] if candidates else None
    if external:
        if best is None:
            return actions  # nothing to prepare: the upstream makes roots
        if active is None or now >= active.not_after:
            reason = _replacement_reason(snapshot, kind) if active is None else Reason.EXPIRED
            waived = reason is Reason.BOOTSTRAP or not _published_long_enough(policy, best, now)
            return [*actions, Activate(best.id, kind, active.id if active else None, reason, waived)]
        if _published_long_enough(policy, best, now):
            actions.append(Activate(best.id, kind, active.id, Reason.SCHEDULED))
        return actions
    if active is None:
        reason = _replacement_reason(snapshot, kind)
        if best is None:
            return [*actions, Prepare(kind, None, reason)]
        waived = reason is Reason.BOOTSTRAP or not _published_long_enough(policy, best, now)
        return [*actions, Activate(best.id, kind, None, reason, waived)]
    if now >= active.not_after:
        if best is None:
            return [*actions, Prepare(kind, None, Reason.EXPIRED)]
        waived = not _published_long_enough(policy, best, now)
        return [*actions, Activate(best.id, kind, active.id, Reason.EXPIRED, waived)]
    if best is None:
        if should_prepare(policy, active.not_before, active.not_after, now):
            actions.append(Prepare(kind, None, Reason.SCHEDULED))
        return actions
    if (should_activate(policy, active.not_before, active.not_after, now)
            and _published_long_enough(policy, best, now)):
        actions.append(Activate(best.id, kind, active.id, Reason.SCHEDULED))
    return actions


def _intermediate_actions(policy: RotationPolicy, snapshot: dict[int, Generation],
                          now: datetime) -> list[Action]:
    root = _active(snapshot, Kind.ROOT)
    if root is None or now >= root.not_after:
        return []  # nothing can be signed under it (an upstream's root may expire unreplaced)
    actions: list[Action] = []
    for p in _prepared(snapshot, Kind.INTERMEDIATE):
        if p.parent_id != root.id:
            actions.append(Withdraw(p.id, Kind.INTERMEDIATE, Reason.PARENT_ROTATED))
        elif _stale(policy, p, now):
            actions.append(Withdraw(p.id, Kind.INTERMEDIATE, Reason.STALE))
    candidates = _candidates(policy, snapshot, Kind.INTERMEDIATE, root, now)
    best = candidates[0] if candidates else None
    active = _active(snapshot, Kind.INTERMEDIATE)
    if active is None:
        reason = _replacement_reason(snapshot, Kind.INTERMEDIATE)
    elif active.parent_id != root.id:
        reason = Reason.PARENT_ROTATED
    elif now >= active.not_after:
        reason = Reason.EXPIRED
    elif should_activate(policy, active.not_before, active.not_after, now):
        reason = Reason.SCHEDULED
    else:
        if best is None and should_prepare(policy, active.not_before, active.not_after, now):
            actions.append(Prepare(Kind.INTERMEDIATE, root.id, Reason.SCHEDULED))
        return actions
    # Intermediates are not in the bundle: a replacement may sign as soon as it exists.
    if best is None:
        return [*actions, Prepare(Kind.INTERMEDIATE, root.id, reason)]
    return [*actions, Activate(best.id, Kind.INTERMEDIATE, active.id if active else None, reason)]


def _prunes(policy: RotationPolicy, snapshot: dict[int, Generation], now: datetime,
            published: Collection[int]) -> list[Action]:
    keep = {g.id for g in snapshot.values()
            if g.kind in PUBLISHED_KINDS and _in_bundle(policy, snapshot, g, now)}
    prunes: list[Action] = []
    for gid in sorted(set(published) - keep):
        found = snapshot.get(gid)
        if found is None or found.kind not in PUBLISHED_KINDS:
            raise ValueError(f"published generation {gid} is not a root or JWT key in the snapshot")
        reason = Reason.TAINTED if found.state is State.TAINTED else Reason.OUTLIVED
        prunes.append(Prune(gid, reason, found.kind))
    return prunes


def _in_bundle(policy: RotationPolicy, snapshot: dict[int, Generation], root: Generation,
               now: datetime) -> bool:
    if root.state in (State.PREPARED, State.ACTIVE):
        return True
    if root.state is State.TAINTED:
        return False
    if root.kind is Kind.JWT:
        return now <= _last_token_expiry(policy, root) + policy.skew
    if any(g.parent_id == root.id and g.state is State.ACTIVE for g in snapshot.values()):
        return True
    return root.last_leaf_expiry is not None and now <= root.last_leaf_expiry + policy.skew


def _last_token_expiry(policy: RotationPolicy, key: Generation) -> datetime:
    """The latest `exp` a retired JWT key can have signed: tokens never outlive the key, nor
    last longer than token_ttl after it retired (notAfter if its retirement was not recorded)."""
    if key.retired_at is None:
        return key.not_after
    return min(key.not_after, key.retired_at + policy.token_ttl)


def _candidates(policy: RotationPolicy, snapshot: dict[int, Generation], kind: Kind,
                parent: Generation | None, now: datetime) -> list[Generation]:
    """Prepared generations that may be activated, oldest first."""
    return [p for p in _prepared(snapshot, kind)
            if not _stale(policy, p, now) and (kind is not Kind.INTERMEDIATE or (
                parent is not None and p.parent_id == parent.id))]


def _prepared(snapshot: dict[int, Generation], kind: Kind) -> list[Generation]:
    found = [g for g in snapshot.values() if g.kind is kind and g.state is State.PREPARED]
    return sorted(found, key=lambda g: (g.prepared_at, g.id))


def _active(snapshot: dict[int, Generation], kind: Kind) -> Generation | None:
    found = [g for g in snapshot.values() if g.kind is kind and g.state is State.ACTIVE]
    if len(found) > 1:
        raise ValueError(f"more than one active {kind} generation: {sorted(g.id for g in found)}")
    return found[0] if found else None


def _stale(policy: RotationPolicy, prepared: Generation, now: datetime) -> bool:
    return should_activate(policy, prepared.not_before, prepared.not_after, now)


def _published_long_enough(policy: RotationPolicy, root: Generation, now: datetime) -> bool:
    return now >= root.prepared_at + policy.publish_lead


def _replacement_reason(snapshot: dict[int, Generation], kind: Kind) -> Reason:
    """Why no generation of `kind` is active: never was, the last one was tainted, or expired."""
    former = [g for g in snapshot.values()
              if g.kind is kind and g.state in (State.RETIRED, State.TAINTED)]
    if not former:
        return Reason.BOOTSTRAP
    latest = max(former, key=lambda g: (g.not_before, g.id))
    return Reason.TAINTED if latest.state is State.TAINTED else Reason.EXPIRED


def _validated(generations: Iterable[Generation]) -> dict[int, Generation]:
    snapshot: dict[int, Generation] = {}
    for g in generations:
        if not isinstance(g, Generation):
            raise TypeError("generations must be rotation.Generation values")
        if g.id in snapshot:
            raise ValueError(f"generation {g.id} appears twice")
        snapshot[g.id] = g
    for g in snapshot.values():
        if g.parent_id is not None:
            parent = snapshot.get(g.parent_id)
            if parent is None or parent.kind is not Kind.ROOT:
                raise ValueError(f"generation {g.id}: parent {g.parent_id} is not a root in the snapshot")
    return snapshot


def _fraction_of_life(fraction: float, not_before: datetime, not_after: datetime) -> datetime:
    _check_aware(not_before)
    _check_aware(not_after)
    if not_after <= not_before:
        raise ValueError("not_after must follow not_before")
    return not_before + (not_after - not_before) * fraction


def _remaining_at_activation(ttl: timedelta, policy: RotationPolicy) -> timedelta:
    if ttl <= timedelta(0):
        raise ValueError("lifetime must be positive")
    return ttl - ttl * policy.activate_at


def _check_aware(moment: datetime) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError("times must be datetime values")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("times must be timezone-aware")
    return moment


def _ids(roots: Iterable[int | Generation]) -> frozenset[int]:
    return frozenset(r.id if isinstance(r, Generation) else r for r in roots)
