"""Authorization policies: try them (`:evaluate`), decide with the stored set (`:check`), and
manage the stored set (versioned, audited). Bad policies or requests answer 422 with the field
path of every problem, in the same problem shape as schema errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from meshca.authz import (
    Invalid,
    MeshConfig,
    PolicySet,
    evaluate,
    parse_mesh,
    parse_policies,
    parse_policy,
    parse_request,
)
from meshca.infra.db.inventory import NotFound
from meshca.infra.db.policies import StoredRow
from meshca.service.policy_store import PolicyStore
from meshca.service.ports import AuditEntry
from meshca.transport.rest.context import Context
from meshca.transport.rest.problems import problem, problem_responses

router = APIRouter(tags=["authz"])
_Namespace = Annotated[str, Path(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
_Name = Annotated[str, Path(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
_Explain = Annotated[bool, Query(description="explain every policy considered")]
_JSON = dict[str, Any]


_NOT_JSON = {400: "the body is not JSON"}


class StoredPolicies(Protocol):
    def all(self) -> tuple[int, list[StoredRow]]: ...
    def put(self, namespace: str, name: str, document: dict[str, Any], audit: AuditEntry,
            ) -> tuple[StoredRow, bool]: ...
    def delete(self, namespace: str, name: str, audit: AuditEntry) -> int: ...


@dataclass(frozen=True, slots=True)
class AuthzContext:
    store: PolicyStore
    stored: StoredPolicies
    mesh: MeshConfig

    def reload_stored(self) -> None:
        _, rows = self.stored.all()
        self.store.replace("api", parse_policies([r.document for r in rows]))


def _authz(request: Request) -> AuthzContext:
    context = request.app.state.authz
    assert isinstance(context, AuthzContext)
    return context


def _invalid(request: Request, exc: Invalid, prefix: str) -> JSONResponse:
    errors = [{"field": e.field, "message": e.message} for e in exc.prefixed(prefix).errors]
    names = ", ".join(e["field"] for e in errors)
    return problem(422, f"invalid value for {names}", request, errors=errors)


@router.post("/v1/authz:evaluate", responses=problem_responses(400, 422, meanings=_NOT_JSON))
def evaluate_policies(request: Request, body: Annotated[_JSON, Body()], explain: _Explain = True,
                      ) -> Any:
    """Decide a request against the policies in the body, not the stored set: try policies
    before applying them. Body: `{"policies": [...], "request": {...}, "mesh"?: {...}}`."""
    context = _authz(request)
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
def check(request: Request, body: Annotated[_JSON, Body()], explain: _Explain = True) -> Any:
    """Decide a request (the body) against the stored policy set, as ext_authz does."""
    context = _authz(request)
    try:
        parsed, override = parse_request(body)
    except Invalid as exc:
        return _invalid(request, exc, "body")
    return context.store.check(parsed, override, explain).to_json()


def _out(context: AuthzContext, key: str, document: Any, version: int | None = None) -> _JSON:
    namespace, _, name = key.partition("/")
    return {"namespace": namespace, "name": name, "source": context.store.source_of(key),
            "set_version": version if version is not None else context.store.current.version,
            "document": document}


@router.get("/v1/authz/policies")
def list_policies(request: Request) -> Any:
    """Every policy in force (stored through this API, from --policy-dir, from Kubernetes)."""
    context = _authz(request)
    current = context.store.current
    return {"version": current.version,
            "policies": [_out(context, p.key, p.document, current.version) for p in current.policies]}


@router.get("/v1/authz/policies/{namespace}/{name}", responses=problem_responses(404, 422))
def get_policy(request: Request, namespace: _Namespace, name: _Name) -> Any:
    context = _authz(request)
    current = context.store.current
    found = next((p for p in current.policies if p.key == f"{namespace}/{name}"), None)
    if found is None:
        raise NotFound(f"authorization policy {namespace}/{name}")
    return _out(context, found.key, found.document, current.version)


@router.put("/v1/authz/policies/{namespace}/{name}",
            responses=problem_responses(400, 422, meanings=_NOT_JSON))
def put_policy(request: Request, response: Response, admin: Context, namespace: _Namespace,
               name: _Name, body: Annotated[_JSON, Body()]) -> Any:
    """Create or replace a stored policy; `metadata` may omit namespace and name."""
    context = _authz(request)
    meta = body.get("metadata")
    document = {**body, "metadata": {**(meta if isinstance(meta, dict) else {}),
                                     "namespace": namespace, "name": name}}
    mismatched = [{"field": f"body.metadata.{key}", "message": f"must be {want!r}, as in the path"}
                  for key, want in (("namespace", namespace), ("name", name))
                  if isinstance(meta, dict) and meta.get(key, want) != want]
    if mismatched:
        return problem(422, "metadata disagrees with the path", request, errors=mismatched)
    try:
        parse_policy(document)
    except Invalid as exc:
        return _invalid(request, exc, "body")
    row, created = context.stored.put(namespace, name, document,
                                      admin.audit(request, "authz.policy.put", f"{namespace}/{name}"))
    context.reload_stored()
    response.status_code = 201 if created else 200
    return {**_out(context, f"{namespace}/{name}", document), "version": row.version}


@router.delete("/v1/authz/policies/{namespace}/{name}", responses=problem_responses(404, 422))
def delete_policy(request: Request, admin: Context, namespace: _Namespace, name: _Name) -> Any:
    context = _authz(request)
    version = context.stored.delete(namespace, name, admin.audit(
        request, "authz.policy.delete", f"{namespace}/{name}"))
    context.reload_stored()
    return {"status": "deleted", "version": version}
