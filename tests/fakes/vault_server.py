"""An in-test HTTPS Vault: exactly the endpoints meshca uses, with Vault's documented bodies.

KEPT ONLY FOR FAULTS. Every Vault feature meshca uses is tested against a real OpenBao server
(tests/vault/, `bao server -dev`). This imitation stays for what a real server cannot be made
to show on demand: a sealed answer mid-request, injected 429/5xx storms, slow or malformed
bodies, an unreachable server at start-up, and a clock that tests move to expire tokens
without sleeping. New tests of a Vault feature belong in tests/vault/, against `bao`.

Endpoints (all under /v1): sys/health; sys/mounts/<path> (enable transit, kv v2 or pki);
auth/token/lookup-self, renew-self, create; auth/<kubernetes>/login (role, jwt);
auth/<approle>/login (role_id, secret_id); <transit>/keys/<name> (create, read),
<transit>/keys/<name>/rotate, <transit>/sign/<name>[/<hash>]; <kv>/data/<path> (read with
?version, write with options.cas), <kv>/metadata/<path>; <pki>/root/generate/internal and
<pki>/root/sign-intermediate (Vault's PKI engine as meshca's upstream).

Error statuses as Vault gives them: 400 with `{"errors": [...]}` for bad requests and a stale
check-and-set; 403 `permission denied` for a missing, expired or under-privileged token; 404
`{"errors": []}` for a missing secret or key; 503 `Vault is sealed`; 429 (injected) with
Retry-After. Policies are path globs (`*` suffix, `+` segment) to capabilities, as in HCL.

The clock is injectable so tests can expire tokens without sleeping. The one endpoint that
is not Vault's, `GET /v1/_fake/transit-private/<mount>/<name>/<version>`, exists so tests
can search for a Transit private key where it must not be.

Run standalone (another process): `python -m tests.fakes.vault_server --root-token T`
prints one JSON line `{"addr": ..., "ca_cert": ...}` and serves until killed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime as dt
import json
import re
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

DEFAULT_POLICY = {
    "auth/token/lookup-self": {"read"},
    "auth/token/renew-self": {"update"},
    "auth/token/revoke-self": {"update"},
}
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha2-224": hashes.SHA224(), "sha2-256": hashes.SHA256(),
    "sha2-384": hashes.SHA384(), "sha2-512": hashes.SHA512(),
}
_KEY_TYPES: dict[str, Callable[[], ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]] = {
              "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
              "ecdsa-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
              "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
              "rsa-3072": lambda: rsa.generate_private_key(65537, 3072),
              "rsa-4096": lambda: rsa.generate_private_key(65537, 4096)}


class VaultHttpError(Exception):
    def __init__(self, status: int, errors: list[str], headers: dict[str, str] | None = None) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = errors
        self.headers = headers or {}


def _denied() -> VaultHttpError:
    return VaultHttpError(403, ["permission denied"])


@dataclass
class FakeToken:
    policies: list[str]
    ttl: float  # 0: never expires
    renewable: bool
    issued_at: float
    max_ttl: float = 0  # 0: unlimited
    expires_at: float | None = None

    def __post_init__(self) -> None:
        self.expires_at = self.issued_at + self.ttl if self.ttl else None


@dataclass
class TransitKey:
    type: str
    versions: dict[int, Any] = field(default_factory=dict)
    created: dict[int, str] = field(default_factory=dict)

    @property
    def latest(self) -> int:
        return max(self.versions)


@dataclass
class KvVersion:
    data: dict[str, Any]
    created_time: str


@dataclass(frozen=True)
class Injected:
    path_prefix: str
    status: int
    errors: list[str]
    headers: dict[str, str]


class FakeVault:
    """Vault's state and rules; `serve()` puts it behind HTTPS."""

    def __init__(self, *, clock: Callable[[], float] = time.time, root_token: str | None = None,
                 namespace: str | None = None) -> None:
        self.clock = clock
        self.namespace = namespace
        self.root_token = root_token or "hvs." + secrets.token_urlsafe(24)
        self.tokens: dict[str, FakeToken] = {self.root_token: FakeToken(["root"], 0, False, clock())}
        self.policies: dict[str, dict[str, set[str]]] = {"default": DEFAULT_POLICY}
        self.mounts: dict[str, str] = {"transit": "transit", "secret": "kv-v2"}
        self.transit: dict[tuple[str, str], TransitKey] = {}
        self.kv: dict[tuple[str, str], list[KvVersion]] = {}
        self.pki_roots: dict[str, tuple[ec.EllipticCurvePrivateKey, x509.Certificate]] = {}
        self.kube_roles: dict[str, tuple[set[str], list[str], float, float]] = {}
        self.approles: dict[str, tuple[str, list[str], float]] = {}
        self.sealed = False
        self.injected: list[tuple[Injected, list[int]]] = []
        self.requests: list[tuple[str, str]] = []  # (method, path): never bodies or headers
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self.addr = ""
        self.ca_cert = Path()

    # --- set-up helpers for tests -------------------------------------------------------------

    def add_policy(self, name: str, rules: dict[str, set[str]]) -> None:
        self.policies[name] = rules

    def issue_token(self, policies: list[str], *, ttl: float = 3600, renewable: bool = True,
                    max_ttl: float = 0) -> str:
        token = "hvs." + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = FakeToken(["default", *policies], ttl, renewable, self.clock(), max_ttl)
        return token

    def add_kubernetes_role(self, role: str, jwts: set[str], policies: list[str], *,
                            ttl: float = 3600, max_ttl: float = 0) -> None:
        self.kube_roles[role] = (jwts, policies, ttl, max_ttl)

    def add_approle(self, role_id: str, secret_id: str, policies: list[str], *, ttl: float = 3600) -> None:
        self.approles[role_id] = (secret_id, policies, ttl)

    def inject(self, path_prefix: str, status: int, errors: list[str], *, times: int = 1,
               headers: dict[str, str] | None = None) -> None:
        """The next `times` requests under `path_prefix` fail with `status`."""
        self.injected.append((Injected(path_prefix, status, errors, headers or {}), [times]))

    def private_key(self, mount: str, name: str, version: int = 1) -> Any:
        return self.transit[(mount, name)].versions[version]

    # --- HTTPS -------------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> FakeVault:
        self._tls_dir = tempfile.TemporaryDirectory(prefix="fake-vault-")
        context, ca_pem = _server_tls(Path(self._tls_dir.name), host)
        self.ca_cert = Path(self._tls_dir.name) / "ca.pem"
        self.ca_cert.write_bytes(ca_pem)
        vault = self

        class Handler(_Handler):
            fake = vault

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.addr = f"https://{host}:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, name="fake-vault", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None

    # --- request handling --------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str],
               body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(raw_path)
        if not parts.path.startswith("/v1/"):
            raise VaultHttpError(404, [])
        path = parts.path[len("/v1/"):].strip("/")
        query = parse_qs(parts.query)
        with self.lock:
            self.requests.append((method, path))
            for rule, left in self.injected:
                if left[0] > 0 and path.startswith(rule.path_prefix):
                    left[0] -= 1
                    raise VaultHttpError(rule.status, rule.errors, rule.headers)
            if path == "sys/health":
                return self._health()
            if path.startswith("_fake/"):
                return self._fake_export(path)
            if self.sealed:
                raise VaultHttpError(503, ["Vault is sealed"])
            if self.namespace is not None and headers.get("x-vault-namespace", "").strip("/") \
                    != self.namespace:
                raise VaultHttpError(404, [f"no handler for route \"{path}\". route entry not found."])
            if re.fullmatch(r"auth/[^/]+/login", path):
                return 200, self._login(path.split("/")[1], body), {}
            token = self._authorize(method, path, headers.get("x-vault-token", ""))
            return self._route(method, path, query, body, token)

    def _health(self) -> tuple[int, Any, dict[str, str]]:
        body = {"initialized": True, "sealed": self.sealed, "standby": False,
                "performance_standby": False, "replication_performance_mode": "disabled",
                "replication_dr_mode": "disabled", "server_time_utc": int(self.clock()),
                "version": "1.17.0+fake", "cluster_name": "vault-fake", "cluster_id": "fake"}
        return (503 if self.sealed else 200), body, {}

    def _fake_export(self, path: str) -> tuple[int, Any, dict[str, str]]:
        match = re.fullmatch(r"_fake/transit-private/(.+)/([^/]+)/(\d+)", path)
        if not match:
            raise VaultHttpError(404, [])
        key = self.private_key(match.group(1), match.group(2), int(match.group(3)))
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return 200, {"data": {"pkcs8_der": base64.b64encode(der).decode()}}, {}

    def _authorize(self, method: str, path: str, token_value: str) -> FakeToken:
        token = self.tokens.get(token_value)
        if token is None:
            raise _denied()
        if token.expires_at is not None and self.clock() >= token.expires_at:
            del self.tokens[token_value]
            raise _denied()
        if "root" in token.policies:
            return token
        needed = {"GET": {"read"}, "LIST": {"list"}, "DELETE": {"delete"}}.get(method, {"create", "update"})
        for name in token.policies:
            for pattern, capabilities in self.policies.get(name, {}).items():
                if _glob(pattern, path) and "deny" not in capabilities and capabilities & needed:
                    return token
        raise _denied()

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any],
               token: FakeToken) -> tuple[int, Any, dict[str, str]]:
        if path == "auth/token/lookup-self" and method == "GET":
            return 200, self._lookup_self(token), {}
        if path == "auth/token/renew-self" and method in ("POST", "PUT"):
            return 200, self._renew_self(token, body), {}
        if path == "auth/token/create" and method in ("POST", "PUT"):
            return 200, self._create_token(body), {}
        if path.startswith("sys/mounts/") and method in ("POST", "PUT"):
            return self._mount(path[len("sys/mounts/"):], body)
        if path.startswith("sys/mounts/") and method == "DELETE":
            self.mounts.pop(path[len("sys/mounts/"):], None)
            return 204, None, {}
        mount, kind, rest = self._mount_of(path)
        if kind == "transit":
            return self._transit(method, mount, rest, body)
        if kind == "kv-v2":
            return self._kv(method, mount, rest, query, body)
        if kind == "pki" and method in ("POST", "PUT"):
            return self._pki(mount, rest, body)
        raise VaultHttpError(404, [f"no handler for route \"{path}\". route entry not found."])

    def _mount_of(self, path: str) -> tuple[str, str, str]:
        for mount in sorted(self.mounts, key=len, reverse=True):
            if path.startswith(mount + "/"):
                return mount, self.mounts[mount], path[len(mount) + 1:]
        return "", "", path

    def _mount(self, mount: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        kind = body.get("type")
        version = str((body.get("options") or {}).get("version", "1"))
        if kind == "kv" and version == "2":
            kind = "kv-v2"
        if kind not in ("transit", "kv-v2", "pki"):
            raise VaultHttpError(400, [f"plugin not found in the catalog: {kind}"])
        if mount in self.mounts:
            raise VaultHttpError(400, [f"path is already in use at {mount}/"])
        self.mounts[mount] = str(kind)
        return 204, None, {}

    # --- auth --------------------------------------------------------------------------------

    def _auth_block(self, token_value: str, token: FakeToken, metadata: dict[str, str]) -> dict[str, Any]:
        return {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False, "lease_duration": 0,
                "data": None, "wrap_info": None, "warnings": None,
                "auth": {"client_token": token_value, "accessor": secrets.token_hex(12),
                         "policies": token.policies, "token_policies": token.policies,
                         "metadata": metadata, "lease_duration": int(token.ttl),
                         "renewable": token.renewable, "entity_id": "", "token_type": "service",
                         "orphan": True}}

    def _login(self, mount: str, body: dict[str, Any]) -> dict[str, Any]:
        if mount == "kubernetes":
            role = self.kube_roles.get(str(body.get("role")))
            if role is None:
                raise VaultHttpError(400, [f"invalid role name \"{body.get('role')}\""])
            jwts, policies, ttl, max_ttl = role
            if body.get("jwt") not in jwts:
                raise _denied()
            token = self.issue_token(policies, ttl=ttl, max_ttl=max_ttl)
            return self._auth_block(token, self.tokens[token], {"role": str(body.get("role"))})
        if mount == "approle":
            entry = self.approles.get(str(body.get("role_id")))
            if entry is None or body.get("secret_id") != entry[0]:
                raise VaultHttpError(400, ["invalid role or secret ID"])
            token = self.issue_token(entry[1], ttl=entry[2])
            return self._auth_block(token, self.tokens[token], {"role_name": "meshca"})
        raise VaultHttpError(404, [f"no handler for route \"auth/{mount}/login\". route entry not found."])

    def _lookup_self(self, token: FakeToken) -> dict[str, Any]:
        value = next(k for k, v in self.tokens.items() if v is token)
        now = self.clock()
        ttl = int(token.expires_at - now) if token.expires_at is not None else 0
        return {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False, "lease_duration": 0,
                "wrap_info": None, "warnings": None, "auth": None,
                "data": {"accessor": "fake", "creation_time": int(token.issued_at),
                         "creation_ttl": int(token.ttl), "display_name": "token", "entity_id": "",
                         "expire_time": _iso(token.expires_at) if token.expires_at else None,
                         "explicit_max_ttl": int(token.max_ttl), "id": value,
                         "issue_time": _iso(token.issued_at), "meta": None, "num_uses": 0,
                         "orphan": True, "path": "auth/token/create", "policies": token.policies,
                         "renewable": token.renewable, "ttl": ttl, "type": "service"}}

    def _renew_self(self, token: FakeToken, body: dict[str, Any]) -> dict[str, Any]:
        if not token.renewable:
            raise VaultHttpError(400, ["lease is not renewable"])
        value = next(k for k, v in self.tokens.items() if v is token)
        now = self.clock()
        ttl = _seconds(body.get("increment")) or token.ttl
        warnings = None
        if token.max_ttl:
            left = token.issued_at + token.max_ttl - now
            if ttl > left:
                ttl = max(left, 0)
                warnings = ["TTL of requested increment exceeded the effective max_ttl; "
                            "TTL value is capped accordingly"]
        token.expires_at = now + ttl
        block = self._auth_block(value, token, {})
        block["auth"]["lease_duration"] = int(ttl)
        block["warnings"] = warnings
        return block

    def _create_token(self, body: dict[str, Any]) -> dict[str, Any]:
        policies = [p for p in body.get("policies") or [] if p != "default"]
        ttl = _seconds(body.get("ttl")) or 3600
        token = self.issue_token(policies, ttl=ttl, renewable=body.get("renewable", True) is not False,
                                 max_ttl=_seconds(body.get("explicit_max_ttl")))
        return self._auth_block(token, self.tokens[token], {})

    # --- transit -----------------------------------------------------------------------------

    def _transit(self, method: str, mount: str, rest: str,
                 body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if match := re.fullmatch(r"keys/([^/]+)", rest):
            name = match.group(1)
            if method == "GET":
                key = self.transit.get((mount, name))
                if key is None:
                    raise VaultHttpError(404, [])
                return 200, {"data": _key_info(name, key)}, {}
            if method in ("POST", "PUT"):
                return 200, {"data": _key_info(name, self._create_key(mount, name, body))}, {}
        if (match := re.fullmatch(r"keys/([^/]+)/rotate", rest)) and method in ("POST", "PUT"):
            key = self._key(mount, match.group(1))
            version = key.latest + 1
            key.versions[version] = _KEY_TYPES[key.type]()
            key.created[version] = _iso(self.clock())
            return 200, {"data": _key_info(match.group(1), key)}, {}
        if (match := re.fullmatch(r"sign/([^/]+)(?:/([^/]+))?", rest)) and method in ("POST", "PUT"):
            return 200, {"data": self._sign(mount, match.group(1), match.group(2), body)}, {}
        raise VaultHttpError(405 if rest.startswith(("keys/", "sign/")) else 404, [])

    def _create_key(self, mount: str, name: str, body: dict[str, Any]) -> TransitKey:
        existing = self.transit.get((mount, name))
        if existing is not None:
            return existing  # Vault: writing an existing key's config does not replace it
        kind = str(body.get("type") or "aes256-gcm96")
        if kind not in _KEY_TYPES:
            raise VaultHttpError(400, [f"unknown key type {kind}"])
        if body.get("exportable"):
            raise VaultHttpError(400, ["this fake only makes non-exportable keys"])
        key = TransitKey(kind, {1: _KEY_TYPES[kind]()}, {1: _iso(self.clock())})
        self.transit[(mount, name)] = key
        return key

    def _key(self, mount: str, name: str) -> TransitKey:
        key = self.transit.get((mount, name))
        if key is None:
            raise VaultHttpError(400, ["signing key not found"])
        return key

    def _sign(self, mount: str, name: str, url_hash: str | None, body: dict[str, Any]) -> dict[str, Any]:
        key = self._key(mount, name)
        version = int(body.get("key_version") or key.latest)
        if version not in key.versions:
            raise VaultHttpError(400, ["requested version for signing does not exist"])
        hash_name = url_hash or str(body.get("hash_algorithm") or "sha2-256")
        algorithm = _HASHES.get(hash_name)
        if algorithm is None:
            raise VaultHttpError(400, [f"unsupported hash algorithm {hash_name}"])
        try:
            data = base64.b64decode(str(body.get("input", "")), validate=True)
        except binascii.Error:
            raise VaultHttpError(400, ["unable to decode input as base64"]) from None
        prehashed = body.get("prehashed") in (True, "true")
        if prehashed and len(data) != algorithm.digest_size:
            raise VaultHttpError(400, ["input is not a digest of the given hash algorithm"])
        digest = data if prehashed else _digest(algorithm, data)
        private = key.versions[version]
        if body.get("marshaling_algorithm", "asn1") != "asn1":
            raise VaultHttpError(400, ["this fake signs with marshaling_algorithm asn1 only"])
        if isinstance(private, ec.EllipticCurvePrivateKey):
            signature = private.sign(digest, ec.ECDSA(utils.Prehashed(algorithm)))
        else:
            scheme = str(body.get("signature_algorithm") or "pss")
            pad: padding.AsymmetricPadding = padding.PKCS1v15() if scheme == "pkcs1v15" else \
                padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
            signature = private.sign(digest, pad, utils.Prehashed(algorithm))
        return {"signature": f"vault:v{version}:{base64.b64encode(signature).decode()}",
                "key_version": version}

    # --- pki (as meshca's upstream) ----------------------------------------------------------

    def _pki(self, mount: str, rest: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if rest == "root/generate/internal":
            return 200, {"data": self._pki_root(mount, body)}, {}
        if rest == "root/sign-intermediate":
            return 200, {"data": self._pki_sign(mount, body)}, {}
        raise VaultHttpError(404, [f"no handler for route \"{mount}/{rest}\". route entry not found."])

    def _pki_root(self, mount: str, body: dict[str, Any]) -> dict[str, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(body.get("common_name") or ""))])
        ttl = _seconds(body.get("ttl")) or 86400 * 365
        cert = _ca_builder(name, name, key.public_key(), self.clock(), ttl).sign(key, hashes.SHA256())
        self.pki_roots[mount] = (key, cert)
        return _pki_answer(cert, cert)

    def _pki_sign(self, mount: str, body: dict[str, Any]) -> dict[str, Any]:
        if mount not in self.pki_roots:
            # OpenBao answers 500 here (tests/integration/test_vault_contract.py).
            raise VaultHttpError(500, ["1 error occurred:\n\t* could not fetch the CA certificate "
                                       "(was one set?): no default issuer currently configured\n\n"])
        try:
            csr = x509.load_pem_x509_csr(str(body.get("csr", "")).encode())
        except ValueError:
            raise VaultHttpError(400, ["certificate request could not be parsed"]) from None
        if not body.get("common_name"):
            raise VaultHttpError(400, ["the common_name field is required"])
        root_key, root = self.pki_roots[mount]
        subject = csr.subject if body.get("use_csr_values") in (True, "true") else x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, str(body["common_name"]))])
        public = csr.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        builder = _ca_builder(subject, root.subject, public, self.clock(),
                              _seconds(body.get("ttl")) or 86400 * 30).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        # As OpenBao does (found by tests/vault): with use_csr_values the CSR's SANs are kept
        # and a uri_sans parameter is ignored.
        if body.get("use_csr_values") in (True, "true"):
            try:
                uris = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
            except x509.ExtensionNotFound:
                uris = []
        else:
            uris = [x509.UniformResourceIdentifier(u)
                    for u in str(body.get("uri_sans") or "").split(",") if u]
        if uris:
            builder = builder.add_extension(x509.SubjectAlternativeName(uris), critical=False)
        return _pki_answer(builder.sign(root_key, hashes.SHA256()), root)

    # --- kv v2 -------------------------------------------------------------------------------

    def _kv(self, method: str, mount: str, rest: str, query: dict[str, list[str]],
            body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        section, _, path = rest.partition("/")
        versions = self.kv.get((mount, path))
        if section == "data" and method == "GET":
            if not versions:
                raise VaultHttpError(404, [])
            number = int(query.get("version", ["0"])[0]) or len(versions)
            if not 1 <= number <= len(versions):
                raise VaultHttpError(404, [])
            entry = versions[number - 1]
            return 200, {"data": {"data": entry.data, "metadata": _kv_version_meta(entry, number)}}, {}
        if section == "data" and method in ("POST", "PUT"):
            cas = (body.get("options") or {}).get("cas")
            current = len(versions or [])
            if cas is not None and int(cas) != current:
                raise VaultHttpError(400, ["check-and-set parameter did not match the current version"])
            if not isinstance(body.get("data"), dict):
                raise VaultHttpError(400, ["no data provided"])
            entry = KvVersion(dict(body["data"]), _iso(self.clock()))
            self.kv.setdefault((mount, path), []).append(entry)
            return 200, {"data": _kv_version_meta(entry, current + 1)}, {}
        if section == "metadata" and method == "GET":
            if not versions:
                raise VaultHttpError(404, [])
            return 200, {"data": {
                "cas_required": False, "created_time": versions[0].created_time,
                "current_version": len(versions), "custom_metadata": None, "delete_version_after": "0s",
                "max_versions": 0, "oldest_version": 0, "updated_time": versions[-1].created_time,
                "versions": {str(i + 1): {"created_time": v.created_time, "deletion_time": "",
                                          "destroyed": False} for i, v in enumerate(versions)}}}, {}
        raise VaultHttpError(405, [])


def _ca_builder(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
                now: float, ttl: float) -> x509.CertificateBuilder:
    start = dt.datetime.fromtimestamp(now, dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
            .serial_number(x509.random_serial_number()).not_valid_before(start - dt.timedelta(seconds=30))
            .not_valid_after(start + dt.timedelta(seconds=ttl))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))


