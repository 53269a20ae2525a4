"""One table per transport from meshca's error tree (meshca/errors.py): an error of every kind,
and one that no table names, through each of them."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import grpc
import pytest
from fastapi import FastAPI

from meshca import errors
from meshca.authz.errors import FieldError, Invalid
from meshca.core.authority import SigningFailed
from meshca.core.remote_signing import SignerUnavailable
from meshca.infra.db.admin_tokens import TokenNameTaken, TokenNotFound
from meshca.infra.keyfiles import KeyFileError
from meshca.infra.vault.errors import VaultBadResponse
from meshca.service.ports import KubeApiError
from meshca.transport.ext_authz import reasons
from meshca.transport.ext_authz.server import AuthorizationServicer
from meshca.transport.grpc.status import public_message, status_for
from meshca.transport.rest import problems
from meshca.transport.rest.problems import BadRequest
from tests.fakes.authz_metrics import FakeAuthzMetrics


class Unnamed(Exception):
    """No table names it: a bug in meshca."""


S = grpc.StatusCode
# (error, gRPC code, HTTP status, ext_authz reason)
CASES: list[tuple[Exception, grpc.StatusCode, int, str]] = [
    (errors.AuthenticationError("token expired", reason="expired"), S.UNAUTHENTICATED, 401,
     reasons.INTERNAL),
    (errors.PermissionDenied("identity blocked"), S.PERMISSION_DENIED, 403, reasons.INTERNAL),
    (errors.InvalidRequest("CSR signature does not verify"), S.INVALID_ARGUMENT, 422,
     reasons.REQUEST_UNUSABLE),
    (Invalid([FieldError("spec.action", "must be ALLOW")]), S.INVALID_ARGUMENT, 422,
     reasons.REQUEST_UNUSABLE),
    (BadRequest("cursor was not issued by this API"), S.INVALID_ARGUMENT, 400,
     reasons.REQUEST_UNUSABLE),
    (errors.NotFound("certificate 3ec3"), S.NOT_FOUND, 404, reasons.INTERNAL),
    (TokenNotFound("ci"), S.NOT_FOUND, 404, reasons.INTERNAL),
    (errors.Conflict("a root is already prepared"), S.FAILED_PRECONDITION, 409, reasons.INTERNAL),
    (TokenNameTaken("ci"), S.FAILED_PRECONDITION, 409, reasons.INTERNAL),
    (errors.LostLease("ca-rotator"), S.FAILED_PRECONDITION, 409, reasons.INTERNAL),
    (errors.RateLimited("over 20/s", retry_after=1.5, limit="identity"), S.RESOURCE_EXHAUSTED, 429,
     reasons.INTERNAL),
    (errors.CaUnavailable("no signer"), S.UNAVAILABLE, 503, reasons.INTERNAL),
    (errors.StoreUnavailable("database gone"), S.UNAVAILABLE, 503, reasons.INTERNAL),
    (SignerUnavailable("Vault sealed"), S.UNAVAILABLE, 503, reasons.INTERNAL),
    (VaultBadResponse("HTTP 502"), S.UNAVAILABLE, 503, reasons.INTERNAL),
    (KubeApiError("API server down"), S.UNAVAILABLE, 503, reasons.INTERNAL),
    (KeyFileError("KEK file unreadable"), S.UNAVAILABLE, 503, reasons.INTERNAL),
    (SigningFailed("leaf signature does not verify"), S.INTERNAL, 500, reasons.INTERNAL),
    (Unnamed("dict changed size during iteration"), S.INTERNAL, 500, reasons.INTERNAL),
]
IDS = [type(case[0]).__name__ for case in CASES]


def test_every_error_class_meshca_defines_is_in_the_tree() -> None:
    for error, *_ in CASES[:-1]:
        assert isinstance(error, errors.MeshcaError), type(error)


@pytest.mark.parametrize(("error", "code", "http", "deny"), CASES, ids=IDS)
def test_grpc_table(error: Exception, code: grpc.StatusCode, http: int, deny: str) -> None:
    assert status_for(error) is code
    message = public_message(error)
    if code is S.INTERNAL:
        assert str(error) not in message and "see the meshca log" in message
    else:
        assert message == str(error)


def _app_raising(error: Exception) -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.get("/fail")
    def fail() -> None:
        raise error

    return app


async def _get(app: Any) -> tuple[int, dict[bytes, bytes], dict[str, Any]]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "https", "path": "/fail", "raw_path": b"/fail", "root_path": "",
             "query_string": b"", "headers": [], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 443)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    except Exception:  # noqa: BLE001, S110 - Starlette re-raises a 500 after answering it
        pass
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), dict(start["headers"]), json.loads(body)


@pytest.mark.parametrize(("error", "code", "http", "deny"), CASES, ids=IDS)
def test_rest_table(error: Exception, code: grpc.StatusCode, http: int, deny: str,
                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        status, headers, problem = asyncio.run(_get(_app_raising(error)))
    assert status == http and problem["status"] == http
    assert headers[b"content-type"] == problems.PROBLEM_JSON.encode()
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[1] is error]
    if http == 500:
        assert str(error) not in problem["detail"]
        assert len(logged) == 1, "an error no table names is logged once, with its traceback"
    else:
        assert str(error) in problem["detail"] and not logged
    if http == 401:
        assert headers[b"www-authenticate"] == b"Bearer"
    if http in (429, 503):
        assert int(headers[b"retry-after"]) >= 1


class _Raising:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def refusal(self, principal: str | None, certificate: str) -> Any:
        raise self.error



@pytest.mark.parametrize(("error", "code", "http", "deny"), CASES, ids=IDS)
def test_ext_authz_table(error: Exception, code: grpc.StatusCode, http: int, deny: str,
                         caplog: pytest.LogCaptureFixture) -> None:
    from envoy.service.auth.v3 import external_auth_pb2

    from meshca.service.policy_store import PolicyStore

    metrics = FakeAuthzMetrics()
    servicer = AuthorizationServicer(PolicyStore(), _Raising(error), metrics=metrics)
    with caplog.at_level(logging.ERROR, logger="meshca.transport.ext_authz.server"):
        responses = [servicer.Check(external_auth_pb2.CheckRequest(), None) for _ in range(3)]
    for response in responses:
        assert response.status.code == 7  # PERMISSION_DENIED: every error is a DENY
        assert json.loads(response.denied_response.body)["reason"] == deny
    assert metrics.decisions == [("DENY", deny)] * 3
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == (1 if deny == reasons.INTERNAL else 0), "logged once per failure site"
