"""An in-test Kubernetes API server, spoken to over HTTPS by the real `kubernetes` client.

`FakeKubeApi` answers the handful of endpoints meshca uses exactly as a kube-apiserver does:
status codes, `Status` error bodies, content types and the `Retry-After` header. It is its own
service-account issuer, so it mints projected (and legacy) tokens and judges them in
TokenReviews by the rules of Kubernetes' service-account authenticator: signature by one of
the issuer's keys, time claims with go-jose's one-minute leeway, audiences intersected with
the requested ones, and the bound service account / pod / node still existing with the uid
the token names.

Token checks here are written independently of meshca's own JWT code (only `sign` and
`to_jwk` are borrowed, to mint and publish), so a bug in meshca's verifier cannot hide
behind the same bug in the fake.

Namespaces (list, with label and field selectors and limit/continue) and ConfigMaps (list, get,
create, replace, delete) behave as the API server's do: resourceVersion moves on every change
and only then, a replace carrying a stale resourceVersion is 409 Conflict, a create of an
existing name 409 AlreadyExists, writes into a missing namespace 404 and creates into a
terminating one 403 (NamespaceLifecycle), bodies are validated (400/422). PATCH, watch and
deletecollection are not served for them. `before()` runs another client's write between a
client's read and its write, to provoke real conflicts.

Istio AuthorizationPolicies (`security.istio.io` v1 and v1beta1, a custom resource) are served
read-only: list (all namespaces or one, with selectors and limit/continue), get, and watch
(`?watch=true`): newline-delimited JSON events in a chunked response, replayed from the
requested resourceVersion out of a bounded history (`watch_window` events, like the watch
cache), BOOKMARKs when asked for, the stream closed after `timeoutSeconds`, and a
resourceVersion older than the history answered as the watch cache does: HTTP 200 and one
ERROR event carrying a 410 `Expired` Status. Other clients' writes are `put_authorization_policy`
and `delete_authorization_policy`; `expire_watch_history()` forgets the history.

Usage::

    with FakeKubeApi() as kube:
        kube.add_service_account("default", "app")
        kube.add_pod("default", "app-1", service_account="app", node="node-a")
        token = kube.mint("default", "app", pod="app-1")
        kube.kubeconfig(tmp_path / "kubeconfig")
        kube.add_namespace("shop", {"istio-injection": "enabled"})
        kube.put_configmap("shop", "istio-ca-root-cert", {"root-cert.pem": pem})
        kube.put_authorization_policy("shop", "deny-all", {"action": "DENY", "rules": [{}]})
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import errno
import hashlib
import ipaddress
import json
import re
import secrets
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshca.core.jwks import to_jwk
from meshca.core.jwt import sign

__all__ = ["LEGACY_ISSUER", "FakeKubeApi"]

LEGACY_ISSUER = "kubernetes/serviceaccount"
TOKENREVIEWS_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/openid/v1/jwks"
# go-jose's jwt.DefaultLeeway, which Kubernetes' claim validation uses.
LEEWAY_SECONDS = 60
AUTHZ_GROUP = "security.istio.io"
AUTHZ_VERSIONS = ("v1", "v1beta1")  # both served by Istio's CRD, from the same stored objects
AUTHZ_PLURAL = "authorizationpolicies"
AUTHZ_KIND = "AuthorizationPolicy"

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_POD_FIELDS = (
    "metadata.name", "metadata.namespace", "spec.nodeName", "spec.serviceAccountName", "status.phase",
)


def _rfc3339(epoch: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_quote_list(values: Iterable[str]) -> str:
    """Go's `%q` of a []string: `["a" "b"]`."""
    return "[" + " ".join(json.dumps(v) for v in values) + "]"


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _kid_for(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    # kube-apiserver's kid: base64url(SHA-256(DER SubjectPublicKeyInfo)).
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def _status_body(
    code: int, message: str, *, reason: str | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason if reason is not None else _REASONS.get(code, ""),
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


class _InvalidToken(Exception):
    """A TokenReview verdict of 'not authenticated', carrying the API server's error text."""


@dataclass
class _SigningKey:
    kid: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    alg: str

    @property
    def public(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        return self.private.public_key()


@dataclass
class _Pod:
    namespace: str
    name: str
    uid: str
    service_account: str
    node: str | None
    created: float
    resource_version: int
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    prefix: str
    status: int
    remaining: int | None
    retry_after: int | None
    message: str | None


@dataclass(frozen=True)
class _Route:
    # tokenreviews, pod, pods, discovery, jwks, namespaces, configmaps, authorizationpolicies, other
    kind: str
    allowed_methods: tuple[str, ...] = ()
    namespace: str | None = None
    name: str | None = None
    version: str | None = None  # of an API group's resource (authorizationpolicies)


def _route(path: str) -> _Route:
    if path == TOKENREVIEWS_PATH:
        return _Route("tokenreviews", ("POST",))
    if path == DISCOVERY_PATH:
        return _Route("discovery", ("GET",))
    if path == JWKS_PATH:
        return _Route("jwks", ("GET",))
    parts = [unquote(p) for p in path.split("/")]
    if parts == ["", "api", "v1", "pods"]:
        return _Route("pods", ("GET",))
    if parts == ["", "api", "v1", "namespaces"]:
        return _Route("namespaces", ("GET",))
    if parts == ["", "api", "v1", "configmaps"]:
        return _Route("configmaps", ("GET",))
    if len(parts) in (6, 7) and parts[:4] == ["", "api", "v1", "namespaces"] and parts[5] == "configmaps":
        if not parts[4]:
            return _Route("other")
        if len(parts) == 6:
            return _Route("configmaps", ("GET", "POST"), namespace=parts[4])
        if parts[6]:
            return _Route("configmaps", ("GET", "PUT", "DELETE"), namespace=parts[4], name=parts[6])
    if len(parts) in (6, 7) and parts[:4] == ["", "api", "v1", "namespaces"] and parts[5] == "pods":
        if not parts[4]:
            return _Route("other")
        if len(parts) == 6:
            return _Route("pods", ("GET",), namespace=parts[4])
        if parts[6]:
            return _Route("pod", ("GET",), namespace=parts[4], name=parts[6])
    if len(parts) >= 5 and parts[:3] == ["", "apis", AUTHZ_GROUP] and parts[3] in AUTHZ_VERSIONS:
        return _authz_route(parts[3], parts[4:])
    return _Route("other")


def _authz_route(version: str, rest: list[str]) -> _Route:
    """`.../authorizationpolicies` or `.../namespaces/{ns}/authorizationpolicies[/{name}]`."""
    if rest == [AUTHZ_PLURAL]:
        return _Route(AUTHZ_PLURAL, ("GET",), version=version)
    if len(rest) in (3, 4) and rest[0] == "namespaces" and rest[1] and rest[2] == AUTHZ_PLURAL:
        if len(rest) == 3:
            return _Route(AUTHZ_PLURAL, ("GET",), namespace=rest[1], version=version)
        if rest[3]:
            return _Route(AUTHZ_PLURAL, ("GET",), namespace=rest[1], name=rest[3], version=version)
    return _Route("other")


# ----------------------------------------------------------------------------- selectors
# Label selectors as k8s.io/apimachinery/pkg/labels parses them (lexer, grammar, validation).

_LABEL_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_CONFIG_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")
_SELECTOR_SPECIAL = ("!=", "==", "!", "(", ")", ",", "=", ">", "<")
_CONFIGMAP_MAX_BYTES = 1024 * 1024  # corev1.MaxSecretSize, which also bounds ConfigMaps
_NAME_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


class _SelectorError(ValueError):
    pass


def _label_key_errors(key: str) -> list[str]:
    """validation.IsQualifiedName: an optional DNS-subdomain prefix and a name of at most 63."""
    prefix, slash, name = key.rpartition("/")
    errors: list[str] = []
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(prefix)):
        errors.append("prefix part " + _NAME_MESSAGE)
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    elif not _LABEL_NAME_RE.fullmatch(name):
        errors.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return errors


def _label_value_errors(value: str) -> list[str]:
    if len(value) > 63:
        return ["must be no more than 63 characters"]
    if value and not _LABEL_NAME_RE.fullmatch(value):
        return [
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
            "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        ]
    return []


def _selector_tokens(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        special = next((s for s in _SELECTOR_SPECIAL if text.startswith(s, i)), None)
        if special is not None:
            tokens.append(special)
            i += len(special)
            continue
        start = i
        while i < len(text) and not text[i].isspace() and not any(text.startswith(s, i) for s in "!(),=><"):
            i += 1
        tokens.append(text[start:i])
    return tokens


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        try:
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return present and (number > bound if self.op == "gt" else number < bound)


def _parse_label_selector(text: str) -> list[_Requirement]:
    """labels.Parse: comma-ANDed `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (..)`, `k notin (..)`, `k>n`."""
    tokens = _selector_tokens(text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str | None:
        nonlocal pos
        token = peek()
        pos += 1
        return token

    def is_identifier(token: str | None) -> bool:
        return token is not None and token not in _SELECTOR_SPECIAL

    def shown(token: str | None) -> str:
        return "" if token is None else token

    def requirement() -> _Requirement:
        negated = peek() == "!"
        if negated:
            take()
        key = take()
        if not is_identifier(key) or key in ("in", "notin"):
            raise _SelectorError(f"found '{shown(key)}', expected: identifier")
        assert key is not None
        if errors := _label_key_errors(key):
            raise _SelectorError(f'key: Invalid value: "{key}": {"; ".join(errors)}')
        if peek() in (None, ","):
            return _Requirement(key, "!" if negated else "exists")
        if negated:
            raise _SelectorError(f"found '{shown(peek())}', expected: ',' or 'end of string'")
        operator = take()
        op = {"=": "=", "==": "=", "!=": "!=", "in": "in", "notin": "notin", ">": "gt", "<": "lt"}.get(
            shown(operator)
        )
        if op is None:
            raise _SelectorError(
                f"found '{shown(operator)}', expected: in, notin, =, ==, !=, gt, lt"
            )
        values: list[str] = []
        if op in ("in", "notin"):
            opened = take()
            if opened != "(":
                raise _SelectorError(f"found '{shown(opened)}', expected: '('")
            if peek() == ")":
                take()
                values.append("")
            else:
                expect_value = True
                while True:
                    token = take()
                    if token == ")":
                        if expect_value:
                            values.append("")
                        break
                    if token == ",":
                        if expect_value:
                            values.append("")
                        expect_value = True
                        continue
                    if is_identifier(token) and expect_value:
                        assert token is not None
                        values.append(token)
                        expect_value = False
                        continue
                    raise _SelectorError(f"found '{shown(token)}', expected: ',', ')' or identifier")
        elif peek() in (None, ","):
            values.append("")
        else:
            token = take()
            if not is_identifier(token):
                raise _SelectorError(f"found '{shown(token)}', expected: identifier")
            assert token is not None
            values.append(token)
        for index, value in enumerate(values):
            if op in ("gt", "lt"):
                try:
                    int(value)
                except ValueError:
                    raise _SelectorError(
                        f"values[{index}]: Invalid value: \"{value}\": for 'gt', 'lt' operators, "
                        "the value must be an integer"
                    ) from None
            elif errors := _label_value_errors(value):
                raise _SelectorError(f'values[{index}][{key}]: Invalid value: "{value}": {"; ".join(errors)}')
        return _Requirement(key, op, tuple(values))

    requirements: list[_Requirement] = []
    while True:
        token = peek()
        if token is None:
            return requirements
        if not (is_identifier(token) or token == "!"):
            raise _SelectorError(f"found '{token}', expected: !, identifier, or 'end of string'")
        try:
            requirements.append(requirement())
        except _SelectorError as exc:
            raise _SelectorError(f"unable to parse requirement: {exc}") from None
        after = take()
        if after is None:
            return requirements
        if after != ",":
            raise _SelectorError(f"found '{after}', expected: ',' or 'end of string'")
        if not (is_identifier(peek()) or peek() == "!"):
            raise _SelectorError(f"found '{shown(peek())}', expected: identifier after ','")


def _parse_field_selector(selector: str, supported: Iterable[str]) -> list[tuple[str, bool, str]]:
    """fields.ParseSelector: comma-ANDed `f=v`, `f==v`, `f!=v` over the resource's supported fields."""
    requirements: list[tuple[str, bool, str]] = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            name, value = term.split("!=", 1)
            equal = False
        else:
            name, sep, value = term.replace("==", "=", 1).partition("=")
            if not sep:
                raise _SelectorError(f"invalid selector: '{selector}'; can't understand '{term}'")
            equal = True
        if name not in supported:
            raise _SelectorError(f"field label not supported: {name}")
        requirements.append((name, equal, value))
    return requirements


@dataclass
class _Namespace:
    name: str
    uid: str
    created: float
    resource_version: int
    labels: dict[str, str] = field(default_factory=dict)
    phase: str = "Active"


@dataclass
class _ConfigMap:
    namespace: str
    name: str
    uid: str
    created: float
    resource_version: int
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    binary_data: dict[str, str] = field(default_factory=dict)
    immutable: bool | None = None

    def content(self) -> tuple[Any, ...]:
        return (self.labels, self.annotations, self.data, self.binary_data, self.immutable)


@dataclass
class _AuthzPolicy:
    namespace: str
    name: str
    uid: str
    created: float
    resource_version: int
    generation: int
    spec: Any  # as another client wrote it: the CRD's schema is loose, so may be invalid for Istio
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def content(self) -> tuple[Any, ...]:
        return (self.spec, self.labels, self.annotations)


@dataclass(frozen=True)
class _WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    policy: _AuthzPolicy  # a snapshot: never changed once recorded


@dataclass
class _Hook:
    method: str
    prefix: str
    action: Callable[[], object]
    remaining: int | None


class _Refusal(Exception):
    """An API error answer (code and Status body) raised out of a handler."""

    def __init__(self, code: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.code = code
        self.body = body


def _not_found(resource: str, name: str) -> _Refusal:
    details = {"name": name, "kind": resource}
    return _Refusal(404, _status_body(404, f'{resource} "{name}" not found', details=details))


def _bad_request(message: str) -> _Refusal:
    return _Refusal(400, _status_body(400, message, details={}))


def _invalid(kind: str, name: str, causes: list[tuple[str, str, str]]) -> _Refusal:
    """422 Invalid: causes are (reason, field, message) as field.ErrorList renders them."""
    rendered = [f"{f}: {m}" for _, f, m in causes]
    summary = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    details = {
        "name": name, "kind": kind,
        "causes": [{"reason": r, "message": m, "field": f} for r, f, m in causes],
    }
    return _Refusal(422, _status_body(422, f'{kind} "{name}" is invalid: {summary}', reason="Invalid",
                                      details=details))


def _authz_object(policy: _AuthzPolicy, version: str) -> dict[str, Any]:
    """As the API server renders a custom resource: typed, in lists and watch events too."""
    metadata: dict[str, Any] = {}
    if policy.annotations:
        metadata["annotations"] = dict(policy.annotations)
    metadata["creationTimestamp"] = _rfc3339(policy.created)
    metadata["generation"] = policy.generation
    if policy.labels:
        metadata["labels"] = dict(policy.labels)
    metadata.update(name=policy.name, namespace=policy.namespace,
                    resourceVersion=str(policy.resource_version), uid=policy.uid)
    return {"apiVersion": f"{AUTHZ_GROUP}/{version}", "kind": AUTHZ_KIND, "metadata": metadata,
            "spec": policy.spec}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeKubeApi, context: ssl.SSLContext) -> None:
        self.fake = fake
        self.ssl_context = context
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (socket.getfqdn), which can stall.
        socketserver_bind = super(HTTPServer, self).server_bind
        socketserver_bind()
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        # The handshake happens in the connection's own thread (finish_request), so a client
        # that never completes it cannot stall the accept loop.
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(10)
            request.do_handshake()
        except (OSError, ssl.SSLError):
            return
        self.fake._track(request)
        try:
            super().finish_request(request, client_address)
        finally:
            self.fake._untrack(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connections torn down by go_down()/stop() or by clients are expected here.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Like kube-apiserver (Go sets TCP_NODELAY): headers and body written separately must not
    # wait ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are closed after this long
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        try:
            self.server.fake._dispatch(self)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def reply(
        self,
        code: int,
        body: Mapping[str, Any] | bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else (json.dumps(body, separators=(",", ":")) + "\n").encode()
        # Like kube-apiserver: no Server header, Audit-Id on everything.
        self.send_response_only(code)
        self.send_header("Date", self.date_time_string())
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()


class FakeKubeApi:
    """A kube-apiserver stand-in on https://127.0.0.1:PORT (see module docstring)."""

    def __init__(
        self,
        *,
        algorithm: str = "ES256",
        accept_legacy: bool = False,
        client_user: str = "system:serviceaccount:meshca:meshca",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if algorithm not in ("ES256", "RS256"):
            raise ValueError("algorithm must be ES256 or RS256")
        self.accept_legacy = accept_legacy
        self.client_user = client_user
        self.client_token = secrets.token_urlsafe(32)
        self.clock = clock
        self._algorithm = algorithm
        self._lock = threading.RLock()
        self._calls: Counter[tuple[str, str]] = Counter()
        self._service_accounts: dict[tuple[str, str], str] = {}
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._nodes: dict[str, str] = {}
        self._resource_version = 1000
        self._faults: list[_Fault] = []
        self._delays: list[tuple[str, float]] = []
        self._hooks: list[_Hook] = []
        self._namespaces: dict[str, _Namespace] = {}
        self._configmaps: dict[tuple[str, str], _ConfigMap] = {}
        self._authz: dict[tuple[str, str], _AuthzPolicy] = {}
        self._authz_history: list[_WatchEvent] = []
        # A watch from a resourceVersion below this cannot be replayed: 410 Expired.
        self._history_floor = self._resource_version
        self.watch_window = 100  # events the history keeps (the watch cache's capacity)
        self.bookmark_interval = 60.0  # seconds between BOOKMARKs, when a watch asks for them
        self.expired_watches = 0  # watches answered with the 410 ERROR event
        self._changed = threading.Condition(self._lock)  # wakes watch streams
        self._epoch = 0  # go_down() bumps it: streams of a server that went down end
        self._keys: list[_SigningKey] = [self._new_key(algorithm)]
        self._connections: set[Any] = set()
        self._ca_pem, self._ssl_context = self._make_tls()
        self._server: _Server | None = _Server(("127.0.0.1", 0), self, self._ssl_context)
        self._port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None
        self._stopped = False

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> FakeKubeApi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Serve (idempotent). The port is already bound by the constructor."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("FakeKubeApi was stopped")
            if self._server is None:
                self._server = self._bind()
            if self._thread is None:
                server = self._server
                self._thread = threading.Thread(
                    target=server.serve_forever, kwargs={"poll_interval": 0.05},
                    name=f"fake-kube-api-{self._port}", daemon=True,
                )
                self._thread.start()

    def stop(self) -> None:
        self.go_down()
        self._stopped = True

    def go_down(self) -> None:
        """Stop accepting (connection refused) and drop open connections; keep all state."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server, self._thread = None, None
            connections = list(self._connections)
            self._epoch += 1
            self._changed.notify_all()
        if server is None:
            return
        if thread is not None:
            server.shutdown()
            thread.join(timeout=5)
        server.server_close()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def come_up(self) -> None:
        """Serve again on the same port, with the same state, keys and certificate."""
        self.start()

    def _bind(self) -> _Server:
        for _ in range(50):
            try:
                return _Server(("127.0.0.1", self._port), self, self._ssl_context)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                time.sleep(0.1)
        raise RuntimeError(f"port {self._port} stayed busy")

    def _track(self, conn: Any) -> None:
        with self._lock:
            self._connections.add(conn)

    def _untrack(self, conn: Any) -> None:
        with self._lock:
            self._connections.discard(conn)

    # ----------------------------------------------------------------- addresses, TLS

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._port}"

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def ca_pem(self) -> str:
        return self._ca_pem

    @property
    def api_audiences(self) -> list[str]:
        """kube-apiserver's --api-audiences (defaults to the issuer)."""
        return [self.issuer]

    def kubeconfig(self, path: str | Path, *, namespace: str = "meshca") -> Path:
        """Write a kubeconfig for this server (JSON, which is YAML) and return its path."""
        path = Path(path)
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(self._ca_pem.encode()).decode(),
            }}],
            "users": [{"name": "meshca", "user": {"token": self.client_token}}],
            "contexts": [{"name": "fake", "context": {
                "cluster": "fake", "user": "meshca", "namespace": namespace,
            }}],
            "current-context": "fake",
            "preferences": {},
        }
        path.write_text(json.dumps(doc, indent=2))
        return path

    @staticmethod
    def _make_tls() -> tuple[str, ssl.SSLContext]:
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fake-kube-ca-{secrets.token_hex(4)}")])
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ca_ski, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
        chain_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # load_cert_chain wants files; they are only needed for the duration of the call.
        with tempfile.TemporaryDirectory(prefix="fake-kube-tls-") as tmp:
            cert_file, key_file = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert_file.write_bytes(chain_pem)
            key_file.write_bytes(key_pem)
            key_file.chmod(0o600)
            context.load_cert_chain(cert_file, key_file)
        return ca_pem, context

    # ----------------------------------------------------------------- issuer keys

    @staticmethod
    def _new_key(algorithm: str) -> _SigningKey:
        private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if algorithm == "RS256":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            private = ec.generate_private_key(ec.SECP256R1())
        return _SigningKey(_kid_for(private.public_key()), private, algorithm)

    def rotate_key(self, *, drop_old: bool = False, algorithm: str | None = None) -> str:
        """Add a new signing key and make it current; returns its kid."""
        key = self._new_key(algorithm or self._algorithm)
        with self._lock:
            if drop_old:
                self._keys.clear()
            self._keys.append(key)
        return key.kid

    @property
    def current_kid(self) -> str:
        with self._lock:
            return self._keys[-1].kid

    @property
    def public_keys(self) -> dict[str, rsa.RSAPublicKey | ec.EllipticCurvePublicKey]:
        with self._lock:
            return {k.kid: k.public for k in self._keys}

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [to_jwk(k.public, k.kid) for k in self._keys]}

    def openid_configuration(self) -> dict[str, Any]:
        with self._lock:
            algs = sorted({k.alg for k in self._keys})
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + JWKS_PATH,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
        }

    # ----------------------------------------------------------------- cluster state

    def _bump(self) -> int:
        self._resource_version += 1
        return self._resource_version

    def add_service_account(self, namespace: str, name: str) -> str:
        """Create (or recreate, with a fresh uid) a ServiceAccount; returns its uid."""
        uid = str(uuid.uuid4())
        with self._lock:
            self._service_accounts[(namespace, name)] = uid
            self._bump()
        return uid

    def delete_service_account(self, namespace: str, name: str) -> None:
        with self._lock:
            del self._service_accounts[(namespace, name)]
            self._bump()

    def service_account_uid(self, namespace: str, name: str) -> str | None:
        with self._lock:
            return self._service_accounts.get((namespace, name))

    def add_node(self, name: str) -> str:
        """Register a Node (idempotent); returns its uid."""
        with self._lock:
            if name not in self._nodes:
                self._nodes[name] = str(uuid.uuid4())
                self._bump()
            return self._nodes[name]

    def delete_node(self, name: str) -> None:
        with self._lock:
            del self._nodes[name]
            self._bump()

    def add_pod(
        self,
        namespace: str,
        name: str,
        *,
        service_account: str = "default",
        node: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Create (or recreate, with a fresh uid) a running Pod; returns its uid."""
        uid = str(uuid.uuid4())
        with self._lock:
            if node is not None:
                self.add_node(node)
            self._pods[(namespace, name)] = _Pod(
                namespace, name, uid, service_account, node, self.clock(), self._bump(), dict(labels or {})
            )
        return uid

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            del self._pods[(namespace, name)]
            self._bump()

    def pod_uid(self, namespace: str, name: str) -> str | None:
        with self._lock:
            pod = self._pods.get((namespace, name))
            return pod.uid if pod else None

    def add_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> str:
        """Create a Namespace, or replace an existing one's labels; returns its uid.

        Like the API server, every namespace also carries `kubernetes.io/metadata.name: <name>`.
        """
        if not _DNS_LABEL_RE.fullmatch(name) or len(name) > 63:
            raise ValueError(f"invalid namespace name {name!r}")
        wanted = {**dict(labels or {}), "kubernetes.io/metadata.name": name}
        with self._lock:
            namespace = self._namespaces.get(name)
            if namespace is None:
                namespace = _Namespace(name, str(uuid.uuid4()), self.clock(), self._bump(), wanted)
                self._namespaces[name] = namespace
            elif namespace.labels != wanted:
                namespace.labels = wanted
                namespace.resource_version = self._bump()
            return namespace.uid

    def terminate_namespace(self, name: str) -> None:
        """Put a namespace in phase Terminating: no new objects may be created in it."""
        with self._lock:
            self._namespaces[name].phase = "Terminating"
            self._namespaces[name].resource_version = self._bump()

    def delete_namespace(self, name: str) -> None:
        """Remove a namespace and everything in it (the namespace controller's work, done at once)."""
        with self._lock:
            del self._namespaces[name]
            for key in [k for k in self._configmaps if k[0] == name]:
                del self._configmaps[key]
            for key in [k for k in self._pods if k[0] == name]:
                del self._pods[key]
            self._bump()
            for key in [k for k in self._authz if k[0] == name]:
                self.delete_authorization_policy(*key)

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap as a GET would return it, or None."""
        with self._lock:
            cm = self._configmaps.get((namespace, name))
            return self._configmap_object(cm) if cm is not None else None

    def configmaps(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every ConfigMap (in one namespace), as GETs would return them, by namespace and name."""
        with self._lock:
            return [
                self._configmap_object(cm) for key, cm in sorted(self._configmaps.items())
                if namespace is None or key[0] == namespace
            ]

    def put_configmap(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        binary_data: Mapping[str, bytes] | None = None,
        immutable: bool | None = None,
    ) -> str:
        """Write a ConfigMap as another client would (create or overwrite); returns its resourceVersion.

        The namespace must exist. Writing the same content again changes nothing, as on the API server.
        """
        with self._lock:
            if name == "" or namespace not in self._namespaces:
                raise KeyError(f'namespaces "{namespace}" not found')
            cm = self._configmaps.get((namespace, name))
            fresh = _ConfigMap(
                namespace, name, cm.uid if cm else str(uuid.uuid4()), cm.created if cm else self.clock(), 0,
                dict(labels or {}), dict(annotations or {}), dict(data or {}),
                {k: base64.b64encode(v).decode() for k, v in (binary_data or {}).items()}, immutable,
            )
            if cm is not None and cm.content() == fresh.content():
                return str(cm.resource_version)
            fresh.resource_version = self._bump()
            self._configmaps[(namespace, name)] = fresh
            return str(fresh.resource_version)

    def delete_configmap(self, namespace: str, name: str) -> None:
        with self._lock:
            del self._configmaps[(namespace, name)]
            self._bump()

    # ----------------------------------------------------------------- authorization policies

    def authorization_policy(self, namespace: str, name: str, version: str = "v1") -> dict[str, Any] | None:
        """The AuthorizationPolicy as a GET would return it, or None."""
        with self._lock:
            policy = self._authz.get((namespace, name))
            return _authz_object(policy, version) if policy is not None else None

    def put_authorization_policy(
        self,
        namespace: str,
        name: str,
        spec: Any,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> str:
        """Write an AuthorizationPolicy as another client would (create or overwrite); returns its
        resourceVersion. `spec` is taken as is (the CRD does not enforce Istio's rules).

        The namespace must exist. Writing the same content again changes nothing, as on the API server.
        """
        with self._lock:
            if not name or namespace not in self._namespaces:
                raise KeyError(f'namespaces "{namespace}" not found')
            old = self._authz.get((namespace, name))
            fresh = _AuthzPolicy(
                namespace, name, old.uid if old else str(uuid.uuid4()), old.created if old else self.clock(),
                0, 1, json.loads(json.dumps(spec)), dict(labels or {}), dict(annotations or {}),
            )
            if old is not None and old.content() == fresh.content():
                return str(old.resource_version)
            if old is not None:  # the status subresource makes only spec changes count
                fresh.generation = old.generation + (fresh.spec != old.spec)
            fresh.resource_version = self._bump()
            self._authz[(namespace, name)] = fresh
            self._record("MODIFIED" if old is not None else "ADDED", fresh)
            return str(fresh.resource_version)

    def delete_authorization_policy(self, namespace: str, name: str) -> None:
        with self._lock:
            policy = self._authz.pop((namespace, name))
            gone = replace(policy, resource_version=self._bump())
            self._record("DELETED", gone)  # the last state, at the deletion's resourceVersion

    def expire_watch_history(self) -> None:
        """Forget every change so far, as a watch cache that was re-initialised: a watch from an
        older resourceVersion gets the 410 ERROR event, and open watches that had not yet sent
        a forgotten change end (their client resumes from where it was, and gets the 410)."""
        with self._lock:
            self._authz_history.clear()
            self._history_floor = self._resource_version
            self._changed.notify_all()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Changes made inside reach watches together, after the block (no watch sees half)."""
        with self._lock:
            yield

    def _record(self, kind: str, policy: _AuthzPolicy) -> None:
        self._authz_history.append(_WatchEvent(kind, policy))
        overflow = len(self._authz_history) - max(self.watch_window, 0)
        if overflow > 0:
            self._history_floor = self._authz_history[overflow - 1].policy.resource_version
            del self._authz_history[:overflow]
        self._changed.notify_all()

    # ----------------------------------------------------------------- tokens

    def mint(
        self,
        namespace: str,
        service_account: str,
        *,
        audiences: Iterable[str] = ("istio-ca",),
        ttl: int = 3600,
        pod: str | None = None,
        node: str | None = None,
        now: float | None = None,
        extra_claims: Mapping[str, Any] | None = None,
        legacy: bool = False,
    ) -> str:
        """A token as the TokenRequest API (or, `legacy=True`, a token Secret) would issue it.

        The service account (and pod) must exist, as for the real API. A pod-bound token also
        carries the pod's node, like kubelet-requested tokens since Kubernetes 1.30.
        `extra_claims` are merged last; a value of None removes that claim.
        """
        with self._lock:
            sa_uid = self._service_accounts.get((namespace, service_account))
            if sa_uid is None:
                raise KeyError(f'serviceaccounts "{service_account}" not found in namespace "{namespace}"')
            sub = f"system:serviceaccount:{namespace}:{service_account}"
            claims: dict[str, Any]
            if legacy:
                claims = {
                    "iss": LEGACY_ISSUER,
                    "kubernetes.io/serviceaccount/namespace": namespace,
                    "kubernetes.io/serviceaccount/secret.name": (
                        f"{service_account}-token-{secrets.token_hex(3)[:5]}"
                    ),
                    "kubernetes.io/serviceaccount/service-account.name": service_account,
                    "kubernetes.io/serviceaccount/service-account.uid": sa_uid,
                    "sub": sub,
                }
            else:
                issued = int(self.clock() if now is None else now)
                kube: dict[str, Any] = {
                    "namespace": namespace,
                    "serviceaccount": {"name": service_account, "uid": sa_uid},
                }
                if pod is not None:
                    bound = self._pods.get((namespace, pod))
                    if bound is None:
                        raise KeyError(f'pods "{pod}" not found')
                    if bound.service_account != service_account:
                        raise ValueError(
                            f'the API object\'s service account "{bound.service_account}" does not match '
                            f'"{service_account}"'
                        )
                    kube["pod"] = {"name": pod, "uid": bound.uid}
                    node = node if node is not None else bound.node
                if node is not None:
                    kube["node"] = {"name": node, "uid": self.add_node(node)}
                claims = {
                    "aud": list(audiences) or self.api_audiences,
                    "exp": issued + int(ttl),
                    "iat": issued,
                    "iss": self.issuer,
                    "jti": str(uuid.uuid4()),
                    "kubernetes.io": kube,
                    "nbf": issued,
                    "sub": sub,
                }
            for name, value in (extra_claims or {}).items():
                if value is None:
                    claims.pop(name, None)
                else:
                    claims[name] = value
            key = self._keys[-1]
        return sign(claims, key.private, key.kid)

    def _authenticate_token(self, token: str, requested: list[str]) -> dict[str, Any]:
        """The service-account authenticator; returns a TokenReview status or raises _InvalidToken."""
        parts = token.split(".")
        if len(parts) != 3:
            raise _InvalidToken("invalid bearer token")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise _InvalidToken("invalid bearer token") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _InvalidToken("invalid bearer token")
        iss = claims.get("iss")
        legacy = iss == LEGACY_ISSUER
        # A token from an issuer this server does not serve is simply not recognised.
        if iss != self.issuer and not (legacy and self.accept_legacy):
            raise _InvalidToken("invalid bearer token")

        def fail(detail: str) -> _InvalidToken:
            return _InvalidToken(f"[invalid bearer token, {detail}]")

        self._check_signature(header, f"{parts[0]}.{parts[1]}".encode("ascii"), signature, fail)

        if legacy:
            namespace = claims.get("kubernetes.io/serviceaccount/namespace")
            sa_name = claims.get("kubernetes.io/serviceaccount/service-account.name")
            sa_uid = claims.get("kubernetes.io/serviceaccount/service-account.uid")
            if not all(isinstance(v, str) and v for v in (namespace, sa_name, sa_uid)):
                raise fail("service account token claims could not be validated")
            token_auds: list[str] = []
        else:
            now = self.clock()
            for name in ("exp", "nbf", "iat"):
                if name in claims and not isinstance(claims[name], int | float):
                    raise fail(f"go-jose/go-jose/jwt: invalid {name} claim")
            if "exp" in claims and now - LEEWAY_SECONDS > claims["exp"]:
                raise fail("service account token has expired")
            if "nbf" in claims and now + LEEWAY_SECONDS < claims["nbf"]:
                raise fail("service account token is not valid yet")
            if "iat" in claims and now + LEEWAY_SECONDS < claims["iat"]:
                raise fail("service account token is issued in the future")
            aud = claims.get("aud", [])
            token_auds = [aud] if isinstance(aud, str) else [a for a in aud if isinstance(a, str)]
        # pkg/serviceaccount/jwt.go: empty token audiences mean the API server's own.
        if not token_auds:
            token_auds = self.api_audiences
        granted = [a for a in token_auds if a in requested]
        if not granted:
            raise fail(
                f"token audiences {_go_quote_list(token_auds)} is invalid for the target audiences "
                f"{_go_quote_list(requested)}"
            )
        if legacy:
            return self._check_bound_objects(
                str(namespace), str(sa_name), str(sa_uid), None, None, None, granted, fail
            )
        kube = claims.get("kubernetes.io")
        if not isinstance(kube, dict) or not isinstance(kube.get("serviceaccount"), dict):
            raise fail("service account token claims could not be validated")
        sa = kube["serviceaccount"]
        namespace, sa_name, sa_uid = kube.get("namespace"), sa.get("name"), sa.get("uid")
        if not all(isinstance(v, str) and v for v in (namespace, sa_name, sa_uid)):
            raise fail("service account token claims could not be validated")
        if claims.get("sub") != f"system:serviceaccount:{namespace}:{sa_name}":
            raise fail("service account token claims could not be validated")
        pod_ref = kube.get("pod") if isinstance(kube.get("pod"), dict) else None
        node_ref = kube.get("node") if isinstance(kube.get("node"), dict) else None
        jti = claims.get("jti") if isinstance(claims.get("jti"), str) else None
        return self._check_bound_objects(
            str(namespace), str(sa_name), str(sa_uid), pod_ref, node_ref, jti, granted, fail
        )

    def _check_signature(
        self,
        header: dict[str, Any],
        signing_input: bytes,
        signature: bytes,
        fail: Callable[[str], _InvalidToken],
    ) -> None:
        alg = header.get("alg")
        with self._lock:
            keys = list(self._keys)
        kid = header.get("kid")
        candidates = [k for k in keys if k.kid == kid] or keys
        for key in candidates:
            if alg != key.alg:
                continue
            public = key.public
            try:
                if isinstance(public, rsa.RSAPublicKey):
                    public.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
                else:
                    if len(signature) != 64:
                        continue
                    der = encode_dss_signature(
                        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                    )
                    public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
                return
            except InvalidSignature:
                continue
        raise fail("go-jose/go-jose: error in cryptographic primitive")

    def _check_bound_objects(
        self,
        namespace: str,
        sa_name: str,
        sa_uid: str,
        pod_ref: dict[str, Any] | None,
        node_ref: dict[str, Any] | None,
        jti: str | None,
        audiences: list[str],
        fail: Callable[[str], _InvalidToken],
    ) -> dict[str, Any]:
        extra: dict[str, list[str]] = {}
        with self._lock:
            current_sa_uid = self._service_accounts.get((namespace, sa_name))
            if current_sa_uid is None:
                raise fail("service account token has been invalidated")
            if current_sa_uid != sa_uid:
                raise fail(f"service account UID ({current_sa_uid}) does not match claim ({sa_uid})")
            if pod_ref is not None:
                pod = self._pods.get((namespace, str(pod_ref.get("name"))))
                if pod is None:
                    raise fail("service account token has been invalidated")
                if pod.uid != pod_ref.get("uid"):
                    raise fail(f"pod UID ({pod.uid}) does not match claim ({pod_ref.get('uid')})")
                extra["authentication.kubernetes.io/pod-name"] = [pod.name]
                extra["authentication.kubernetes.io/pod-uid"] = [pod.uid]
            if node_ref is not None:
                node_name, node_uid = str(node_ref.get("name")), str(node_ref.get("uid"))
                # Only node-bound tokens (no pod) are checked against the Node object.
                if pod_ref is None:
                    current_node_uid = self._nodes.get(node_name)
                    if current_node_uid is None:
                        raise fail("service account token has been invalidated")
                    if current_node_uid != node_uid:
                        raise fail(f"node UID ({current_node_uid}) does not match claim ({node_uid})")
                extra["authentication.kubernetes.io/node-name"] = [node_name]
                extra["authentication.kubernetes.io/node-uid"] = [node_uid]
        if jti:
            extra["authentication.kubernetes.io/credential-id"] = [f"JTI={jti}"]
        user: dict[str, Any] = {
            "username": f"system:serviceaccount:{namespace}:{sa_name}",
            "uid": sa_uid,
            "groups": [
                "system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated",
            ],
        }
        if extra:
            user["extra"] = extra
        return {"authenticated": True, "user": user, "audiences": audiences}

    # ----------------------------------------------------------------- faults, counters

    def fail(
        self,
        path_prefix: str,
        status: int,
        *,
        times: int | None = None,
        retry_after: int | None = None,
        message: str | None = None,
    ) -> None:
        """Answer requests whose path starts with `path_prefix` with the API's `Status` error.

        `times=None` means until clear_faults(); faults are consulted in the order added.
        """
        if status not in _REASONS:
            raise ValueError(f"no Status shape known for HTTP {status}")
        with self._lock:
            self._faults.append(_Fault(path_prefix, status, times, retry_after, message))

    def delay(self, path_prefix: str, seconds: float) -> None:
        """Add latency before answering requests whose path starts with `path_prefix`."""
        with self._lock:
            self._delays.append((path_prefix, seconds))

    def before(
        self, method: str, path_prefix: str, action: Callable[[], object], *, times: int | None = 1
    ) -> None:
        """Run `action` (e.g. another client's write) just before answering a matching request.

        It runs in the server's thread once the request has arrived, so it lands between what the
        client read earlier and what this request does: a concurrent writer, deterministically.
        `times=None` means until clear_faults().
        """
        with self._lock:
            self._hooks.append(_Hook(method.upper(), path_prefix, action, times))

    def clear_faults(self) -> None:
        """Remove all injected faults, delays and `before` actions."""
        with self._lock:
            self._faults.clear()
            self._delays.clear()
            self._hooks.clear()

    @property
    def calls(self) -> Counter[tuple[str, str]]:
        """A snapshot: (method, kind) -> requests received, kind one of tokenreviews, pod,
        pods, discovery, jwks, namespaces, configmaps, authorizationpolicies (collection and item
        alike), other; a watch counts as method "WATCH". Every request that reached the server
        counts, including ones answered with an error."""
        with self._lock:
            return Counter(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # ----------------------------------------------------------------- HTTP

    def _dispatch(self, req: _Handler) -> None:
        target = urlsplit(req.path)
        path = target.path
        query = parse_qs(target.query)
        route = _route(path)
        try:
            length = int(req.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            req.close_connection = True
            req.reply(400, _status_body(400, "invalid Content-Length", details={}))
            return
        body = req.rfile.read(length) if length > 0 else b""
        # A watch is the API's own verb, counted apart from list and get.
        verb = "WATCH" if route.kind == AUTHZ_PLURAL and _flag(query, "watch") else req.command
        with self._lock:
            self._calls[(verb, route.kind)] += 1
            pause = sum(s for prefix, s in self._delays if path.startswith(prefix))
            fault = next((f for f in self._faults if path.startswith(f.prefix) and f.remaining != 0), None)
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
            actions = []
            for hook in self._hooks:
                if hook.method == req.command and path.startswith(hook.prefix) and hook.remaining != 0:
                    actions.append(hook.action)
                    if hook.remaining is not None:
                        hook.remaining -= 1
        if pause > 0:
            time.sleep(pause)
        for action in actions:
            action()

        authz = req.headers.get("Authorization")
        presented = authz[len("Bearer "):].strip() if authz and authz.startswith("Bearer ") else None
        authenticated = presented is not None and secrets.compare_digest(presented, self.client_token)
        anonymous_ok = route.kind in ("discovery", "jwks") and authz is None

        if fault is not None:
            user = self.client_user if authenticated else "system:anonymous"
            self._reply_fault(req, fault, route, path, user)
            return
        if not authenticated and not anonymous_ok:
            req.reply(401, _status_body(401, "Unauthorized"))
            return
        if route.kind == "other":
            req.reply(404, _status_body(404, "the server could not find the requested resource", details={}))
            return
        if req.command not in route.allowed_methods:
            req.reply(405, _status_body(
                405, "the server does not allow this method on the requested resource", details={}
            ))
            return
        if route.kind == "tokenreviews":
            self._token_review(req, body)
        elif route.kind == "discovery":
            req.reply(200, self.openid_configuration(), headers={"Cache-Control": "public, max-age=3600"})
        elif route.kind == "jwks":
            req.reply(
                200, self.jwks(), content_type="application/jwk-set+json",
                headers={"Cache-Control": "public, max-age=3600"},
            )
        elif route.kind == "pod":
            self._get_pod(req, str(route.namespace), str(route.name))
        elif route.kind == "pods":
            self._list_pods(req, route.namespace, query)
        elif route.kind == AUTHZ_PLURAL and route.name is None and _flag(query, "watch"):
            self._watch_authz(req, route, query)
        else:
            try:
                if route.kind == "namespaces":
                    code, answer = 200, self._list_namespaces(query)
                elif route.kind == AUTHZ_PLURAL:
                    code, answer = 200, self._get_authz(route, query)
                else:
                    code, answer = self._configmap_request(req.command, route, query, body)
            except _Refusal as refusal:
                code, answer = refusal.code, refusal.body
            req.reply(code, answer)

    def _reply_fault(self, req: _Handler, fault: _Fault, route: _Route, path: str, user: str) -> None:
        code = fault.status
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        details: dict[str, Any] | None = None
        if code == 401:
            message = fault.message or "Unauthorized"
        elif code == 403:
            message, details = self._forbidden(req.command, route, path, user)
            message = fault.message or message
        elif code == 429:
            message = fault.message or "Too many requests, please try again later."
            details = {"retryAfterSeconds": fault.retry_after} if fault.retry_after is not None else {}
        elif code == 500:
            cause = fault.message or "etcdserver: request timed out"
            message = f"Internal error occurred: {cause}"
            details = {"causes": [{"message": cause}]}
        elif code == 503:
            message = fault.message or "the server is currently unable to handle the request"
            details = {}
            if fault.retry_after is not None:
                details["retryAfterSeconds"] = fault.retry_after
        elif code == 504:
            message = fault.message or (
                "Timeout: request did not complete within requested timeout - context deadline exceeded"
            )
            details = {}
        else:
            message = fault.message or _REASONS[code]
            details = {}
        req.reply(code, _status_body(code, message, details=details), headers=headers)

    @staticmethod
    def _forbidden(method: str, route: _Route, path: str, user: str) -> tuple[str, dict[str, Any]]:
        if route.kind == "tokenreviews":
            return (
                f'tokenreviews.authentication.k8s.io is forbidden: User "{user}" cannot create resource '
                '"tokenreviews" in API group "authentication.k8s.io" at the cluster scope',
                {"group": "authentication.k8s.io", "kind": "tokenreviews"},
            )
        if route.kind == "pod":
            return (
                f'pods "{route.name}" is forbidden: User "{user}" cannot get resource "pods" in API group "" '
                f'in the namespace "{route.namespace}"',
                {"name": str(route.name), "kind": "pods"},
            )
        if route.kind == "pods":
            where = f'in the namespace "{route.namespace}"' if route.namespace else "at the cluster scope"
            return (
                f'pods is forbidden: User "{user}" cannot list resource "pods" in API group "" {where}',
                {"kind": "pods"},
            )
        if route.kind in ("configmaps", "namespaces"):
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
                method, "get" if route.name else "list"
            )
            subject = f'{route.kind} "{route.name}"' if route.name else route.kind
            where = f'in the namespace "{route.namespace}"' if route.namespace else "at the cluster scope"
            details = {"name": route.name, "kind": route.kind} if route.name else {"kind": route.kind}
            return (
                f'{subject} is forbidden: User "{user}" cannot {verb} resource "{route.kind}" '
                f'in API group "" {where}',
                details,
            )
        if route.kind == AUTHZ_PLURAL:
            resource = f"{AUTHZ_PLURAL}.{AUTHZ_GROUP}"
            subject = f'{resource} "{route.name}"' if route.name else resource
            verb = "get" if route.name else "list"
            where = f'in the namespace "{route.namespace}"' if route.namespace else "at the cluster scope"
            details = {"group": AUTHZ_GROUP, "kind": AUTHZ_PLURAL}
            if route.name:
                details["name"] = route.name
            return (
                f'{subject} is forbidden: User "{user}" cannot {verb} resource "{AUTHZ_PLURAL}" '
                f'in API group "{AUTHZ_GROUP}" {where}',
                details,
            )
        return f'forbidden: User "{user}" cannot {method.lower()} path "{path}"', {}

    def _token_review(self, req: _Handler, raw: bytes) -> None:
        def bad(detail: str) -> None:
            req.reply(400, _status_body(
                400, f'TokenReview in version "v1" cannot be handled as a TokenReview: {detail}', details={}
            ))

        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            bad(f"json parse error: {exc}")
            return
        if not isinstance(doc, dict):
            bad("json: cannot unmarshal non-object into Go value of type v1.TokenReview")
            return
        # Like the API server, a body without apiVersion/kind takes them from the endpoint.
        if doc.get("apiVersion", "authentication.k8s.io/v1") != "authentication.k8s.io/v1" or doc.get(
            "kind", "TokenReview"
        ) != "TokenReview":
            bad(
                f"the object provided is unrecognized (kind {doc.get('kind')!r}, "
                f"apiVersion {doc.get('apiVersion')!r})"
            )
            return
        spec = doc.get("spec")
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            bad("json: cannot unmarshal into Go struct field TokenReview.spec of type v1.TokenReviewSpec")
            return
        token = spec.get("token", "")
        audiences = spec.get("audiences")
        if not isinstance(token, str):
            bad("json: cannot unmarshal into Go struct field TokenReviewSpec.spec.token of type string")
            return
        if audiences is not None and (
            not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences)
        ):
            bad("json: cannot unmarshal into Go struct field TokenReviewSpec.spec.audiences of type []string")
            return
        if not token:
            message = "token is required for TokenReview in authentication"
            req.reply(400, _status_body(400, message, details={}))
            return
        echo_spec: dict[str, Any] = {"token": token}
        if audiences:
            echo_spec["audiences"] = audiences
        try:
            status = self._authenticate_token(token, list(audiences) if audiences else self.api_audiences)
        except _InvalidToken as exc:
            # The API server answers 201 with `authenticated` omitted (false), an empty `user`
            # (a non-pointer struct in Go, so never omitted) and the authenticator's error.
            status = {"user": {}, "error": str(exc)}
        req.reply(201, {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": echo_spec,
            "status": status,
        })

    def _pod_object(self, pod: _Pod) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": pod.name,
            "namespace": pod.namespace,
            "uid": pod.uid,
            "resourceVersion": str(pod.resource_version),
            "creationTimestamp": _rfc3339(pod.created),
        }
        if pod.labels:
            metadata["labels"] = dict(pod.labels)
        spec: dict[str, Any] = {
            "containers": [{"name": "app", "image": "registry.example/app:1", "resources": {}}],
            "restartPolicy": "Always",
            "serviceAccountName": pod.service_account,
            "serviceAccount": pod.service_account,
        }
        if pod.node is not None:
            spec["nodeName"] = pod.node
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": metadata,
            "spec": spec,
            "status": {"phase": "Running" if pod.node is not None else "Pending"},
        }

    def _get_pod(self, req: _Handler, namespace: str, name: str) -> None:
        with self._lock:
            pod = self._pods.get((namespace, name))
            obj = self._pod_object(pod) if pod else None
        if obj is None:
            details = {"name": name, "kind": "pods"}
            req.reply(404, _status_body(404, f'pods "{name}" not found', details=details))
            return
        req.reply(200, obj)

    def _list_pods(self, req: _Handler, namespace: str | None, query: dict[str, list[str]]) -> None:
        try:
            requirements = [r for s in query.get("fieldSelector", [])
                            for r in _parse_field_selector(s, _POD_FIELDS)]
        except _SelectorError as exc:
            req.reply(400, _status_body(400, str(exc), details={}))
            return
        # labelSelector (and limit/continue) are accepted and ignored.
        with self._lock:
            items = []
            for pod in sorted(self._pods.values(), key=lambda p: (p.namespace, p.name)):
                if namespace is not None and pod.namespace != namespace:
                    continue
                obj = self._pod_object(pod)
                fields = {
                    "metadata.name": pod.name,
                    "metadata.namespace": pod.namespace,
                    "spec.nodeName": pod.node or "",
                    "spec.serviceAccountName": pod.service_account,
                    "status.phase": obj["status"]["phase"],
                }
                if all((fields[n] == v) == eq for n, eq, v in requirements):
                    items.append(obj)
            version = str(self._resource_version)
        req.reply(200, {
            "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": version}, "items": items,
        })

    # ----------------------------------------------------------------- namespaces, configmaps

    @staticmethod
    def _page(
        keyed: list[tuple[str, dict[str, Any]]], query: dict[str, list[str]], version: int
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """limit/continue as the API server pages a list read from etcd (the token holds the start key)."""
        meta: dict[str, Any] = {"resourceVersion": str(version)}
        start = ""
        token = (query.get("continue") or [""])[0]
        if token and (query.get("resourceVersion") or [""])[0] not in ("", "0"):
            raise _bad_request("specifying resource version is not allowed when using continue")
        if token:
            try:
                doc = json.loads(base64.b64decode(token, validate=True))
                start = str(doc["start"])
                if doc.get("v") != "meta.k8s.io/v1":
                    raise ValueError(doc.get("v"))
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise _bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                                   "(version meta.k8s.io/v1)") from None
        raw_limit = (query.get("limit") or ["0"])[0]
        try:
            limit = int(raw_limit)
        except ValueError:
            raise _bad_request(f'strconv.ParseInt: parsing "{raw_limit}": invalid syntax') from None
        rest = [(k, o) for k, o in keyed if k >= start]
        if limit <= 0 or len(rest) <= limit:
            return [o for _, o in rest], meta
        page = rest[:limit]
        next_key = page[-1][0] + "\x00"
        meta["continue"] = base64.b64encode(json.dumps(
            {"v": "meta.k8s.io/v1", "rv": version, "start": next_key}, separators=(",", ":")
        ).encode()).decode()
        meta["remainingItemCount"] = len(rest) - limit
        return [o for _, o in page], meta

    @staticmethod
    def _selectors(
        query: dict[str, list[str]], fields: tuple[str, ...]
    ) -> tuple[list[_Requirement], list[tuple[str, bool, str]]]:
        try:
            labels = [r for s in query.get("labelSelector", []) for r in _parse_label_selector(s)]
            by_field = [r for s in query.get("fieldSelector", []) for r in _parse_field_selector(s, fields)]
        except _SelectorError as exc:
            raise _bad_request(str(exc)) from None
        return labels, by_field

    @staticmethod
    def _namespace_object(ns: _Namespace, *, typed: bool = True) -> dict[str, Any]:
        obj: dict[str, Any] = {"kind": "Namespace", "apiVersion": "v1"} if typed else {}
        obj["metadata"] = {
            "name": ns.name,
            "uid": ns.uid,
            "resourceVersion": str(ns.resource_version),
            "creationTimestamp": _rfc3339(ns.created),
            "labels": dict(ns.labels),
        }
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": ns.phase}
        return obj

    def _list_namespaces(self, query: dict[str, list[str]]) -> dict[str, Any]:
        labels, by_field = self._selectors(query, ("metadata.name", "status.phase"))
        with self._lock:
            keyed = []
            for ns in sorted(self._namespaces.values(), key=lambda n: n.name):
                values = {"metadata.name": ns.name, "status.phase": ns.phase}
                if all(r.matches(ns.labels) for r in labels) and all(
                    (values[n] == v) == eq for n, eq, v in by_field
                ):
                    keyed.append((ns.name, self._namespace_object(ns, typed=False)))
            version = self._resource_version
        items, meta = self._page(keyed, query, version)
        return {"kind": "NamespaceList", "apiVersion": "v1", "metadata": meta, "items": items}

    @staticmethod
    def _configmap_object(cm: _ConfigMap, *, typed: bool = True) -> dict[str, Any]:
        obj: dict[str, Any] = {"kind": "ConfigMap", "apiVersion": "v1"} if typed else {}
        metadata: dict[str, Any] = {
            "name": cm.name,
            "namespace": cm.namespace,
            "uid": cm.uid,
            "resourceVersion": str(cm.resource_version),
            "creationTimestamp": _rfc3339(cm.created),
        }
        if cm.labels:
            metadata["labels"] = dict(cm.labels)
        if cm.annotations:
            metadata["annotations"] = dict(cm.annotations)
        obj["metadata"] = metadata
        if cm.immutable is not None:
            obj["immutable"] = cm.immutable
        if cm.data:
            obj["data"] = dict(cm.data)
        if cm.binary_data:
            obj["binaryData"] = dict(cm.binary_data)
        return obj

    def _configmap_request(
        self, method: str, route: _Route, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        namespace, name = route.namespace, route.name
        if method == "GET" and name is None:
            return 200, self._list_configmaps(namespace, query)
        assert namespace is not None
        if method == "POST":
            return 201, self._create_configmap(namespace, self._decode_configmap(body, namespace, None))
        assert name is not None
        if method == "GET":
            with self._lock:
                cm = self._configmaps.get((namespace, name))
                if cm is None:
                    raise _not_found("configmaps", name)
                return 200, self._configmap_object(cm)
        if method == "PUT":
            replacement = self._decode_configmap(body, namespace, name)
            return 200, self._replace_configmap(namespace, name, replacement)
        return 200, self._delete_configmap(namespace, name, body)

    def _list_configmaps(self, namespace: str | None, query: dict[str, list[str]]) -> dict[str, Any]:
        labels, by_field = self._selectors(query, ("metadata.name", "metadata.namespace"))
        with self._lock:
            keyed = []
            for (ns, name), cm in sorted(self._configmaps.items()):
                values = {"metadata.name": name, "metadata.namespace": ns}
                if (
                    (namespace is None or ns == namespace)
                    and all(r.matches(cm.labels) for r in labels)
                    and all((values[n] == v) == eq for n, eq, v in by_field)
                ):
                    keyed.append((f"{ns}/{name}", self._configmap_object(cm, typed=False)))
            version = self._resource_version
        items, meta = self._page(keyed, query, version)
        return {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": meta, "items": items}

    @staticmethod
    def _decode_configmap(raw: bytes, namespace: str, url_name: str | None) -> _ConfigMap:
        """The request body as the API server decodes it (400 for what is not a v1 ConfigMap)."""
        prefix = 'ConfigMap in version "v1" cannot be handled as a ConfigMap: '

        def unmarshal(what: str, field_path: str, go_type: str) -> _Refusal:
            return _bad_request(
                f"{prefix}json: cannot unmarshal {what} into Go struct field {field_path} of type {go_type}"
            )

        def json_kind(value: Any) -> str:
            if isinstance(value, bool):
                return "bool"
            if isinstance(value, int | float):
                return "number"
            if isinstance(value, str):
                return "string"
            return "array" if isinstance(value, list) else "object"

        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad_request(f"couldn't get version/kind; json parse error: {exc}") from None
        if not isinstance(doc, dict):
            raise _bad_request(f"couldn't get version/kind; json parse error: cannot unmarshal "
                               f"{json_kind(doc)} into Go value of type struct")
        # Like the API server, a body without apiVersion/kind takes them from the endpoint.
        if doc.get("apiVersion", "v1") != "v1" or doc.get("kind", "ConfigMap") != "ConfigMap":
            raise _bad_request(
                f"{prefix}the object provided is unrecognized (kind {doc.get('kind')!r}, "
                f"apiVersion {doc.get('apiVersion')!r})"
            )
        meta = doc.get("metadata") or {}
        if not isinstance(meta, dict):
            raise unmarshal(json_kind(meta), "ConfigMap.metadata", "v1.ObjectMeta")

        def string_map(container: dict[str, Any], key: str, field_path: str) -> dict[str, str]:
            value = container.get(key)
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise unmarshal(json_kind(value), field_path, "map[string]string")
            for item in value.values():
                if not isinstance(item, str):
                    raise unmarshal(json_kind(item), field_path, "string")
            return dict(value)

        def string_field(key: str) -> str:
            value = meta.get(key)
            if value is None:
                return ""
            if not isinstance(value, str):
                raise unmarshal(json_kind(value), f"ObjectMeta.metadata.{key}", "string")
            return value

        labels = string_map(meta, "labels", "ObjectMeta.metadata.labels")
        annotations = string_map(meta, "annotations", "ObjectMeta.metadata.annotations")
        data = string_map(doc, "data", "ConfigMap.data")
        binary = string_map(doc, "binaryData", "ConfigMap.binaryData")
        for key, value in binary.items():
            try:
                base64.b64decode(value, validate=True)
            except (ValueError, binascii.Error):
                raise _bad_request(f"{prefix}illegal base64 data in binaryData[{key}]") from None
        immutable = doc.get("immutable")
        if immutable is not None and not isinstance(immutable, bool):
            raise unmarshal(json_kind(immutable), "ConfigMap.immutable", "bool")
        name, generate = string_field("name"), string_field("generateName")
        body_ns, uid = string_field("namespace"), string_field("uid")
        version = string_field("resourceVersion")
        if body_ns and body_ns != namespace:
            raise _bad_request("the namespace of the provided object does not match the namespace sent on "
                               "the request")
        if url_name is not None and name != url_name:
            raise _bad_request(
                f"the name of the object ({name}) does not match the name on the URL ({url_name})"
            )
        if not name and generate:
            name = generate + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        if version and not version.isdigit():
            raise _bad_request(
                f'invalid resource version: strconv.ParseUint: parsing "{version}": invalid syntax'
            )
        return _ConfigMap(
            namespace, name, uid, 0.0, int(version or 0), labels, annotations, data, binary, immutable
        )

    @staticmethod
    def _validate_configmap(cm: _ConfigMap) -> None:
        causes: list[tuple[str, str, str]] = []
        if not cm.name:
            required = "Required value: name or generateName is required"
            causes.append(("FieldValueRequired", "metadata.name", required))
        elif len(cm.name) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(cm.name):
            invalid = f'Invalid value: "{cm.name}": {_NAME_MESSAGE}'
            causes.append(("FieldValueInvalid", "metadata.name", invalid))
        for key, value in sorted(cm.labels.items()):
            causes += [("FieldValueInvalid", "metadata.labels", f'Invalid value: "{key}": {e}')
                       for e in _label_key_errors(key)]
            causes += [("FieldValueInvalid", "metadata.labels", f'Invalid value: "{value}": {e}')
                       for e in _label_value_errors(value)]
        size = 0
        for bag, other, keys in (("data", "binaryData", cm.data), ("binaryData", "data", cm.binary_data)):
            for key in sorted(keys):
                problems = []
                if len(key) > 253:
                    problems.append("must be no more than 253 characters")
                if not _CONFIG_KEY_RE.fullmatch(key):
                    problems.append(
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
                        "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
                        "'[-._a-zA-Z0-9]+')"
                    )
                if key in (".", ".."):
                    problems.append(f"must not be '{key}'")
                elif key.startswith(".."):
                    problems.append("must not start with '..'")
                if bag == "data" and key in cm.binary_data:
                    problems.append(f"duplicate of key present in {other}")
                causes += [
                    ("FieldValueInvalid", f"{bag}[{key}]", f'Invalid value: "{key}": {p}') for p in problems
                ]
        size += sum(len(v.encode()) for v in cm.data.values())
        size += sum(len(base64.b64decode(v)) for v in cm.binary_data.values())
        if size > _CONFIGMAP_MAX_BYTES:
            too_long = f"Too long: must have at most {_CONFIGMAP_MAX_BYTES} bytes"
            causes.append(("FieldValueTooLong", "", too_long))
        if causes:
            raise _invalid("ConfigMap", cm.name, causes)

    def _admit_write(self, namespace: str, name: str, *, create: bool) -> None:
        """The NamespaceLifecycle admission plugin (the caller holds the lock)."""
        ns = self._namespaces.get(namespace)
        if ns is None:
            raise _not_found("namespaces", namespace)
        if create and ns.phase == "Terminating":
            cause = {
                "reason": "NamespaceTerminating",
                "message": f"namespace {namespace} is being terminated",
                "field": "metadata.namespace",
            }
            message = (f'configmaps "{name}" is forbidden: unable to create new content in namespace '
                       f"{namespace} because it is being terminated")
            raise _Refusal(403, _status_body(403, message, details={
                "name": name, "kind": "configmaps", "causes": [cause],
            }))

    def _create_configmap(self, namespace: str, cm: _ConfigMap) -> dict[str, Any]:
        with self._lock:
            self._admit_write(namespace, cm.name, create=True)
            self._validate_configmap(cm)
            if (namespace, cm.name) in self._configmaps:
                message = f'configmaps "{cm.name}" already exists'
                raise _Refusal(409, _status_body(409, message, reason="AlreadyExists",
                                                 details={"name": cm.name, "kind": "configmaps"}))
            if cm.resource_version:
                cause = "resourceVersion should not be set on objects to be created"
                raise _Refusal(500, _status_body(500, f"Internal error occurred: {cause}",
                                                 details={"causes": [{"message": cause}]}))
            cm.uid, cm.created, cm.resource_version = str(uuid.uuid4()), self.clock(), self._bump()
            self._configmaps[(namespace, cm.name)] = cm
            return self._configmap_object(cm)

    def _replace_configmap(self, namespace: str, name: str, cm: _ConfigMap) -> dict[str, Any]:
        with self._lock:
            self._admit_write(namespace, name, create=False)
            old = self._configmaps.get((namespace, name))
            if old is None:
                raise _not_found("configmaps", name)
            # A resourceVersion makes the update conditional; without one it is unconditional.
            if cm.resource_version and cm.resource_version != old.resource_version:
                message = (
                    f'Operation cannot be fulfilled on configmaps "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again"
                )
                raise _Refusal(409, _status_body(409, message, details={"name": name, "kind": "configmaps"}))
            if not cm.uid:
                cm.uid = old.uid
            causes: list[tuple[str, str, str]] = []
            if cm.uid != old.uid:
                causes.append(("FieldValueInvalid", "metadata.uid",
                               f'Invalid value: "{cm.uid}": field is immutable'))
            if old.immutable:
                forbidden = "Forbidden: field is immutable when `immutable` is set"
                if not cm.immutable:
                    causes.append(("FieldValueForbidden", "immutable", forbidden))
                if cm.data != old.data:
                    causes.append(("FieldValueForbidden", "data", forbidden))
                if cm.binary_data != old.binary_data:
                    causes.append(("FieldValueForbidden", "binaryData", forbidden))
            if causes:
                raise _invalid("ConfigMap", name, causes)
            self._validate_configmap(cm)
            if cm.content() == old.content():
                return self._configmap_object(old)  # nothing changed: no write, same resourceVersion
            cm.created, cm.resource_version = old.created, self._bump()
            self._configmaps[(namespace, name)] = cm
            return self._configmap_object(cm)

    def _delete_configmap(self, namespace: str, name: str, raw: bytes) -> dict[str, Any]:
        options: Any = {}
        if raw.strip():
            try:
                options = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _bad_request(f"couldn't get version/kind; json parse error: {exc}") from None
        preconditions = (options.get("preconditions") if isinstance(options, dict) else None) or {}
        with self._lock:
            cm = self._configmaps.get((namespace, name))
            if cm is None:
                raise _not_found("configmaps", name)
            want_uid, want_version = preconditions.get("uid"), preconditions.get("resourceVersion")
            failed = None
            if want_uid is not None and want_uid != cm.uid:
                failed = f"UID in precondition: {want_uid}, UID in object meta: {cm.uid}"
            elif want_version is not None and want_version != str(cm.resource_version):
                failed = (f"ResourceVersion in precondition: {want_version}, "
                          f"ResourceVersion in object meta: {cm.resource_version}")
            if failed is not None:
                message = (
                    f'Operation cannot be fulfilled on configmaps "{name}": Precondition failed: {failed}'
                )
                raise _Refusal(409, _status_body(409, message, details={"name": name, "kind": "configmaps"}))
            del self._configmaps[(namespace, name)]
            self._bump()
        return {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "kind": "configmaps", "uid": cm.uid},
        }

    # ----------------------------------------------------------------- authorization policies (HTTP)

    def _get_authz(self, route: _Route, query: dict[str, list[str]]) -> dict[str, Any]:
        version, namespace = str(route.version), route.namespace
        if route.name is not None:
            with self._lock:
                policy = self._authz.get((str(namespace), route.name))
                if policy is None:
                    details = {"name": route.name, "group": AUTHZ_GROUP, "kind": AUTHZ_PLURAL}
                    raise _Refusal(404, _status_body(
                        404, f'{AUTHZ_PLURAL}.{AUTHZ_GROUP} "{route.name}" not found', details=details))
                return _authz_object(policy, version)
        labels, by_field = self._selectors(query, ("metadata.name", "metadata.namespace"))
        with self._lock:
            keyed = [
                (f"{p.namespace}/{p.name}", _authz_object(p, version))
                for p in sorted(self._authz.values(), key=lambda p: (p.namespace, p.name))
                if self._authz_selected(p, namespace, labels, by_field)
            ]
            current = self._resource_version
        items, meta = self._page(keyed, query, current)
        meta.setdefault("continue", "")
        return {"apiVersion": f"{AUTHZ_GROUP}/{version}", "items": items, "kind": f"{AUTHZ_KIND}List",
                "metadata": meta}

    @staticmethod
    def _authz_selected(policy: _AuthzPolicy, namespace: str | None, labels: list[_Requirement],
                        by_field: list[tuple[str, bool, str]]) -> bool:
        values = {"metadata.name": policy.name, "metadata.namespace": policy.namespace}
        return ((namespace is None or policy.namespace == namespace)
                and all(r.matches(policy.labels) for r in labels)
                and all((values[n] == v) == eq for n, eq, v in by_field))

    def _watch_authz(self, req: _Handler, route: _Route, query: dict[str, list[str]]) -> None:
        """A watch as the API server's watch cache serves one (see the module docstring)."""
        version, namespace = str(route.version), route.namespace
        try:
            labels, by_field = self._selectors(query, ("metadata.name", "metadata.namespace"))
            timeout = float((query.get("timeoutSeconds") or ["1800"])[0])
            raw_version = (query.get("resourceVersion") or [""])[0]
            since = int(raw_version) if raw_version not in ("", "0") else None
        except _Refusal as refusal:
            req.reply(refusal.code, refusal.body)
            return
        except ValueError as exc:
            req.reply(400, _status_body(400, f"invalid watch parameter: {exc}", details={}))
            return
        bookmarks = _flag(query, "allowWatchBookmarks")
        deadline = time.monotonic() + timeout
        req.send_response_only(200)
        req.send_header("Date", req.date_time_string())
        req.send_header("Audit-Id", str(uuid.uuid4()))
        req.send_header("Cache-Control", "no-cache, private")
        req.send_header("Content-Type", "application/json")
        req.send_header("Transfer-Encoding", "chunked")
        req.end_headers()

        def send(kind: str, obj: Mapping[str, Any]) -> None:
            line = json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"
            req.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            req.wfile.flush()

        def selected(policy: _AuthzPolicy) -> bool:
            return self._authz_selected(policy, namespace, labels, by_field)

        with self._lock:
            epoch, cursor = self._epoch, self._resource_version
            if since is None:  # "from any": the current state as ADDED, then changes
                pending = [("ADDED", _authz_object(p, version)) for _, p in sorted(self._authz.items())
                           if selected(p)]
            elif since < self._history_floor:
                self.expired_watches += 1
                message = f"too old resource version: {since} ({self._history_floor})"
                pending = [("ERROR", _status_body(410, message, reason="Expired"))]
                deadline = 0.0  # the cache's error watcher: one event, then the end
            else:
                cursor = since
                pending = []
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            for kind, obj in pending:
                send(kind, obj)
            now = time.monotonic()
            if now >= deadline:
                break
            if bookmarks and now >= next_bookmark:
                with self._lock:
                    mark = {"apiVersion": f"{AUTHZ_GROUP}/{version}", "kind": AUTHZ_KIND,
                            "metadata": {"resourceVersion": str(self._resource_version)}}
                send("BOOKMARK", mark)
                next_bookmark = now + self.bookmark_interval
            with self._lock:
                wake = min(deadline, next_bookmark if bookmarks else deadline) - time.monotonic()
                newer = [e for e in self._authz_history if e.policy.resource_version > cursor]
                if not newer and cursor >= self._history_floor and self._epoch == epoch and wake > 0:
                    self._changed.wait(wake)
                    newer = [e for e in self._authz_history if e.policy.resource_version > cursor]
                if self._epoch != epoch:  # the server went down: the stream breaks off, unterminated
                    req.close_connection = True
                    return
                if cursor < self._history_floor:
                    break  # this watch fell out of the window: the cache ends it
                pending = [(e.type, _authz_object(e.policy, version)) for e in newer if selected(e.policy)]
                cursor = max([cursor, *(e.policy.resource_version for e in newer)])
        req.wfile.write(b"0\r\n\r\n")
        req.wfile.flush()


def _flag(query: dict[str, list[str]], name: str) -> bool:
    """A boolean query parameter as the API server reads one (Go's strconv.ParseBool)."""
    return (query.get(name) or ["false"])[0] in ("1", "t", "T", "true", "TRUE", "True")
