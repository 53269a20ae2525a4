"""ext_authz `Check` on random CheckRequests (issue 17, item 1): requests built from the authz
strategies' request shape (tests/unit/authz/test_fast_path.py), then broken: attributes
missing, odd principals (not SPIFFE, huge, another trust domain), huge headers and paths, odd
context extensions, odd JWT metadata (nested past protobuf's depth limit too).

The oracle: an answer is a decision (status 0, or 7 with an HTTP 403 denied_response); a gRPC
error is a documented one (INVALID_ARGUMENT for a request that does not decode,
RESOURCE_EXHAUSTED past the message limit), never INTERNAL or UNKNOWN."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import struct_pb2
from hypothesis import strategies as st

from meshca.transport.ext_authz.attributes import JWT_FILTER
from tests.fuzz.campaign import Tally, run_strategy
from tests.integration.authz_envoy import check_request
from tests.support import AdminClient, MeshcaProcess, admin_token
from tests.unit.authz.test_fast_path import requests

SERVER_FLAGS: tuple[str, ...] = ()
DOCUMENTED_ERRORS = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}
WINDOW = 8
PRINCIPALS = ["", "spiffe://cluster.local/ns/web/sa/a", "spiffe://other.domain/ns/x/sa/y", "spiffe://",
              "not-a-uri", "spiffe://cluster.local/ns/web/sa/a/../b", "spiffe://cluster.local/" + "a" * 5000,
              "spiffe://CLUSTER.LOCAL/ns/web/sa/a", "spiffe://cluster.local/ns/web/sa/a\x00",
              "\u00e9\u00e9", "https://cluster.local/ns/web/sa/a"]
# Policies the server holds while the campaign runs, so that decisions differ by request.
POLICIES: list[dict[str, Any]] = [
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "no-admin", "namespace": "shop"},
     "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/a/*"]}}]}]}},
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "web-only", "namespace": "web"},
     "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [
         "cluster.local/ns/web/*"]}}], "when": [{"key": "request.headers[x-t]", "values": ["t*"]}]}]}},
]


@dataclass(frozen=True, slots=True)
class CheckInput:
    request: Any  # external_auth_pb2.CheckRequest
    what: str

    def __str__(self) -> str:
        return f"{self.what}: {str(self.request)[:500]}"


def _deep_struct(depth: int) -> struct_pb2.Struct:
    nested: dict[str, Any] = {"leaf": 1.0}
    for _ in range(depth):
        nested = {"n": nested}
    struct = struct_pb2.Struct()
    struct.update(nested)
    return struct


MUTATIONS = ["none", "none", "no-source", "no-destination", "no-http", "principal", "huge-header",
             "many-headers", "huge-path", "extensions", "labels", "jwt-odd", "jwt-deep", "port",
             "address", "sni", "empty"]


_PORTS = st.sampled_from([0, 1, 65535, 2**32 - 1])
_DEPTHS = st.integers(5, 80)


@st.composite
def check_inputs(draw: st.DrawFn) -> CheckInput:
    check = check_request(draw(requests()))
    attrs = check.attributes
    applied = draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3))
    for mutation in applied:
        if mutation == "no-source":
            attrs.ClearField("source")
        elif mutation == "no-destination":
            attrs.ClearField("destination")
            if draw(st.booleans()):
                attrs.ClearField("context_extensions")
        elif mutation == "no-http":
            attrs.ClearField("request")
        elif mutation == "principal":
            attrs.source.principal = draw(st.sampled_from(PRINCIPALS) | st.text(max_size=40))
        elif mutation == "huge-header":
            attrs.request.http.headers["x-t"] = "t" * draw(st.sampled_from([10_000, 200_000]))
        elif mutation == "many-headers":
            for index in range(draw(st.sampled_from([100, 2000]))):
                attrs.request.http.headers[f"x-h{index}"] = "v"
        elif mutation == "huge-path":
            attrs.request.http.path = "/" + "a/" * draw(st.sampled_from([1000, 50_000]))
        elif mutation == "extensions":
            for key, value in draw(st.dictionaries(st.sampled_from(["namespace", "labels", "x", ""]),
                                                   st.text(max_size=30), max_size=3)).items():
                attrs.context_extensions[key] = value
        elif mutation == "labels":
            attrs.context_extensions["labels"] = draw(st.sampled_from(
                ["", "=", "a", "a=b=c", ",,", "app=cart,app=db", "x" * 5000 + "=y"]))
        elif mutation == "jwt-odd":
            payload = struct_pb2.Struct()
            payload.update({"payload": draw(st.sampled_from([
                {}, {"iss": 3}, {"sub": None}, {"aud": {"x": 1}}, {"iss": "a", "sub": "b", "groups": [[1]]},
                "string"]))} if draw(st.booleans()) else {"x": 1})
            attrs.metadata_context.filter_metadata[JWT_FILTER].CopyFrom(payload)
        elif mutation == "jwt-deep":
            attrs.metadata_context.filter_metadata[JWT_FILTER].CopyFrom(_deep_struct(draw(_DEPTHS)))
        elif mutation == "port":
            attrs.destination.address.socket_address.port_value = draw(_PORTS)
        elif mutation == "address":
            attrs.source.address.socket_address.address = draw(st.sampled_from(
                ["", "::1", "not-an-ip", "999.1.1.1", "10.0.0.1%eth0", "a" * 300]))
        elif mutation == "sni":
            attrs.tls_session.sni = draw(st.sampled_from(["", "x" * 1000, "\u00e9"]))
        elif mutation == "empty":
            check = external_auth_pb2.CheckRequest()
            attrs = check.attributes
    return CheckInput(check, ",".join(applied))


def _judge(given: CheckInput, future: Any, tally: Tally) -> None:
    try:
        response = future.result()
    except grpc.RpcError as exc:
        code = exc.code().name
        tally.record(code, None if code in DOCUMENTED_ERRORS else f"undocumented {code}: {exc.details()}",
                     given)
        return
    if response.status.code == 0:
        tally.record("ALLOW")
    elif response.status.code == 7 and response.denied_response.status.code == 403:
        try:
            reason = json.loads(response.denied_response.body).get("reason", "?")
        except ValueError:
            reason = "?"
        tally.record(f"DENY ({reason})")
    else:
        tally.record(f"status {response.status.code}", f"not a decision: {response.status}", given)


def install_policies(server: MeshcaProcess) -> None:
    client = AdminClient(server)
    for policy in POLICIES:
        meta = policy["metadata"]
        answer = client.request("PUT", f"/v1/authz/policies/{meta['namespace']}/{meta['name']}",
                                token=admin_token(server), json_body=policy)
        assert answer.status in (200, 201), answer.body


def fuzz_ext_authz(server: MeshcaProcess, examples: int, *, seed_value: int = 17,
                   seconds: float | None = None, tally: Tally | None = None,
                   install: bool = True) -> Tally:
    """`install` False: the campaign's policies are already there (another job put them)."""
    tally = tally or Tally("ext_authz Check (gRPC)")
    if install:
        install_policies(server)
    addr = json.loads((server.data_dir / "endpoints.json").read_text())["ext_authz"]
    in_flight: deque[tuple[CheckInput, Any]] = deque()
    with grpc.insecure_channel(addr, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)

        def each(given: CheckInput) -> None:
            in_flight.append((given, stub.Check.future(given.request, timeout=30)))
            while len(in_flight) >= WINDOW:
                _judge(*in_flight.popleft(), tally)

        run_strategy(check_inputs(), examples, each, seed_value=seed_value, seconds=seconds)
        while in_flight:
            _judge(*in_flight.popleft(), tally)
    return tally.done()
