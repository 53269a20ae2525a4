"""The request to decide about, in the shape REST, the CLI, ext_authz and tests share.

    {"protocol": "HTTP"|"TCP",
     "source": {"principal": "spiffe://…"|null, "namespace"?, "ip", "remote_ip"?},
     "destination": {"namespace", "labels": {…}, "ip"?, "port"},
     "http"?: {"method", "path", "host", "headers": {name: value}},
     "auth"?: {"principal": "iss/sub", "audiences": […], "presenter", "claims": {…}},
     "sni"?: str, "mesh"?: {"rootNamespace", "trustDomain", "trustDomainAliases"}}
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshca.authz.errors import FieldError, RequestInvalid
from meshca.authz.matchers import IpAddress
from meshca.authz.model import MeshConfig

SPIFFE = "spiffe://"
_TOP = {"protocol", "source", "destination", "http", "auth", "sni", "mesh"}


@dataclass(frozen=True, slots=True)
class HttpAttributes:
    method: str
    path: str  # without the query string or fragment
    host: str
    headers: Mapping[str, str]  # lower-case names


@dataclass(frozen=True, slots=True)
class JwtAttributes:
    principal: str | None  # `iss/sub`
    audiences: tuple[str, ...] = ()
    presenter: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuthzRequest:
    protocol: str  # "HTTP" | "TCP"
    source_ip: IpAddress
    destination_namespace: str
    destination_port: int
    destination_labels: Mapping[str, str] = field(default_factory=dict)
    source_principal: str | None = None  # the SPIFFE ID without `spiffe://`, as policies write it
    remote_ip: IpAddress | None = None  # the original client (X-Forwarded-For); else source_ip
    destination_ip: IpAddress | None = None
    http: HttpAttributes | None = None
    auth: JwtAttributes | None = None
    sni: str | None = None
    # Read from the principal `<td>/ns/<ns>/sa/<sa>`, as Istio does: the certificate says it.
    source_namespace: str | None = None
    source_service_account: str | None = None

    @property
    def is_http(self) -> bool:
        return self.protocol == "HTTP"

    @property
    def original_ip(self) -> IpAddress:
        return self.remote_ip or self.source_ip


def identity_parts(principal: str) -> tuple[str | None, str | None]:
    """(namespace, service account) of `td/ns/<ns>/sa/<sa>`; None for what is not there."""
    segments = principal.split("/")
    namespace = account = None
    for index in range(1, len(segments) - 1):
        if segments[index] == "ns" and namespace is None:
            namespace = segments[index + 1]
        elif segments[index] == "sa" and account is None:
            account = segments[index + 1]
    return namespace or None, account or None


def parse_request(document: object) -> tuple[AuthzRequest, MeshConfig | None]:
    """The request and any `mesh` override; RequestInvalid names every bad field."""
    reader = _Reader()
    request = reader.request(document)
    if reader.errors or request is None:
        raise RequestInvalid(reader.errors or [FieldError("", "must be an object")])
    return request, reader.mesh


class _Reader:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.mesh: MeshConfig | None = None

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def obj(self, doc: Mapping[str, Any], name: str, known: set[str], required: bool = True,
            ) -> Mapping[str, Any] | None:
        value = doc.get(name)
        if value is None:
            if required:
                self.fail(name, "required")
            return None
        if not isinstance(value, Mapping):
            self.fail(name, "must be an object")
            return None
        for extra in sorted(set(value) - known, key=str):
            self.fail(f"{name}.{extra}", "unknown field")
        return value

    def text(self, doc: Mapping[str, Any], key: str, path: str, required: bool = True) -> str | None:
        value = doc.get(key)
        if value is None:
            if required:
                self.fail(path, "required")
            return None
        if not isinstance(value, str):
            self.fail(path, "must be a string")
            return None
        return value

    def ip(self, doc: Mapping[str, Any], key: str, path: str, required: bool = True,
           ) -> IpAddress | None:
        value = self.text(doc, key, path, required)
        if value is None:
            return None
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            self.fail(path, f"{value!r} is not an IP address")
            return None

    def strings(self, doc: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
        value = doc.get(key) or {}
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            self.fail(path, "must be an object of strings")
            return {}
        return dict(value)

    def request(self, doc: object) -> AuthzRequest | None:
        if not isinstance(doc, Mapping):
            return None
        for extra in sorted(set(doc) - _TOP, key=str):
            self.fail(extra, "unknown field")
        protocol = doc.get("protocol")
        if protocol not in ("HTTP", "TCP"):
            self.fail("protocol", 'must be "HTTP" or "TCP"')
        source = self.obj(doc, "source", {"principal", "namespace", "ip", "remote_ip"}) or {}
        principal, namespace, account = self.principal(source)
        source_ip = self.ip(source, "ip", "source.ip")
        remote_ip = self.ip(source, "remote_ip", "source.remote_ip", required=False)
        dest = self.obj(doc, "destination", {"namespace", "labels", "ip", "port"}) or {}
        dest_ns = self.text(dest, "namespace", "destination.namespace")
        labels = self.strings(dest, "labels", "destination.labels")
        dest_ip = self.ip(dest, "ip", "destination.ip", required=False)
        port = dest.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            self.fail("destination.port", "must be a whole number from 0 to 65535")
        http = self.http(doc, protocol)
        auth = self.auth(doc)
        sni = self.text(doc, "sni", "sni", required=False)
        self.mesh = self.mesh_override(doc)
        if self.errors or source_ip is None or dest_ns is None or not isinstance(port, int):
            return None
        return AuthzRequest(
            protocol=str(protocol), source_ip=source_ip, destination_namespace=dest_ns,
            destination_port=port, destination_labels=labels, source_principal=principal,
            remote_ip=remote_ip, destination_ip=dest_ip, http=http, auth=auth, sni=sni,
            source_namespace=namespace, source_service_account=account)

    def principal(self, source: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
        principal = self.text(source, "principal", "source.principal", required=False)
        declared = self.text(source, "namespace", "source.namespace", required=False)
        if principal is None:
            if declared is not None:
                self.fail("source.namespace", "needs source.principal: Istio reads the source "
                          "namespace from the peer certificate")
            return None, None, None
        if not principal.startswith(SPIFFE) or len(principal) == len(SPIFFE):
            self.fail("source.principal", "must be a SPIFFE ID (spiffe://…) or null")
            return None, None, None
        bare = principal[len(SPIFFE):]
        namespace, account = identity_parts(bare)
        if declared is not None and declared != namespace:
            self.fail("source.namespace", f"{declared!r} disagrees with the principal's "
                      f"namespace {namespace!r}")
        return bare, namespace, account

    def http(self, doc: Mapping[str, Any], protocol: object) -> HttpAttributes | None:
        http = self.obj(doc, "http", {"method", "path", "host", "headers"}, required=False)
        if protocol == "TCP" and http is not None:
            self.fail("http", "must be absent for protocol TCP")
            return None
        if protocol == "HTTP" and http is None:
            self.fail("http", "required for protocol HTTP")
            return None
        if http is None:
            return None
        method = self.text(http, "method", "http.method")
        path = self.text(http, "path", "http.path")
        host = self.text(http, "host", "http.host")
        headers = {k.lower(): v for k, v in self.strings(http, "headers", "http.headers").items()}
        if method is None or path is None or host is None:
            return None
        return HttpAttributes(method, path.split("?", 1)[0].split("#", 1)[0], host, headers)

    def auth(self, doc: Mapping[str, Any]) -> JwtAttributes | None:
        auth = self.obj(doc, "auth", {"principal", "audiences", "presenter", "claims"}, required=False)
        if auth is None:
            return None
        audiences = auth.get("audiences") or []
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            self.fail("auth.audiences", "must be a list of strings")
            audiences = []
        claims = auth.get("claims") or {}
        if not isinstance(claims, Mapping):
            self.fail("auth.claims", "must be an object")
            claims = {}
        return JwtAttributes(self.text(auth, "principal", "auth.principal", required=False),
                             tuple(audiences), self.text(auth, "presenter", "auth.presenter",
                                                         required=False), dict(claims))

    def mesh_override(self, doc: Mapping[str, Any]) -> MeshConfig | None:
        mesh = self.obj(doc, "mesh", {"rootNamespace", "trustDomain", "trustDomainAliases",
                                      "extensionProviders"}, required=False)
        return None if mesh is None else parse_mesh(mesh, self, "mesh")


def parse_mesh(mesh: Mapping[str, Any], reader: _Reader | None = None, path: str = "mesh",
               base: MeshConfig | None = None) -> MeshConfig:
    """A `mesh` object over `base`; RequestInvalid when used alone and something is wrong."""
    own = reader or _Reader()
    base = base or MeshConfig()
    root = own.text(mesh, "rootNamespace", f"{path}.rootNamespace", required=False)
    domain = own.text(mesh, "trustDomain", f"{path}.trustDomain", required=False)
    aliases = mesh.get("trustDomainAliases", list(base.trust_domain_aliases))
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        own.fail(f"{path}.trustDomainAliases", "must be a list of trust domains")
        aliases = []
    providers = own.strings(mesh, "extensionProviders", f"{path}.extensionProviders") \
        if "extensionProviders" in mesh else dict(base.extension_providers)
    for name, verdict in providers.items():
        if verdict not in ("ALLOW", "DENY"):
            own.fail(f"{path}.extensionProviders[{name}]", 'must be "ALLOW" or "DENY"')
    if reader is None and own.errors:
        raise RequestInvalid(own.errors)
    return MeshConfig(root_namespace=root or base.root_namespace,
                      trust_domain=domain or base.trust_domain,
                      trust_domain_aliases=tuple(aliases), extension_providers=providers)
