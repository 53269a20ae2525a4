"""Authorization policies: try them (`:evaluate`), decide with the stored set (`:check`), and
manage the stored set (versioned, audited). Bad policies or requests answer 422 with the field
path of every problem, in the same problem shape as schema errors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from meshca.authz import (
    Invalid,
    PolicySet,
    evaluate,
    parse_mesh,
    parse_policies,
    parse_request,
)
from meshca.errors import NotFound
from meshca.service.admin.policies import PolicyAdmin
from meshca.transport.rest.dependencies import Actor, Authz
from meshca.transport.rest.policy_bodies import openapi_body, policy_documents
from meshca.transport.rest.problems import BadRequest, problem, problem_responses

router = APIRouter(tags=["authz"])
_Namespace = Annotated[str, Path(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
_Name = Annotated[str, Path(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
_Explain = Annotated[bool, Query(description="explain every policy considered")]
_JSON = dict[str, Any]


_NOT_JSON = {400: "the body is not JSON"}
_NOT_PARSED = {400: "the body is not JSON or YAML (as its Content-Type says), or holds no document"}
_Documents = Annotated[list[Any], Depends(policy_documents)]


AuthzContext = PolicyAdmin  # its name before the service layer


def _invalid(request: Request, exc: Invalid, prefix: str) -> JSONResponse:
    errors = [{"field": e.field, "message": e.message} for e in exc.prefixed(prefix).errors]
    names = ", ".join(e["field"] for e in errors)
    return problem(422, f"invalid value for {names}", request, errors=errors)


@router.post("/v1/authz:evaluate", responses=problem_responses(400, 422, meanings=_NOT_JSON))
def evaluate_policies(request: Request, context: Authz, body: Annotated[_JSON, Body()],
                      explain: _Explain = True) -> Any:
    """Decide a request against the policies in the body, not the stored set: try policies
    before applying them. Body: `{"policies": [...], "request": {...}, "mesh"?: {...}}`."""
    unknown = sorted(set(body) - {"policies", "request", "mesh"})
    if unknown or not isinstance(body.get("policies"), list):
        return problem(422, "the body needs `policies` (a list) and `request`", request, errors=[
            *({"field": f"body.{k}", "message": "unknown field"} for k in unknown),
            *([] if isinstance(body.get("policies"), list)
              else [{"field": "body.policies", "message": "must be a list"}])])
    try:
        policies = parse_policies(body["policies"], prefix="")
    except Invalid as exc:
        return _invalid(request, exc, "body.policies")
    try:
        parsed, override = parse_request(body.get("request"))
        mesh = parse_mesh(body["mesh"], base=context.mesh) if isinstance(body.get("mesh"), dict) \
            else override or context.mesh
    except Invalid as exc:
        return _invalid(request, exc, "body.request")
    return evaluate(PolicySet.build(policies, mesh), parsed, with_explain=explain).to_json()


@router.post("/v1/authz:check", responses=problem_responses(400, 422, meanings=_NOT_JSON))
def check(request: Request, context: Authz, body: Annotated[_JSON, Body()],
          explain: _Explain = True) -> Any:
    """Decide a request (the body) against the stored policy set, as ext_authz does."""
    try:
        parsed, override = parse_request(body)
    except Invalid as exc:
        return _invalid(request, exc, "body")
    return context.store.check(parsed, override, explain).to_json()


def _out(context: PolicyAdmin, key: str, document: Any, version: int | None = None) -> _JSON:
    namespace, _, name = key.partition("/")
    return {"namespace": namespace, "name": name, "source": context.store.source_of(key),
            "set_version": version if version is not None else context.store.current.version,
            "document": document}


@router.get("/v1/authz/policies")
def list_policies(context: Authz) -> Any:
    """Every policy in force (stored through this API, from --policy-dir, from Kubernetes)."""
    current = context.store.current
    return {"version": current.version,
            "policies": [_out(context, p.key, p.document, current.version) for p in current.policies]}


@router.get("/v1/authz/policies/{namespace}/{name}", responses=problem_responses(404, 422))
def get_policy(context: Authz, namespace: _Namespace, name: _Name) -> Any:
    current = context.store.current
    found = next((p for p in current.policies if p.key == f"{namespace}/{name}"), None)
    if found is None:
        raise NotFound(f"authorization policy {namespace}/{name}")
    return _out(context, found.key, found.document, current.version)


@router.put("/v1/authz/policies/{namespace}/{name}",
            responses=problem_responses(400, 415, 422, meanings=_NOT_PARSED),
            openapi_extra=openapi_body("one AuthorizationPolicy, as JSON or YAML"))
def put_policy(request: Request, response: Response, context: Authz, actor: Actor,
               namespace: _Namespace, name: _Name, documents: _Documents) -> Any:
    """Create or replace a stored policy (JSON, or YAML as `application/yaml`); `metadata`
    may omit namespace and name."""
    if len(documents) != 1:
        raise BadRequest(f"the body holds {len(documents)} documents; PUT stores one (POST "
                         f"/v1/authz/policies applies several)")
    body = documents[0]
    if not isinstance(body, dict):
        return problem(422, "the body must be an object (an AuthorizationPolicy)", request,
                       errors=[{"field": "body", "message": "must be an object"}])
    meta = body.get("metadata")
    document = {**body, "metadata": {**(meta if isinstance(meta, dict) else {}),
                                     "namespace": namespace, "name": name}}
    mismatched = [{"field": f"body.metadata.{key}", "message": f"must be {want!r}, as in the path"}
                  for key, want in (("namespace", namespace), ("name", name))
                  if isinstance(meta, dict) and meta.get(key, want) != want]
    if mismatched:
        return problem(422, "metadata disagrees with the path", request, errors=mismatched)
    try:
        row, created = context.put(namespace, name, document, actor)
    except Invalid as exc:
        return _invalid(request, exc, "body")
    response.status_code = 201 if created else 200
    return {**_out(context, f"{namespace}/{name}", document), "version": row.version}


@router.post("/v1/authz/policies", responses=problem_responses(400, 415, 422, meanings=_NOT_PARSED),
             openapi_extra=openapi_body(
                 "AuthorizationPolicies, each naming itself in `metadata`: a JSON object or array, "
                 "or YAML documents separated by `---` (as `kubectl apply -f` takes them)"))
def apply_policies(request: Request, context: Authz, actor: Actor, documents: _Documents,
                   namespace: Annotated[str | None, Query(
                       pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
                       description="for documents whose metadata names no namespace")] = None,
                   ) -> Any:
    """Create or replace every policy in the body. All are checked first: one invalid
    document stores none (422 names each problem under `body[i]`)."""
    if not all(isinstance(d, dict) for d in documents):
        return problem(422, "every document must be an object (an AuthorizationPolicy)", request,
                       errors=[{"field": f"body[{i}]", "message": "must be an object"}
                               for i, d in enumerate(documents) if not isinstance(d, dict)])
    if namespace is not None:
        documents = [_with_namespace(d, namespace) for d in documents]
    try:
        applied = context.apply(documents, actor)
    except Invalid as exc:
        return _invalid(request, exc, "body")
    version = context.store.current.version
    return {"version": version, "applied": [
        {"namespace": row.namespace, "name": row.name, "created": created, "version": row.version}
        for row, created in applied]}


def _with_namespace(document: _JSON, namespace: str) -> _JSON:
    meta = document.get("metadata")
    if isinstance(meta, dict) and "namespace" not in meta:
        return {**document, "metadata": {**meta, "namespace": namespace}}
    return document


@router.delete("/v1/authz/policies/{namespace}/{name}", responses=problem_responses(404, 422))
def delete_policy(context: Authz, actor: Actor, namespace: _Namespace, name: _Name) -> Any:
    version = context.delete(namespace, name, actor)
    return {"status": "deleted", "version": version}