def _pki_answer(cert: x509.Certificate, issuer: x509.Certificate) -> dict[str, Any]:
    issuer_pem = issuer.public_bytes(serialization.Encoding.PEM).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    # OpenBao's ca_chain for sign-intermediate starts with the new certificate itself.
    return {"certificate": cert_pem, "issuing_ca": issuer_pem, "ca_chain": [cert_pem, issuer_pem],
            "expiration": int(cert.not_valid_after_utc.timestamp()),
            "serial_number": f"{cert.serial_number:x}"}


def _kv_version_meta(entry: KvVersion, number: int) -> dict[str, Any]:
    return {"created_time": entry.created_time, "custom_metadata": None, "deletion_time": "",
            "destroyed": False, "version": number}


def _key_info(name: str, key: TransitKey) -> dict[str, Any]:
    keys = {}
    for version, private in key.versions.items():
        pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        curve = private.curve.name if isinstance(private, ec.EllipticCurvePrivateKey) else ""
        keys[str(version)] = {"creation_time": key.created[version], "public_key": pem,
                              "name": {"secp256r1": "P-256", "secp384r1": "P-384"}.get(curve, "rsa")}
    return {"name": name, "type": key.type, "exportable": False, "allow_plaintext_backup": False,
            "deletion_allowed": False, "derived": False, "keys": keys, "latest_version": key.latest,
            "min_available_version": 0, "min_decryption_version": 1, "min_encryption_version": 0,
            "supports_encryption": False, "supports_decryption": False, "supports_derivation": False,
            "supports_signing": True, "imported": False, "auto_rotate_period": 0}


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def _glob(pattern: str, path: str) -> bool:
    regex = "".join("[^/]+" if part == "+" else re.escape(part) for part in re.split(r"(\+)", pattern))
    regex = regex[:-2] + ".*" if pattern.endswith("*") else regex
    return re.fullmatch(regex, path) is not None


