"""SPIFFE federation relationships: list, read, create (POST), create or replace (PUT),
delete. Changes are audited; bad input answers 422 naming each field, a relationship that
exists (POST) or comes from --federate-with (PUT, DELETE) 409."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from meshca.core.federation import Relationship, parse_bundle, roots_from_text
from meshca.service.admin.federation import FederationAdmin, InvalidRelationship
from meshca.service.federation_ports import FederationRecord
from meshca.transport.rest.dependencies import Actor, Federation
from meshca.transport.rest.models import (
    FederatedBundleOut,
    FederationIn,
    FederationListOut,
    FederationOut,
)
from meshca.transport.rest.problems import problem, problem_responses

router = APIRouter(tags=["federation"])
_NOT_JSON = {400: "the body is not JSON"}
_TrustDomain = Annotated[str, Path(max_length=255, pattern=r"^[a-z0-9._-]+$")]


def _out(record: FederationRecord) -> FederationOut:
    r = record.relationship
    bundle = None
    if record.document is not None:
        parsed = parse_bundle(record.document, r.trust_domain)
        bundle = FederatedBundleOut(sequence=record.sequence, fetched_at=record.fetched_at,
                                    changed_at=record.changed_at,
                                    x509_roots=len(parsed.x509_roots),
                                    jwt_keys=len(parsed.jwt_keys))
    return FederationOut(trust_domain=r.trust_domain, url=r.url, profile=r.profile,
                         endpoint_spiffe_id=r.endpoint_spiffe_id, from_flags=r.from_flags,
                         bundle=bundle, last_attempt_at=record.attempted_at,
                         last_outcome=record.outcome, last_error=record.error,
                         next_fetch_at=record.next_fetch_at)


def _relationship(body: FederationIn, trust_domain: str) -> Relationship:
    errors: list[tuple[str, str]] = []
    bootstrap = None
    if body.bootstrap_bundle:
        try:
            bootstrap = roots_from_text(body.bootstrap_bundle)
        except ValueError as exc:
            errors.append(("bootstrap_bundle", str(exc)))
    if errors:
        raise InvalidRelationship(errors)
    return Relationship(trust_domain=trust_domain, url=body.url, profile=body.profile,
                        endpoint_spiffe_id=body.endpoint_spiffe_id, bootstrap_pem=bootstrap,
                        web_ca_pem=body.web_ca or None)


def _invalid(request: Request, exc: InvalidRelationship) -> JSONResponse:
    errors = [{"field": f"body.{name}", "message": message} for name, message in exc.errors]
    return problem(422, f"invalid value for {', '.join(e['field'] for e in errors)}", request,
                   errors=errors)


def _save(request: Request, response: Response, admin: FederationAdmin, actor: str,
          body: FederationIn, trust_domain: str, *, create_only: bool) -> Any:
    try:
        record, created = admin.put(_relationship(body, trust_domain), actor,
                                    create_only=create_only)
    except InvalidRelationship as exc:
        return _invalid(request, exc)
    response.status_code = 201 if created else 200
    return _out(record)


@router.get("/v1/federation", response_model=FederationListOut)
def list_federation(admin: Federation) -> FederationListOut:
    """Every trust domain this one federates with, its last good bundle and fetch status."""
    return FederationListOut(items=[_out(r) for r in admin.list()])


@router.get("/v1/federation/{trust_domain}", response_model=FederationOut,
            responses=problem_responses(404, 422))
def get_federation(admin: Federation, trust_domain: _TrustDomain) -> FederationOut:
    return _out(admin.get(trust_domain))


@router.post("/v1/federation", response_model=FederationOut, status_code=201,
             responses=problem_responses(400, 409, 422, meanings=_NOT_JSON))
def create_federation(request: Request, response: Response, admin: Federation, actor: Actor,
                      body: FederationIn) -> Any:
    """Federate with another trust domain (409 if a relationship with it exists)."""
    if not body.trust_domain:
        return problem(422, "invalid value for body.trust_domain", request,
                       errors=[{"field": "body.trust_domain", "message": "is required"}])
    return _save(request, response, admin, actor, body, body.trust_domain, create_only=True)


@router.put("/v1/federation/{trust_domain}", response_model=FederationOut,
            responses=problem_responses(400, 409, 422, meanings=_NOT_JSON))
def put_federation(request: Request, response: Response, admin: Federation, actor: Actor,
                   trust_domain: _TrustDomain, body: FederationIn) -> Any:
    """Create or replace; the last good bundle is kept and fetched again at once."""
    if body.trust_domain not in (None, trust_domain):
        return problem(422, "invalid value for body.trust_domain", request, errors=[
            {"field": "body.trust_domain", "message": f"must be {trust_domain!r}, as in the path"}])
    return _save(request, response, admin, actor, body, trust_domain, create_only=False)


@router.delete("/v1/federation/{trust_domain}", responses=problem_responses(404, 409, 422))
def delete_federation(admin: Federation, actor: Actor, trust_domain: _TrustDomain) -> Any:
    """Stop trusting the trust domain: its bundle leaves every process within the reload
    interval."""
    admin.delete(trust_domain, actor)
    return {"status": "deleted"}
