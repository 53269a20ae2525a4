"""Envoy's CheckRequest attributes → the engine's request shape.

Where Envoy puts what: `source.principal` is the peer certificate's URI SAN; addresses are
socket addresses; `request.http` carries method, path (with query), host and lower-cased
headers; `tls_session.sni`. Envoy cannot know the protected workload's Kubernetes namespace and
labels: they come from the filter's `context_extensions` (`namespace`, and `labels` as
`k=v,k=v`) or, failing that, the namespace of `destination.principal` and `destination.labels`.
A verified JWT is read from the jwt_authn filter's dynamic metadata (`iss`, `sub`, `aud`, `azp`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from google.protobuf.json_format import MessageToDict

from meshca.authz.matchers import IpAddress
from meshca.authz.request import SPIFFE, AuthzRequest, HttpAttributes, identity_parts

JWT_FILTER = "envoy.filters.http.jwt_authn"
EXTERNAL_ADDRESS = "x-envoy-external-address"  # the original client, as Envoy saw it


def check_request_to_json(check: Any) -> dict[str, Any]:
    """A CheckRequest (protobuf) as the JSON request shape `parse_request` reads."""
    attrs = check.attributes
    http = attrs.request.http
    extensions: Mapping[str, str] = attrs.context_extensions
    source_ip = attrs.source.address.socket_address.address
    request: dict[str, Any] = {
        "protocol": "HTTP" if http.method else "TCP",
        "source": {"principal": attrs.source.principal or None, "ip": source_ip},
        "destination": {
            "namespace": extensions.get("namespace") or _namespace_of(attrs.destination.principal),
            "labels": _labels(extensions.get("labels")) or dict(attrs.destination.labels),
            "port": attrs.destination.address.socket_address.port_value,
        },
    }
    if attrs.destination.address.socket_address.address:
        request["destination"]["ip"] = attrs.destination.address.socket_address.address
    if http.method:
        headers = {k.lower(): v for k, v in http.headers.items()}
        request["http"] = {"method": http.method, "path": http.path,
                           "host": http.host or headers.get(":authority", ""), "headers": headers}
        if remote := headers.get(EXTERNAL_ADDRESS):
            request["source"]["remote_ip"] = remote
    if attrs.tls_session.sni:
        request["sni"] = attrs.tls_session.sni
    if JWT_FILTER in attrs.metadata_context.filter_metadata:
        request["auth"] = _jwt(MessageToDict(attrs.metadata_context.filter_metadata[JWT_FILTER]))
    return request


def _namespace_of(principal: str) -> str | None:
    if not principal.startswith(SPIFFE):
        return None
    return identity_parts(principal[len(SPIFFE):])[0]


def _labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    pairs = (item.partition("=") for item in text.split(",") if item)
    return {k.strip(): v.strip() for k, _, v in pairs}


def _jwt(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """jwt_authn stores the payload under the provider's `payload_in_metadata` name."""
    payload = next((v for v in metadata.values() if isinstance(v, Mapping) and "iss" in v), {})
    audiences = payload.get("aud", [])
    return {"principal": f"{payload.get('iss')}/{payload.get('sub')}" if payload else None,
            "audiences": [audiences] if isinstance(audiences, str) else list(audiences),
            "presenter": payload.get("azp"), "claims": dict(payload)}


_IP_CACHE_SIZE = 65536
_ips: dict[str, IpAddress] = {}


def _ip(text: str) -> IpAddress | None:
    """`ipaddress.ip_address`, remembered (addresses repeat: they are the mesh's pods)."""
    address = _ips.get(text)
    if address is None:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return None
        if len(_ips) >= _IP_CACHE_SIZE:
            _ips.clear()
        _ips[text] = address
    return address


def check_request_to_authz(check: Any) -> AuthzRequest | None:
    """The engine's request straight from the CheckRequest, for the plain shapes: the same
    request `parse_request(check_request_to_json(check))` gives. None when anything would need
    that path's judgement (a JWT, a missing or odd field, an address that does not parse):
    the caller then takes it, errors and all."""
    attrs = check.attributes
    source, destination = attrs.source, attrs.destination
    principal = source.principal
    namespace = account = bare = None
    if principal:
        if not principal.startswith(SPIFFE) or len(principal) == len(SPIFFE):
            return None
        bare = principal[len(SPIFFE):]
        namespace, account = identity_parts(bare)
    if JWT_FILTER in attrs.metadata_context.filter_metadata:
        return None
    source_ip = _ip(source.address.socket_address.address)
    extensions = attrs.context_extensions
    destination_namespace = extensions.get("namespace") or _namespace_of(destination.principal)
    port = destination.address.socket_address.port_value
    if source_ip is None or destination_namespace is None or port > 65535:
        return None
    labels = _labels(extensions.get("labels")) or dict(destination.labels)
    destination_ip = None
    if text := destination.address.socket_address.address:
        if (destination_ip := _ip(text)) is None:
            return None
    http = attrs.request.http
    remote_ip = None
    http_attributes = None
    if method := http.method:
        headers = {k.lower(): v for k, v in http.headers.items()}
        if remote := headers.get(EXTERNAL_ADDRESS):
            if (remote_ip := _ip(remote)) is None:
                return None
        http_attributes = HttpAttributes(method, http.path.split("?", 1)[0].split("#", 1)[0],
                                         http.host or headers.get(":authority", ""), headers)
    return AuthzRequest(
        protocol="HTTP" if method else "TCP", source_ip=source_ip,
        destination_namespace=destination_namespace, destination_port=port,
        destination_labels=labels, source_principal=bare, remote_ip=remote_ip,
        destination_ip=destination_ip, http=http_attributes, auth=None,
        sni=attrs.tls_session.sni or None, source_namespace=namespace,
        source_service_account=account)