def _seconds(value: Any) -> float:
    if value is None or value == "":
        return 0
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"(\d+)([smhd]?)", str(value))
    if not match:
        raise VaultHttpError(400, [f"invalid duration {value}"])
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _iso(seconds: float | None) -> str:
    return dt.datetime.fromtimestamp(seconds or 0, dt.UTC).isoformat().replace("+00:00", "Z")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeVault
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: and request lines must not reach test logs with tokens anyway

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise VaultHttpError(400, ["error parsing JSON"])
            status, payload, extra = self.fake.handle(self.command, self.path, headers, body)
        except json.JSONDecodeError:
            status, payload, extra = 400, {"errors": ["error parsing JSON"]}, {}
        except VaultHttpError as exc:
            status, payload, extra = exc.status, {"errors": exc.errors}, exc.headers
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _dispatch  # noqa: N815


def _server_tls(directory: Path, host: str) -> tuple[ssl.SSLContext, bytes]:
    """A throwaway CA and a server certificate for `host` (an IP) and localhost."""
    import ipaddress

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake vault CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake vault")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address(host))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "server.pem", directory / "server-key.pem")
    return context, ca.public_bytes(serialization.Encoding.PEM)


@dataclass
class VaultTarget:
    """A Vault to run the contract tests against: this fake, or a real one (OpenBao)."""

    addr: str
    ca_cert: Path | None
    root_token: str = field(repr=False)
    transit_mount: str
    kv_mount: str
    fake: FakeVault | None

    @property
    def is_fake(self) -> bool:
        return self.fake is not None

    def client(self, token: str | None = None) -> Any:
        import hvac

        verify: str | bool = str(self.ca_cert) if self.ca_cert else True
        return hvac.Client(url=self.addr, token=token or self.root_token, verify=verify)


