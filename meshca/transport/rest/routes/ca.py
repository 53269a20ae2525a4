"""CA generations: their state, and an operator's prepare / activate / taint."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from meshca.core import rotation
from meshca.core.rotation import Action, Activate, Kind, Prepare, Prune, Withdraw
from meshca.infra.db.audit import append_audit_alone
from meshca.infra.db.inventory import Conflict
from meshca.service.ca_rotator import CaRotator, event_labels
from meshca.transport.rest.context import AdminContext, Context
from meshca.transport.rest.models import (
    CaActionOut,
    CaActivateIn,
    CaChangeOut,
    CaGenerationOut,
    CaKindIn,
    CaOut,
    PluggedOut,
    RotationOut,
    TaintIn,
)
from meshca.transport.rest.problems import problem_responses

router = APIRouter(tags=["ca"])
_PLUGGED = ("the CA is plugged in (--ca-dir): meshca rotates nothing it does not own; replace "
            "the files in the directory instead")
_CHANGE = problem_responses(400, 409, 422, 503, meanings={
    400: "the body is not JSON",
    409: "not possible in the CA's current state (the detail says why), or the CA is plugged in",
    503: "another replica holds the rotation lease for longer than the request may wait"})
GenerationPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="as listed by GET /v1/ca")]


@router.get("/v1/ca", response_model=CaOut)
def ca_status(context: Context) -> CaOut:
    """Every root and intermediate generation, oldest first; how (and whether) meshca rotates."""
    plugged = context.plugged
    sequence = context.bundle_sequence() if context.bundle_sequence else context.ca.bundle_sequence()
    journal = _snapshot(context)
    return CaOut(
        mode="plugged" if plugged else "meshca",
        bundle_sequence=sequence,
        rotation=_rotation(context, journal),
        plugged=PluggedOut(
            directory=str(plugged.watcher.directory),
            loaded_fingerprint=plugged.watcher.current.fingerprint if plugged.watcher.current else None,
            last_error=plugged.watcher.last_error,
            warnings=list(plugged.watcher.current.warnings) if plugged.watcher.current else [],
        ) if plugged else None,
        generations=_generations(context, journal),
    )


@router.post("/v1/ca:prepare", response_model=CaChangeOut, status_code=201,
             responses=_CHANGE)
def prepare(request: Request, context: Context, body: CaKindIn) -> CaChangeOut:
    """Prepare a new root (published in the bundle at once) or intermediate (under the active
    root) now, ahead of schedule. It signs only once activated."""
    rotator = _rotator(context, request, "ca.prepare", body.kind)
    action, generation = _audited(context, request, "ca.prepare", body.kind,
                                  lambda: rotator.prepare(Kind(body.kind)))
    context.ca_changed()
    return CaChangeOut(actions=[_action(action, generation, manual=True)], generations=_generations(context))


@router.post("/v1/ca:activate", response_model=CaChangeOut, responses=_CHANGE)
def activate(request: Request, context: Context, body: CaActivateIn) -> CaChangeOut:
    """Activate the oldest usable prepared generation of `kind` now; the active one retires."""
    rotator = _rotator(context, request, "ca.activate", body.kind)
    action = _audited(context, request, "ca.activate", body.kind,
                      lambda: rotator.activate(Kind(body.kind), waive_lead=body.waive_publish_lead))
    context.ca_changed()
    return CaChangeOut(actions=[_action(action, manual=True)], generations=_generations(context))


@router.post("/v1/ca/generations/{generation_id}:taint", response_model=CaChangeOut,
             responses=problem_responses(400, 404, 409, 422, 503, meanings={
                 400: "the body is not JSON",
                 404: "no CA generation has this id",
                 409: "the generation is already tainted, or the CA is plugged in",
                 503: "another replica holds the rotation lease for longer than the request may "
                      "wait"}))
def taint(request: Request, context: Context, generation_id: GenerationPath,
          body: TaintIn | None = None) -> CaChangeOut:
    """Mark a key compromised: a tainted root leaves the bundle, nothing signs under the key
    again, a replacement is rotated in at once, and every certificate under the key must renew
    (renewal with such a certificate is refused; the workload re-authenticates with its token)."""
    target = f"generation/{generation_id}"
    rotator = _rotator(context, request, "ca.taint", target)
    reason = body.reason if body else ""
    actions = _audited(context, request, "ca.taint", target,
                       lambda: rotator.taint(generation_id), detail=reason or None)
    context.ca_changed()
    return CaChangeOut(actions=[_action(a) for a in actions], generations=_generations(context))


def _rotator(context: AdminContext, request: Request, action: str, target: str) -> CaRotator:
    if context.rotator is None:
        append_audit_alone(context.engine, context.audit(request, action, target,
                                                         detail=_PLUGGED, outcome="refused"))
        raise Conflict(_PLUGGED)
    return context.rotator


def _audited(context: AdminContext, request: Request, action: str, target: str,
             change: Any, detail: str | None = None) -> Any:
    """Run `change`; audit it with its outcome either way (a refusal says why)."""
    try:
        result = change()
    except Exception as exc:
        append_audit_alone(context.engine, context.audit(request, action, target,
                                                         detail=str(exc)[:1024], outcome="refused"))
        raise
    append_audit_alone(context.engine, context.audit(request, action, target, detail=detail))
    return result


def _action(action: Action, generation_id: int | None = None, *,
            manual: bool = False) -> CaActionOut:
    event, kind, reason = event_labels(action, manual=manual)
    match action:
        case Activate(generation_id=gid, retires=retires):
            return CaActionOut(action=event, kind=kind, generation_id=gid, retires=retires,
                               reason=reason)
        case Withdraw(generation_id=gid) | Prune(generation_id=gid):
            return CaActionOut(action=event, kind=kind, generation_id=gid, reason=reason)
        case Prepare():
            return CaActionOut(action=event, kind=kind, generation_id=generation_id, reason=reason)
    raise AssertionError(action)  # pragma: no cover


Snapshot = tuple[list[rotation.Generation], set[int]]


def _snapshot(context: AdminContext) -> Snapshot | None:
    """The journal's generations and published roots; None for a plugged-in CA."""
    return context.rotator.journal.snapshot() if context.rotator is not None else None


