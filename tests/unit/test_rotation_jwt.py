"""The rotation rules of JWT-SVID keys (kind jwt), and a simulated period of them: every token
minted along the way validates (PyJWT, the bundle of the moment) until its exp."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from meshca.core import jwt_signing, rotation
from meshca.core.jwt_signing import JwtKey, JwtSigningKey
from meshca.core.remote_signing import LocalSigner
from meshca.core.rotation import (
    Activate,
    Generation,
    Kind,
    Prepare,
    Prune,
    Reason,
    RotationPolicy,
    State,
    Withdraw,
)
from tests.jwt_validation import validate

NB = datetime(2026, 1, 1, tzinfo=UTC)
WEEK, DAY, HOUR = timedelta(days=7), timedelta(days=1), timedelta(hours=1)
POLICY = RotationPolicy()  # 1/2, 5/6, skew 1h, publish lead 1 day, token_ttl 1h
ROOT, INTER, JWT = Kind.ROOT, Kind.INTERMEDIATE, Kind.JWT
P, A, R, T = State.PREPARED, State.ACTIVE, State.RETIRED, State.TAINTED


def chain() -> list[Generation]:
    """An active root and intermediate that need nothing: only JWT actions come out."""
    return [Generation(1, ROOT, A, NB, NB + 365 * DAY, NB),
            Generation(2, INTER, A, NB, NB + 365 * DAY, NB, parent_id=1)]


def key(gid: int, state: State, *, start: datetime = NB, prepared_at: datetime | None = None,
        retired_at: datetime | None = None) -> Generation:
    return Generation(gid, JWT, state, start, start + WEEK, prepared_at or start,
                      retired_at=retired_at)


def step(gens: list[Generation], now: datetime, **kw: Any) -> list[rotation.Action]:
    return rotation.next_step(POLICY, [*chain(), *gens], now, **kw)


def test_a_jwt_key_has_no_parent() -> None:
    with pytest.raises(ValueError, match="a JWT key none"):
        Generation(3, JWT, A, NB, NB + WEEK, NB, parent_id=1)


def test_bootstrap_prepares_and_activates_at_once_after_the_x509_chain() -> None:
    assert rotation.next_step(POLICY, [], NB)[0] == Prepare(ROOT, None, Reason.BOOTSTRAP)
    assert step([], NB) == [Prepare(JWT, None, Reason.BOOTSTRAP)]
    assert step([key(3, P)], NB) == [Activate(3, JWT, None, Reason.BOOTSTRAP, lead_waived=True)]


def test_prepared_at_half_life_activated_at_five_sixths_after_the_lead() -> None:
    half, five_sixths = NB + WEEK / 2, NB + WEEK * 5 / 6
    assert step([key(3, A)], half - timedelta(microseconds=1)) == []
    assert step([key(3, A)], half) == [Prepare(JWT, None, Reason.SCHEDULED)]
    successor = key(4, P, start=half)
    assert step([key(3, A), successor], five_sixths - timedelta(microseconds=1)) == []
    assert step([key(3, A), successor], five_sixths) == [Activate(4, JWT, 3, Reason.SCHEDULED)]
    late = key(4, P, start=five_sixths - HOUR)  # published an hour ago: waits for the lead
    assert step([key(3, A), late], five_sixths) == []
    assert rotation.next_check(POLICY, [*chain(), key(3, A), late], five_sixths) == \
        five_sixths - HOUR + DAY
    # Expired with a successor published too recently: activated anyway, the lead waived.
    later = key(4, P, start=NB + WEEK - HOUR)
    assert step([key(3, A), later], NB + WEEK) == [
        Activate(4, JWT, 3, Reason.EXPIRED, lead_waived=True)]


def test_a_retired_key_stays_published_until_its_last_token_expired_plus_skew() -> None:
    retired = NB + WEEK * 5 / 6
    gens = [key(3, R, retired_at=retired), key(4, A, start=NB + WEEK / 2)]
    until = retired + POLICY.token_ttl + POLICY.skew
    assert [g.id for g in rotation.bundle_jwt_keys([*chain(), *gens], until, POLICY)] == [3, 4]
    assert step(gens, until, published={1, 3, 4}) == []
    after = until + timedelta(microseconds=1)
    assert [g.id for g in rotation.bundle_jwt_keys([*chain(), *gens], after, POLICY)] == [4]
    assert step(gens, after, published={1, 3, 4}) == [Prune(3, Reason.OUTLIVED, JWT)]
    assert rotation.next_check(POLICY, [*chain(), *gens], retired) == until + timedelta(seconds=1)
    # Never past its notAfter (no token outlives its key), nor forever when not recorded.
    near_end = key(3, R, retired_at=NB + WEEK - timedelta(minutes=10))
    assert not rotation.bundle_jwt_keys([*chain(), near_end], NB + WEEK + POLICY.skew
                                        + timedelta(seconds=1), POLICY)
    unknown = key(3, R)
    assert rotation.bundle_jwt_keys([*chain(), unknown], NB + WEEK, POLICY) == (unknown,)


def test_a_tainted_key_leaves_at_once_and_is_replaced() -> None:
    assert rotation.bundle_jwt_keys([*chain(), key(3, T)], NB, POLICY) == ()
    assert step([key(3, T)], NB, published={1, 3}) == [
        Prepare(JWT, None, Reason.TAINTED), Prune(3, Reason.TAINTED, JWT)]
    ready = key(4, P, start=NB - 2 * DAY)
    assert step([key(3, T), ready], NB) == [Activate(4, JWT, None, Reason.TAINTED)]


def test_stale_prepared_key_is_withdrawn() -> None:
    stale = key(4, P, start=NB - WEEK)
    assert step([key(3, A, start=NB), stale], NB)[0] == Withdraw(4, JWT, Reason.STALE)


def test_manual_prepare_and_activate() -> None:
    assert rotation.manual_prepare([*chain(), key(3, A)], JWT) == Prepare(JWT, None, Reason.SCHEDULED)
    gens = [*chain(), key(3, A), key(4, P, start=NB + DAY)]
    with pytest.raises(ValueError, match="JWT-SVID key generation 4 is already prepared"):
        rotation.manual_prepare(gens, JWT)  # one waits already: the bundle must not grow on request
    with pytest.raises(ValueError, match="jwt generation 4 is published only from"):
        rotation.manual_activate(POLICY, gens, JWT, NB + DAY + HOUR)
    assert rotation.manual_activate(POLICY, gens, JWT, NB + DAY + HOUR, waive_lead=True) == \
        Activate(4, JWT, 3, Reason.SCHEDULED, lead_waived=True)
    assert rotation.jwt_signing_generation(gens) == gens[2]
    assert rotation.generations_under(gens, 3) == {3}


# ---- a simulated period ---------------------------------------------------------------------

@dataclasses.dataclass
class Sim:
    policy: RotationPolicy
    gens: dict[int, Generation] = dataclasses.field(default_factory=dict)
    keys: dict[int, ec.EllipticCurvePrivateKey] = dataclasses.field(default_factory=dict)
    kids: dict[int, str] = dataclasses.field(default_factory=dict)
    published: set[int] = dataclasses.field(default_factory=set)
    prunes: int = 0

    def tick(self, now: datetime) -> None:
        for _ in range(20):
            actions = rotation.next_step(self.policy, self.gens.values(), now,
                                         published=self.published)
            if not actions:
                return
            for action in actions:
                self.apply(action, now)
        raise AssertionError("next_step did not converge")

    def apply(self, action: rotation.Action, now: datetime) -> None:
        match action:
            case Prepare(kind=kind, parent_id=parent):
                gid = len(self.gens) + 1
                ttl = 365 * DAY if kind is ROOT else WEEK
                self.gens[gid] = Generation(gid, kind, P, now, now + ttl, now, parent)
                if kind is JWT:
                    self.keys[gid] = ec.generate_private_key(ec.SECP256R1())
                    self.kids[gid] = jwt_signing.new_kid()
                    self.published.add(gid)
                elif kind is ROOT:
                    self.published.add(gid)
            case Activate(generation_id=gid, retires=old):
                self._set(gid, A, now)
                if old is not None:
                    self._set(old, R, now)
            case Withdraw(generation_id=gid):
                self._set(gid, R, now)
            case Prune(generation_id=gid, kind=kind):
                self.published.discard(gid)
                self.prunes += kind is JWT

    def _set(self, gid: int, state: State, now: datetime) -> None:
        g = self.gens[gid]
        self.gens[gid] = dataclasses.replace(
            g, state=rotation.transition(g.state, state),
            retired_at=now if state is R else g.retired_at)

    def signing(self) -> JwtSigningKey:
        g = rotation.jwt_signing_generation(self.gens.values())
        assert g is not None
        public = self.keys[g.id].public_key()
        return JwtSigningKey(JwtKey(g.id, self.kids[g.id], public, g.not_after),
                             LocalSigner(self.keys[g.id]))

    def bundle(self) -> dict[str, Any]:
        keys = [JwtKey(gid, self.kids[gid], self.keys[gid].public_key(), self.gens[gid].not_after)
                for gid in sorted(self.published) if gid in self.keys]
        return {"keys": [k.jwk() for k in keys]}  # spiffe_jwks' jwt-svid entries


def simulate(policy: RotationPolicy, days: int, ttl: timedelta) -> tuple[Sim, list[str], int, set[str]]:
    """Every 30 minutes a token of `ttl` (and one of 5 min) is minted; at every step, every
    token not yet expired is validated against the bundle of that step (exp checked at the
    simulated time). Returns the failures, the number of validations and the kids used."""
    sim = Sim(policy)
    now = NB
    held: list[tuple[str, datetime]] = []
    failures: list[str] = []
    checked = 0
    kids: set[str] = set()
    while now < NB + days * DAY:
        sim.tick(now)
        signing = sim.signing()
        for lifetime in (ttl, timedelta(minutes=5)):
            minted = jwt_signing.mint(signing, "spiffe://td/ns/a/sa/b", ["aud"], lifetime, now)
            held.append((minted.token, minted.expires_at))
        kids.add(signing.key.kid)
        bundle = sim.bundle()
        held = [(t, exp) for t, exp in held if exp > now]
        for token, _ in held:
            try:
                validate(token, bundle, "aud", now=now.timestamp())
            except jwt.InvalidTokenError as exc:
                failures.append(f"{now}: {exc}")
            checked += 1
        now += timedelta(minutes=30)
    return sim, failures, checked, kids


def test_sixty_days_of_jwt_key_rotations_never_fail_a_valid_token() -> None:
    ttl = timedelta(hours=1)
    sim, failures, checked, kids = simulate(dataclasses.replace(POLICY, token_ttl=ttl), 60, ttl)
    assert failures == []
    assert len(kids) >= 10  # a week each, replaced at five sixths
    assert sim.prunes >= 9  # retired keys left the bundle once their tokens expired
    assert len([g for g in sim.gens.values() if g.kind is JWT and g.id in sim.published]) <= 3
    assert checked > 5_000


def test_the_simulation_sees_a_key_pruned_before_its_tokens_expired() -> None:
    """Negative control: rules that keep a retired key for less than the tokens live (and no
    skew) must show up as failed validations."""
    policy = dataclasses.replace(POLICY, token_ttl=timedelta(minutes=10), skew=timedelta(0))
    _, failures, _, _ = simulate(policy, 14, timedelta(hours=2))
    assert failures and "no jwt-svid key" in failures[0]