@contextlib.contextmanager
def vault_target(real: tuple[str, str, Path | None] | None = None) -> Iterator[VaultTarget]:
    """This fake, or a real Vault API server: `real` = (addr, root-ish token, CA file), e.g. the
    suite's OpenBao (tests/vault/bao.py).

    Against a real server, fresh transit and KV v2 mounts with random names are enabled for
    the run and disabled afterwards, so nothing else in that server is touched.
    """
    fake: FakeVault | None = None
    if real is not None:
        addr, token, ca_cert = real
    else:
        fake = FakeVault().serve()
        addr, token, ca_cert = fake.addr, fake.root_token, fake.ca_cert
    suffix = secrets.token_hex(4)
    target = VaultTarget(addr=addr, ca_cert=ca_cert, root_token=token,
                         transit_mount=f"meshca-test-transit-{suffix}",
                         kv_mount=f"meshca-test-kv-{suffix}", fake=fake)
    client = target.client()
    client.sys.enable_secrets_engine(backend_type="transit", path=target.transit_mount)
    client.sys.enable_secrets_engine(backend_type="kv", path=target.kv_mount, options={"version": "2"})
    try:
        yield target
    finally:
        if fake is not None:
            fake.stop()
        else:
            for mount in (target.transit_mount, target.kv_mount):
                with contextlib.suppress(Exception):
                    client.sys.disable_secrets_engine(path=mount)


def main() -> None:
    parser = argparse.ArgumentParser(description="fake Vault for meshca's tests")
    parser.add_argument("--root-token", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    fake = FakeVault(root_token=args.root_token).serve(port=args.port)
    print(json.dumps({"addr": fake.addr, "ca_cert": str(fake.ca_cert)}), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
