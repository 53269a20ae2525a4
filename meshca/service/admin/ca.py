"""CA generations: their state, an operator's prepare / activate / taint, and the trust bundle.

An operator's action is audited with its outcome either way; a refusal says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from meshca.core import rotation
from meshca.core.authority import SigningAuthority
from meshca.core.bundle import TrustBundle
from meshca.core.clock import Clock
from meshca.core.jwt_signing import JwtKey
from meshca.core.rotation import Action, Activate, Kind, Prepare, Prune, RotationPolicy, Withdraw
from meshca.core.spiffe_bundle import spiffe_jwks
from meshca.errors import Conflict
from meshca.service.admin.audit import audit_entry
from meshca.service.admin_ports import AuditLog, CaGenerations
from meshca.service.ca_rotator import event_labels
from meshca.service.ports import AuditEntry

T = TypeVar("T")
PLUGGED = ("the CA is plugged in (--ca-dir): meshca rotates nothing it does not own; replace "
           "the files in the directory instead")
_ROTATION_NOTE = ("meshca prepares each generation's successor at prepare_at of its life and "
                  "activates it at activate_at; retired roots leave the bundle after their last "
                  "certificate expires (+ skew), retired JWT keys after the last JWT-SVID they "
                  "can have signed expires (+ skew)")
Snapshot = tuple[list[rotation.Generation], set[int]]


class JournalView(Protocol):
    def snapshot(self) -> Snapshot:
        """Every generation, and the ids of the roots and JWT keys published in the bundle."""
        ...


class CaOperations(Protocol):
    """What the admin API asks of the rotator (service/ca_rotator.py's CaRotator)."""

    @property
    def journal(self) -> JournalView: ...
    @property
    def last_error(self) -> str | None: ...
    # Each writes `audit` in the very transaction of its journal change; a refused change is
    # recorded alone as refused, with the reason, and re-raised.
    def prepare(self, kind: Kind, *, audit: AuditEntry | None = ...) -> tuple[Action, int | None]: ...
    def activate(self, kind: Kind, *, waive_lead: bool = ...,
                 audit: AuditEntry | None = ...) -> Action: ...
    def taint(self, generation_id: int, *, audit: AuditEntry | None = ...) -> list[Action]: ...


@dataclass(frozen=True, slots=True)
class GenerationView:
    id: int
    kind: str
    parent_id: int | None
    subject: str
    serial: str
    key_type: str
    key_location: str
    not_before: datetime
    not_after: datetime
    state: str
    signing: bool  # the intermediate that signs new certificates (a JWT key: while active)
    in_bundle: bool  # a root or JWT key published in the trust bundle


@dataclass(frozen=True, slots=True)
class RotationStatus:
    automatic: bool
    prepare_at: float | None
    activate_at: float | None
    publish_lead_seconds: int | None
    skew_seconds: int | None
    next_check: datetime | None
    last_error: str | None
    note: str


@dataclass(frozen=True, slots=True)
class PluggedStatus:
    directory: str
    loaded_fingerprint: str | None
    last_error: str | None
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CaStatus:
    mode: str  # "meshca" | "plugged"
    bundle_sequence: int
    rotation: RotationStatus
    plugged: PluggedStatus | None
    generations: tuple[GenerationView, ...]


@dataclass(frozen=True, slots=True)
class CaActionView:
    action: str  # prepare | activate | withdraw | prune
    kind: str
    generation_id: int | None
    reason: str
    retires: int | None = None


@dataclass(frozen=True, slots=True)
class CaChange:
    actions: tuple[CaActionView, ...]
    generations: tuple[GenerationView, ...]


class CaAdmin:
    def __init__(self, *, generations: CaGenerations, audit: AuditLog, clock: Clock,
                 authority: Callable[[], SigningAuthority | None],
                 rotator: CaOperations | None = None,
                 rotation_policy: RotationPolicy | None = None,
                 plugged: Callable[[], PluggedStatus] | None = None,
                 bundle_sequence: Callable[[], int] | None = None,
                 changed: Callable[[], None] = lambda: None) -> None:
        """`rotator` None: a plugged-in CA (`plugged` describes it), which meshca does not
        rotate. `bundle_sequence`: that of the bundle `authority` serves (default: the
        journal's). `changed`: reload this process's CA now."""
        self._generations = generations
        self._audit = audit
        self._clock = clock
        self._authority = authority
        self._rotator = rotator
        self._policy = rotation_policy
        self._plugged = plugged
        self._bundle_sequence = bundle_sequence or generations.bundle_sequence
        self._changed = changed

    def status(self) -> CaStatus:
        """Every generation, oldest first; how (and whether) meshca rotates."""
        journal = self._snapshot()
        return CaStatus(
            mode="plugged" if self._plugged else "meshca",
            bundle_sequence=self._bundle_sequence(),
            rotation=self._rotation(journal),
            plugged=self._plugged() if self._plugged else None,
            generations=self._views(journal),
        )

    def prepare(self, kind: Kind, actor: str) -> CaChange:
        rotator = self._rotator_for(actor, "ca.prepare", kind.value)
        done = audit_entry(self._clock, actor, "ca.prepare", kind.value)
        action, generation = rotator.prepare(kind, audit=done)
        return self._change([_action_view(action, generation, manual=True)])

    def activate(self, kind: Kind, actor: str, *, waive_lead: bool = False) -> CaChange:
        rotator = self._rotator_for(actor, "ca.activate", kind.value)
        done = audit_entry(self._clock, actor, "ca.activate", kind.value)
        action = rotator.activate(kind, waive_lead=waive_lead, audit=done)
        return self._change([_action_view(action, manual=True)])

    def taint(self, generation_id: int, reason: str, actor: str) -> CaChange:
        """NotFound for an unknown generation, Conflict when it cannot be tainted."""
        target = f"generation/{generation_id}"
        rotator = self._rotator_for(actor, "ca.taint", target)
        done = audit_entry(self._clock, actor, "ca.taint", target, detail=reason or None)
        actions = rotator.taint(generation_id, audit=done)
        return self._change([_action_view(a) for a in actions])

    # ---- helpers --------------------------------------------------------------------------

    def _rotator_for(self, actor: str, action: str, target: str) -> CaOperations:
        if self._rotator is None:
            self._audit.append(audit_entry(self._clock, actor, action, target, detail=PLUGGED,
                                           outcome="refused"))
            raise Conflict(PLUGGED)
        return self._rotator

    def _change(self, actions: list[CaActionView]) -> CaChange:
        self._changed()
        return CaChange(tuple(actions), self._views(self._snapshot()))

    def _snapshot(self) -> Snapshot | None:
        """The journal's generations and published roots; None for a plugged-in CA."""
        return self._rotator.journal.snapshot() if self._rotator is not None else None

    def _rotation(self, journal: Snapshot | None) -> RotationStatus:
        policy = self._policy
        if self._rotator is None or policy is None or journal is None:
            return RotationStatus(automatic=False, prepare_at=None, activate_at=None,
                                  publish_lead_seconds=None, skew_seconds=None, next_check=None,
                                  last_error=None, note=PLUGGED)
        return RotationStatus(
            automatic=True, prepare_at=policy.prepare_at, activate_at=policy.activate_at,
            publish_lead_seconds=int(policy.publish_lead.total_seconds()),
            skew_seconds=int(policy.skew.total_seconds()),
            next_check=rotation.next_check(policy, journal[0], self._clock.now()),
            last_error=self._rotator.last_error, note=_ROTATION_NOTE)

    def _views(self, journal: Snapshot | None) -> tuple[GenerationView, ...]:
        """As the journal has them now (this process may reload a moment later)."""
        rows = self._generations.all()
        if journal is not None:
            generations, in_bundle = journal
            chosen = rotation.signing_generation(generations)  # a JWT key signs while active
            signing = {chosen.id} if chosen else set()
        else:
            authority = self._authority()
            signing = {authority.generation_id} if authority else set()
            in_bundle = set()
        return tuple(
            GenerationView(id=g.id, kind=g.kind, parent_id=g.parent_id, subject=g.subject,
                           serial=g.serial, key_type=g.key_type, key_location=g.key_location,
                           not_before=g.not_before, not_after=g.not_after, state=g.state,
                           signing=g.id in signing, in_bundle=g.id in in_bundle)
            for g in rows)


def _action_view(action: Action, generation_id: int | None = None, *,
                 manual: bool = False) -> CaActionView:
    event, kind, reason = event_labels(action, manual=manual)
    match action:
        case Activate(generation_id=gid, retires=retires):
            return CaActionView(event, kind, gid, reason, retires)
        case Withdraw(generation_id=gid) | Prune(generation_id=gid):
            return CaActionView(event, kind, gid, reason)
        case Prepare():
            return CaActionView(event, kind, generation_id, reason)
    raise AssertionError(action)  # pragma: no cover


class TrustBundleView:
    """The trust bundle this process serves (public)."""

    def __init__(self, authority: Callable[[], SigningAuthority | None],
                 sequence: Callable[[], int], refresh_hint_seconds: int,
                 jwt_keys: Callable[[], tuple[JwtKey, ...]] = lambda: ()) -> None:
        self._authority = authority
        self.sequence = sequence
        self.refresh_hint_seconds = refresh_hint_seconds
        self.jwt_keys = jwt_keys  # the published JWT-SVID keys (the JSON form carries them)

    def current(self) -> TrustBundle | None:
        """None until the CA is loaded."""
        authority = self._authority()
        return authority.bundle if authority is not None else None

    def document(self) -> dict[str, Any] | None:
        """The SPIFFE bundle (JWK Set) of this trust domain: what `/v1/bundle` answers in JSON
        and the federation bundle endpoint serves. None until the CA is loaded."""
        current = self.current()
        if current is None:
            return None
        return spiffe_jwks(current, self.sequence(), self.refresh_hint_seconds, self.jwt_keys())
