"""The state-of-the-world rules of one SDS stream, without a network: which request is
answered, and what a change pushes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from meshca.agent.sds_secrets import SECRET_TYPE
from meshca.agent.xds_session import RequestKind, SotwSession


def secret(name: str, content: bytes) -> Any:
    s = secret_pb2.Secret(name=name)
    s.generic_secret.secret.inline_bytes = content
    return s


V1 = {"default": secret("default", b"leaf-1"), "ROOTCA": secret("ROOTCA", b"roots-1")}


def request(names: Sequence[str], after: Any | None = None, *, nonce: str | None = None,
            error: str | None = None, type_url: str = SECRET_TYPE) -> Any:
    message = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names),
        version_info=after.version_info if after is not None else "",
        response_nonce=nonce if nonce is not None else (after.nonce if after else ""))
    if error is not None:
        message.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
    return message


def names(response: Any) -> list[str]:
    found = []
    for resource in response.resources:
        s = secret_pb2.Secret()
        assert resource.Unpack(s)
        found.append(s.name)
    return sorted(found)


def sent(response: Any | None) -> Any:
    assert response is not None, "nothing was sent"
    return response


def started(wanted: Sequence[str] = ("default", "ROOTCA")) -> tuple[SotwSession, Any]:
    session = SotwSession(SECRET_TYPE, "pid 1")
    assert session.update(V1) is None  # nothing asked yet
    kind, response = session.request(request(wanted))
    assert kind is RequestKind.INITIAL and response is not None
    return session, response


def test_the_first_request_is_answered_even_before_the_resources_are_known() -> None:
    session = SotwSession(SECRET_TYPE)
    assert session.request(request(["default"])) == (RequestKind.INITIAL, None)
    response = sent(session.update(V1))
    assert names(response) == ["default"] and response.type_url == SECRET_TYPE
    assert session.version == response.version_info


def test_a_reconnecting_client_is_answered_whatever_it_last_acked() -> None:
    _, previous = started()
    session = SotwSession(SECRET_TYPE)
    session.update(V1)
    kind, response = session.request(request(["default", "ROOTCA"], previous))
    assert kind is RequestKind.INITIAL and names(response) == ["ROOTCA", "default"]


def test_an_ack_gets_nothing_and_a_change_pushes_only_what_changed() -> None:
    session, first = started()
    assert session.request(request(["default", "ROOTCA"], first)) == (RequestKind.ACK, None)
    assert session.update(dict(V1)) is None  # the same content again: nothing to push
    renewed = sent(session.update({**V1, "default": secret("default", b"leaf-2")}))
    assert names(renewed) == ["default"]
    assert renewed.version_info != first.version_info and renewed.nonce != first.nonce


def test_a_nack_is_not_answered_and_its_version_not_resent() -> None:
    session, first = started()
    session.request(request(["default", "ROOTCA"], first))
    bad = {**V1, "default": secret("default", b"leaf-2")}
    rejected = sent(session.update(bad))
    kind, response = session.request(
        request(["default", "ROOTCA"], first, nonce=rejected.nonce, error="bad key"))
    assert (kind, response) == (RequestKind.NACK, None)
    assert session.update(dict(bad)) is None
    fixed = sent(session.update({**V1, "default": secret("default", b"leaf-3")}))
    assert names(fixed) == ["default"] and fixed.nonce != rejected.nonce


def test_a_stale_nonce_is_ignored_even_when_it_changes_the_names() -> None:
    session, first = started(["default"])
    pushed = sent(session.update({**V1, "default": secret("default", b"leaf-2")}))
    assert session.request(request(["default", "ROOTCA"], first)) == (RequestKind.STALE, None)
    kind, response = session.request(request(["default", "ROOTCA"], pushed))
    assert kind is RequestKind.ACK and names(response) == ["ROOTCA", "default"]


def test_changed_names_are_answered_with_the_new_set() -> None:
    session, first = started(["default"])
    assert names(first) == ["default"]
    kind, response = session.request(request(["ROOTCA", "default"], first))
    assert kind is RequestKind.ACK and names(response) == ["ROOTCA", "default"]
    kind, response = session.request(request(["ROOTCA"], response))
    assert kind is RequestKind.ACK and names(response) == ["ROOTCA"]
    assert session.update({**V1, "default": secret("default", b"leaf-2")}) is None  # unwatched


def test_unknown_names_get_nothing_and_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    session = SotwSession(SECRET_TYPE, "pid 7")
    session.update(V1)
    with caplog.at_level(logging.WARNING, logger="meshca.agent.xds_session"):
        assert session.request(request(["nope"])) == (RequestKind.INITIAL, None)
        assert session.request(request(["nope", "other"])) == (RequestKind.INITIAL, None)
        kind, response = session.request(request(["nope", "default"]))
    assert kind is RequestKind.INITIAL
    assert names(response) == ["default"]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2 and sum("'nope'" in m for m in logged) == 1
    assert all("pid 7" in m for m in logged)


def test_another_resource_type_is_ignored() -> None:
    session, first = started()
    other = request(["x"], first, type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster")
    assert session.request(other) == (RequestKind.WRONG_TYPE, None)
    assert session.request(request(["default", "ROOTCA"], first)) == (RequestKind.ACK, None)
