"""Test helper: the engine's request shape → the CheckRequest Envoy would send for it."""

from __future__ import annotations

from typing import Any

from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.protobuf import struct_pb2

from meshca.transport.ext_authz.attributes import EXTERNAL_ADDRESS, JWT_FILTER


def check_request(request: dict[str, Any]) -> Any:
    attrs = attribute_context_pb2.AttributeContext()
    source, dest = request["source"], request["destination"]
    if source.get("principal"):
        attrs.source.principal = source["principal"]
    attrs.source.address.socket_address.address = source["ip"]
    attrs.source.address.socket_address.port_value = 40000
    attrs.destination.address.socket_address.address = dest.get("ip", "")
    attrs.destination.address.socket_address.port_value = dest["port"]
    attrs.context_extensions["namespace"] = dest["namespace"]
    attrs.context_extensions["labels"] = ",".join(f"{k}={v}" for k, v in dest["labels"].items())
    if "http" in request:
        http = request["http"]
        attrs.request.http.method = http["method"]
        attrs.request.http.path = http["path"]
        attrs.request.http.host = http["host"]
        attrs.request.http.headers.update(http.get("headers", {}))
        if source.get("remote_ip"):
            attrs.request.http.headers[EXTERNAL_ADDRESS] = source["remote_ip"]
    if request.get("sni"):
        attrs.tls_session.sni = request["sni"]
    if "auth" in request:
        auth = request["auth"]
        issuer, _, subject = (auth.get("principal") or "/").rpartition("/")
        payload = {**auth.get("claims", {}), "iss": issuer, "sub": subject,
                   "aud": auth.get("audiences", [])}
        if auth.get("presenter"):
            payload["azp"] = auth["presenter"]
        metadata = struct_pb2.Struct()
        metadata.update({"payload": payload})
        attrs.metadata_context.filter_metadata[JWT_FILTER].CopyFrom(metadata)
    return external_auth_pb2.CheckRequest(attributes=attrs)
