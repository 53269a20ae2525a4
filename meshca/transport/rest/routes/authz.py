"""Authorization policies: try them (`:evaluate`), decide with the stored set (`:check`), and
manage the stored set (versioned, audited). Bad policies or requests answer 422 with the field
path of every problem, in the same problem shape as schema errors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response
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
from meshca.transport.rest.problems import problem, problem_responses

router = APIRouter(tags=["authz"])
_Namespace = Annotated[str, Path(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
_Name = Annotated[str, Path(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
_Explain = Annotated[bool, Query(description="explain every policy considered")]
_JSON = dict[str, Any]


_NOT_JSON = {400: "the body is not JSON"}


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
            responses=problem_responses(400, 422, meanings=_NOT_JSON))
def put_policy(request: Request, response: Response, context: Authz, actor: Actor,
               namespace: _Namespace, name: _Name, body: Annotated[_JSON, Body()]) -> Any:
    """Create or replace a stored policy; `metadata` may omit namespace and name."""
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


@router.delete("/v1/authz/policies/{namespace}/{name}", responses=problem_responses(404, 422))
def delete_policy(context: Authz, actor: Actor, namespace: _Namespace, name: _Name) -> Any:
    version = context.delete(namespace, name, actor)
    return {"status": "deleted", "version": version}