def _rotation(context: AdminContext, journal: Snapshot | None) -> RotationOut:
    policy = context.rotation_policy
    if context.rotator is None or policy is None or journal is None:
        return RotationOut(automatic=False, prepare_at=None, activate_at=None,
                           publish_lead_seconds=None, skew_seconds=None, next_check=None,
                           last_error=None, note=_PLUGGED)
    return RotationOut(
        automatic=True, prepare_at=policy.prepare_at, activate_at=policy.activate_at,
        publish_lead_seconds=int(policy.publish_lead.total_seconds()),
        skew_seconds=int(policy.skew.total_seconds()),
        next_check=rotation.next_check(policy, journal[0], context.clock.now()),
        last_error=context.rotator.last_error,
        note="meshca prepares each generation's successor at prepare_at of its life and "
             "activates it at activate_at; retired roots leave the bundle after their last "
             "certificate expires (+ skew)")


def _generations(context: AdminContext, journal: Snapshot | None = None) -> list[CaGenerationOut]:
    """As the journal has them now (this process may reload a moment later)."""
    rows = context.ca.all()
    journal = journal or _snapshot(context)
    if journal is not None:
        generations, published = journal
        chosen = rotation.signing_generation(generations)
        signing = chosen.id if chosen else None
        in_bundle = published
    else:
        authority = context.authority()
        signing = authority.generation_id if authority else None
        in_bundle = set()
    return [
        CaGenerationOut(id=g.id, kind=g.kind, parent_id=g.parent_id, subject=g.subject,
                        serial=g.serial, key_type=g.key_type, key_location=g.key_location,
                        not_before=g.not_before, not_after=g.not_after, state=g.state,
                        signing=g.id == signing, in_bundle=g.id in in_bundle)
        for g in rows
    ]
