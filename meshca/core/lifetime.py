"""How long a certificate lives: requested, defaulted, capped by policy and by its issuer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from meshca.errors import CaUnavailable, InvalidRequest


@dataclass(frozen=True, slots=True)
class LifetimePolicy:
    default_ttl: timedelta
    max_ttl: timedelta
    backdate: timedelta

    def __post_init__(self) -> None:
        if self.default_ttl <= timedelta(0) or self.max_ttl <= timedelta(0):
            raise ValueError("default and maximum lifetimes must be positive")
        if self.default_ttl > self.max_ttl:
            raise ValueError("the default lifetime must not exceed the maximum")
        if self.backdate < timedelta(0):
            raise ValueError("backdate must not be negative")


@dataclass(frozen=True, slots=True)
class Validity:
    not_before: datetime
    not_after: datetime


def leaf_validity(
    requested_seconds: int, policy: LifetimePolicy, now: datetime, issuer_not_after: datetime
) -> Validity:
    """Istio semantics: <= 0 means the default; above the maximum is refused, not clamped.

    The leaf never outlives its issuer: it is cut short to the issuer's notAfter.
    """
    if requested_seconds <= 0:
        ttl = policy.default_ttl
    else:
        if requested_seconds > policy.max_ttl.total_seconds():
            raise InvalidRequest(
                f"requested lifetime {requested_seconds}s exceeds the maximum "
                f"{int(policy.max_ttl.total_seconds())}s"
            )
        ttl = timedelta(seconds=requested_seconds)
    not_after = min(now + ttl, issuer_not_after)
    if not_after <= now:
        # The CA's state, not the caller's mistake: UNAVAILABLE, which Istio's agent retries
        # (INVALID_ARGUMENT it would not) until rotation has an unexpired intermediate active.
        raise CaUnavailable("the issuing CA has expired")
    return Validity(not_before=now - policy.backdate, not_after=not_after)
